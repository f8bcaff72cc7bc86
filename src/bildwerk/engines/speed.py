"""How the local engine runs its networks fast: the speed switches, applied once at load.

Every switch is a setting (``SpeedSettings``, read from ``BILDWERK_*`` variables), made
concrete for the model's device (``resolve``) and applied to a loaded model (``apply_speed``):

* ``channels_last``: UNet and VAE weights in NHWC, as cuDNN's fastest convolutions want them;
* ``fuse_qkv``: one projection for query, key and value (diffusers' fused processors);
* ``attention``: the SDPA backend (flash, memory-efficient, cuDNN, math), or PyTorch's choice;
* ``compile``: ``torch.compile`` of the UNet (and the VAE decoder), its batch dimension marked
  dynamic so one compilation serves every batch size, compiled calls padded to row buckets so
  CUDA graphs (``compile_mode=reduce-overhead``) are recorded for a few shapes only, and
  inductor's cache kept under ``$BILDWERK_HOME/cache`` so a restart does not compile again;
* ``exact_batching``: the batch-invariance patches (engines/invariance.py). They make a batched
  picture bit-identical to its lone run on the CPU, where that is proved; on CUDA cuBLAS and
  cuDNN choose kernels by shape anyway, so they cost speed and buy nothing: off by default;
* ``vae_batch`` / ``vae_tile_above``: how many pictures one VAE decode takes, and from which
  size on it decodes in tiles (engines/decode.py);
* ``preview``: progress previews by a linear latent-to-RGB map (engines/preview.py) or a decode.

On the CPU the defaults are today's measured behaviour (fp32, eager, exact batching); on CUDA
the switches that paid in bench/gpu_speed.py are on. Jobs with LoRAs or ControlNets run the
eager UNet: their layers change per request, which a compiled graph would have to retrace.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.paths import bildwerk_home

ATTENTION_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
COMPILE_TARGETS = ("off", "unet", "unet+vae")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
DEFAULT_ROW_BUCKETS = (2, 4, 8, 12, 16, 24, 32, 48, 64)
# Compiled graphs kept per function: one per (resolution, LoRA-free network) is the common case;
# dynamo's default of 8 would fall back to eager after eight picture sizes.
COMPILE_CACHE_LIMIT = 64

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class SpeedSettings:
    """What the operator asked for; None / "auto" is decided per device by ``resolve``."""

    channels_last: bool | None = None
    fuse_qkv: bool | None = None
    attention: str = "auto"
    compile: str = "off"
    compile_mode: str = "default"
    compile_sizes: tuple[tuple[int, int], ...] = ()
    row_buckets: tuple[int, ...] = DEFAULT_ROW_BUCKETS
    exact_batching: bool | None = None
    vae_batch: int | None = None
    vae_tile_above: int | None = None  # pixels (width x height); 0 = never tile
    preview: str = "approx"
    compile_cache: Path | None = None

    def __post_init__(self) -> None:
        _choice("attention", self.attention, ATTENTION_BACKENDS)
        _choice("compile", self.compile, COMPILE_TARGETS)
        _choice("compile mode", self.compile_mode, COMPILE_MODES)
        _choice("preview", self.preview, ("approx", "vae"))
        if not self.row_buckets or any(b < 1 for b in self.row_buckets):
            raise InvalidRequestError("row buckets must be positive numbers of rows, e.g. 2,4,8,16,32")
        if self.vae_batch is not None and self.vae_batch < 1:
            raise InvalidRequestError("vae batch must be at least 1")
        if self.vae_tile_above is not None and self.vae_tile_above < 0:
            raise InvalidRequestError("vae tile threshold must be 0 (never) or a number of pixels")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SpeedSettings:
        """The settings in ``BILDWERK_CHANNELS_LAST``, ``BILDWERK_FUSE_QKV``, ``BILDWERK_ATTENTION``,
        ``BILDWERK_COMPILE``, ``BILDWERK_COMPILE_MODE``, ``BILDWERK_COMPILE_SIZES``,
        ``BILDWERK_ROW_BUCKETS``, ``BILDWERK_EXACT_BATCHING``, ``BILDWERK_VAE_BATCH``,
        ``BILDWERK_VAE_TILE_ABOVE``, ``BILDWERK_PREVIEW`` and ``BILDWERK_COMPILE_CACHE``."""
        env = os.environ if env is None else env
        kw: dict[str, Any] = {}
        for name, key in (("channels_last", "BILDWERK_CHANNELS_LAST"), ("fuse_qkv", "BILDWERK_FUSE_QKV"),
                          ("exact_batching", "BILDWERK_EXACT_BATCHING")):
            if env.get(key, "auto").strip().lower() != "auto":
                kw[name] = _flag(key, env[key])
        for name, key, allowed in (("attention", "BILDWERK_ATTENTION", ATTENTION_BACKENDS),
                                   ("compile", "BILDWERK_COMPILE", COMPILE_TARGETS),
                                   ("compile_mode", "BILDWERK_COMPILE_MODE", COMPILE_MODES),
                                   ("preview", "BILDWERK_PREVIEW", ("approx", "vae"))):
            if env.get(key):
                kw[name] = env[key].strip().lower()
                _choice(key, kw[name], allowed)
        if env.get("BILDWERK_COMPILE_SIZES"):
            kw["compile_sizes"] = parse_sizes(env["BILDWERK_COMPILE_SIZES"], "BILDWERK_COMPILE_SIZES")
        if env.get("BILDWERK_ROW_BUCKETS"):
            kw["row_buckets"] = _ints(env["BILDWERK_ROW_BUCKETS"], "BILDWERK_ROW_BUCKETS")
        for name, key in (("vae_batch", "BILDWERK_VAE_BATCH"), ("vae_tile_above", "BILDWERK_VAE_TILE_ABOVE")):
            if env.get(key, "auto").strip().lower() != "auto":
                kw[name] = _ints(env[key], key)[0]
        if env.get("BILDWERK_COMPILE_CACHE"):
            kw["compile_cache"] = Path(env["BILDWERK_COMPILE_CACHE"]).expanduser()
        try:
            return cls(**kw)
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"speed settings from the environment: {exc}") from None

    def resolve(self, device: torch.device) -> ResolvedSpeed:
        cuda = device.type == "cuda"
        return ResolvedSpeed(
            channels_last=cuda if self.channels_last is None else self.channels_last,
            fuse_qkv=cuda if self.fuse_qkv is None else self.fuse_qkv,
            attention=self.attention,
            compile=self.compile,
            compile_mode=self.compile_mode,
            compile_sizes=self.compile_sizes,
            row_buckets=tuple(sorted(set(self.row_buckets))),
            exact_batching=(device.type == "cpu") if self.exact_batching is None else self.exact_batching,
            vae_batch=(1 if device.type == "cpu" else 8) if self.vae_batch is None else self.vae_batch,
            vae_tile_above=(0 if device.type == "cpu" else 2048 * 2048) if self.vae_tile_above is None
            else self.vae_tile_above,
            preview=self.preview,
            compile_cache=self.compile_cache or bildwerk_home() / "cache" / "torch-compile",
        )


@dataclass(frozen=True)
class ResolvedSpeed:
    """Every switch concrete, for one device: what the engine does, and what records say."""

    channels_last: bool
    fuse_qkv: bool
    attention: str
    compile: str
    compile_mode: str
    compile_sizes: tuple[tuple[int, int], ...]
    row_buckets: tuple[int, ...]
    exact_batching: bool
    vae_batch: int
    vae_tile_above: int
    preview: str
    compile_cache: Path

    @property
    def compiled(self) -> bool:
        return self.compile != "off"

    @property
    def cuda_graphs(self) -> bool:
        return self.compiled and self.compile_mode in ("reduce-overhead", "max-autotune")

    def summary(self) -> dict[str, Any]:
        """What changes the numbers (for a picture's record): the rest only changes the time."""
        return {"exact_batching": self.exact_batching, "compile": self.compile, "fuse_qkv": self.fuse_qkv,
                "channels_last": self.channels_last, "attention": self.attention}

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["compile_sizes"] = [f"{w}x{h}" for w, h in self.compile_sizes]
        out["row_buckets"] = list(self.row_buckets)
        out["compile_cache"] = str(self.compile_cache)
        return out


def _choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidRequestError(f"{what} {value!r} is not one of {', '.join(allowed)}")


def _flag(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise InvalidRequestError(f"{key}={value!r}: use 1 or 0 (or auto)")


def _ints(text: str, key: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.replace(" ", "").split(",") if p)
    except ValueError:
        raise InvalidRequestError(f"{key}={text!r}: expected whole numbers separated by commas") from None


def parse_sizes(text: str, key: str = "compile sizes") -> tuple[tuple[int, int], ...]:
    """``"512x512,1024x768"`` -> ((512, 512), (1024, 768)); a bad item fails in one line."""
    sizes = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        w, sep, h = part.lower().partition("x")
        if not sep or not w.isdigit() or not h.isdigit() or int(w) < 8 or int(h) < 8:
            raise InvalidRequestError(f"{key}: {part!r} is not a size like 512x512")
        sizes.append((int(w), int(h)))
    return tuple(sizes)


# -- at load ----------------------------------------------------------------------------------
SPEED, COMPILED_UNET, QKV_FUSED = "speed", "compiled_unet", "qkv_fused"


def apply_speed(model: Any, speed: ResolvedSpeed) -> None:
    """Apply the load-time switches to a ready model (a LoadedModel) and remember them in
    ``model.extras``. Weights and their meaning are unchanged."""
    from bildwerk.engines.invariance import make_batch_invariant

    model.extras[SPEED] = speed
    unet, vae = model.pipe.unet, model.pipe.vae
    if speed.fuse_qkv:
        model.extras[QKV_FUSED] = _fuse(unet) | _fuse(vae)
    if speed.channels_last:
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    if speed.exact_batching:
        make_batch_invariant(unet)
    if speed.compiled:
        _use_compile_cache(speed.compile_cache)
        model.extras[COMPILED_UNET] = torch.compile(unet, mode=_mode(speed), dynamic=None)
        if speed.compile == "unet+vae":
            vae.decoder = torch.compile(vae.decoder, mode=_mode(speed), dynamic=None)


def _fuse(network: torch.nn.Module) -> bool:
    fuse = getattr(network, "fuse_qkv_projections", None)
    if fuse is None:
        return False
    try:
        with torch.no_grad():
            fuse()
    except ValueError:  # "not supported for models having added KV projections"
        return False
    return True


def unfuse_qkv(model: Any) -> bool:
    """Back to separate query/key/value projections (a LoRA adapts ``to_q``/``to_k``/``to_v``,
    which the fused processors do not read). For good: returns whether it was fused."""
    if not model.extras.get(QKV_FUSED):
        return False
    for network in (model.pipe.unet, model.pipe.vae):
        unfuse = getattr(network, "unfuse_qkv_projections", None)
        if unfuse is not None:
            unfuse()
    model.extras[QKV_FUSED] = False
    return True


def _mode(speed: ResolvedSpeed) -> str | None:
    return None if speed.compile_mode == "default" else speed.compile_mode


def _use_compile_cache(folder: Path) -> None:
    """Inductor's on-disk caches (FX graphs, autotuning, Triton kernels) in one folder that
    outlives the process, unless the operator pointed them elsewhere already."""
    import torch._dynamo

    folder.mkdir(parents=True, exist_ok=True)
    # Inductor writes its default (a temp folder) into the variable the first time it asks, often
    # at import: that value is no operator's choice and is replaced; any other value is kept.
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(_inductor_default()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, COMPILE_CACHE_LIMIT)


def _inductor_default() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # another torch layout: its default is a per-user temp folder, as here
        import getpass
        import tempfile

        return os.path.join(tempfile.gettempdir(), f"torchinductor_{getpass.getuser()}")
    return default_cache_dir()


# -- per UNet call ----------------------------------------------------------------------------
def speed_of(model: Any) -> ResolvedSpeed | None:
    return model.extras.get(SPEED)


def bucket_rows(rows: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds ``rows`` (rows beyond the largest bucket: as they are)."""
    for b in buckets:
        if b >= rows:
            return b
    return rows


@dataclass
class UNetCall:
    """The network one step calls and how: the compiled UNet for plain jobs, padded to a row
    bucket; the eager one for jobs with LoRAs or ControlNets; always at least two rows (a
    one-row call takes another kernel path, engines/invariance.py)."""

    network: Callable[..., Any]
    pad_to: Callable[[int], int] = field(default=lambda rows: max(rows, 2))
    attention: str = "auto"
    mark_dynamic: bool = False
    cuda_graphs: bool = False

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        with attention_backend(self.attention):
            if self.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            yield


def unet_call(model: Any, *, plain: bool) -> UNetCall:
    speed = speed_of(model)
    if speed is None:
        return UNetCall(model.pipe.unet)
    compiled = model.extras.get(COMPILED_UNET)
    if plain and compiled is not None:
        buckets = speed.row_buckets
        return UNetCall(compiled, pad_to=lambda rows: max(bucket_rows(rows, buckets), 2),
                        attention=speed.attention, mark_dynamic=True, cuda_graphs=speed.cuda_graphs)
    return UNetCall(model.pipe.unet, attention=speed.attention)


def attention_backend(name: str) -> contextlib.AbstractContextManager[Any]:
    """The SDPA kernel every attention call inside uses; "auto": PyTorch picks per call."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]
    return sdpa_kernel([backend])


def mark_batch_dynamic(*tensors: torch.Tensor | None) -> None:
    """Tell dynamo the first dimension varies, so a new batch size reuses the compiled graph."""
    import torch._dynamo

    for t in tensors:
        if t is not None and t.dim() > 0:
            torch._dynamo.maybe_mark_dynamic(t, 0)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn`` takes, the device's queue drained before and after (for warm-up times)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def keep_exact(model: Any, network: torch.nn.Module) -> None:
    """Make ``network`` (the UNet after a LoRA's layers came, a ControlNet) batch-invariant where
    the model runs with exact batching; a model loaded without speed settings counts as exact."""
    from bildwerk.engines.invariance import make_batch_invariant

    speed = speed_of(model)
    if speed is None or speed.exact_batching:
        make_batch_invariant(network)


def warm_up(engine: Any, model: Any, source: Any = None) -> dict[str, float]:
    """With compilation on: one short generation per configured size (the model's native size
    when none is), so compiling (and recording CUDA graphs: three calls per shape) happens at
    load, not in a user's job. Returns seconds per size, also kept in ``extras["compile_seconds"]``."""
    speed = speed_of(model)
    if speed is None or not speed.compiled:
        return {}
    from bildwerk.core.request import GenerationRequest

    sizes = speed.compile_sizes or ((model.native_size, model.native_size),)
    seconds: dict[str, float] = model.extras.setdefault("compile_seconds", {})
    for w, h in sizes:
        request = GenerationRequest(prompt="warm-up", steps=3, width=w, height=h, seed=0)

        def run(request: GenerationRequest = request) -> None:
            job = engine.prepare(request, source=source)
            while not job.done:
                engine.step([job])
            engine.finish(job)

        seconds[f"{w}x{h}"] = timed(run)
    return seconds
