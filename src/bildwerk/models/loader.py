"""Resolve a model reference and load it once, safely.

A reference is, in this order: unset (the default model), a local diffusers
folder or single-file ``.safetensors`` checkpoint, a name under
``$BILDWERK_HOME/models``, the name of a checkpoint in the models folder or a
registered A1111/ComfyUI folder (``models/assets.py``), or a Hugging Face Hub
id. Hub ids are fetched with diffusers' own downloader (safetensors only) when
the machine is online; offline, the error names the model and how to provide it.
Single files are loaded in place through diffusers' single-file loading
(``models/single_file.py``).
"""

from __future__ import annotations

import gc
import json
import os
import re
import textwrap
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from bildwerk.core.errors import BildwerkError, ModelNotFoundError, UnsupportedModelError
from bildwerk.core.paths import PACKAGE_DATA, bildwerk_home  # noqa: F401 (re-exported)
from bildwerk.core.refs import is_remote_model
from bildwerk.models.devices import apply_threads, choose_device, choose_dtype
from bildwerk.models.safety import check_model_folder

Family = Literal["sd", "sdxl", "sentence"]

# bildwerk's own models carry this file: which text encoder conditions them, and more.
BILDWERK_CONFIG = "bildwerk.json"

# The embedded default model ships inside the package (see docs/default-model.md).
EMBEDDED_DEFAULT = PACKAGE_DATA / "models" / "default"
# Names the installed model that "default" means (before the embedded one); BILDWERK_MODEL wins.
DEFAULT_CHOICE_FILE = "default-model"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelSource:
    ref: str  # what the user asked for (or "default")
    path: Path | None  # local folder, when there is one
    hub_id: str | None = None


def resolve_model(ref: str | None | ModelSource) -> ModelSource:
    """Turn a user's model reference into a local folder or a hub id, or fail clearly.
    An already resolved ``ModelSource`` comes back as it is (resolve once, pass it on)."""
    if isinstance(ref, ModelSource):
        return ref
    if ref is None or ref in ("", "default"):
        env = os.environ.get("BILDWERK_MODEL")
        if env:
            return resolve_model(env)
        chosen = chosen_default()
        if chosen is not None:
            named = models_dir() / chosen
            if not (named / "model_index.json").is_file():
                single = _checkpoint_asset(chosen)
                if single is not None:
                    return ModelSource("default", single.resolve())
                raise ModelNotFoundError(
                    f"the default model {chosen!r} (chosen with `bildwerk models add --default`) is not in "
                    f"{models_dir()} any more; install it again, or delete {DEFAULT_CHOICE_FILE} in "
                    f"{bildwerk_home()} to use the embedded default")
            return ModelSource("default", named.resolve())
        if (EMBEDDED_DEFAULT / "model_index.json").is_file():
            return ModelSource("default", EMBEDDED_DEFAULT)
        raise ModelNotFoundError(
            "no model given and no default model is installed; pass --model PATH "
            "(a diffusers folder) or set BILDWERK_MODEL"
        )
    try:
        return _resolve_named(ref)
    except (OSError, ValueError) as exc:  # a name the file system cannot look up (too long, NUL)
        shown = repr(ref[:80]) + ("..." if len(ref) > 80 else "")
        reason = getattr(exc, "strerror", None) or "not a valid file name"
        raise ModelNotFoundError(f"model reference {shown} is not a usable name or folder ({reason})") from None


def _resolve_named(ref: str) -> ModelSource:
    p = Path(ref).expanduser()
    if p.is_dir():
        if not (p / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"{p} is not a diffusers model folder (no model_index.json). "
                "Save a pipeline with save_pretrained(), or download one with "
                f"`{_HUB_DOWNLOAD.format(id='ORG/NAME')}`."
            )
        return ModelSource(ref, p.resolve())
    if p.is_file():
        from bildwerk.models.single_file import check_checkpoint

        check_checkpoint(p)  # a pickle, a truncated file, a LoRA: refused now, from the header alone
        return ModelSource(ref, p.resolve())
    named = models_dir() / ref
    if (named / "model_index.json").is_file():
        return ModelSource(ref, named.resolve())
    single = _checkpoint_asset(ref)
    if single is not None:
        if single.is_file():
            from bildwerk.models.single_file import check_checkpoint

            check_checkpoint(single)
        return ModelSource(ref, single.resolve())
    if _HUB_ID.match(ref):
        return ModelSource(ref, None, hub_id=ref)
    raise ModelNotFoundError(
        f"model {ref!r} not found: it is no folder, no model under {models_dir()}, "
        "and no Hugging Face Hub id (ORG/NAME)"
    )


def _checkpoint_asset(name: str) -> Path | None:
    """The checkpoint called ``name`` in the models folder or a registered A1111/ComfyUI folder
    (a single file, or a diffusers folder there); None when there is none. A pickle of that
    name is refused here, with why."""
    from bildwerk.models.assets import AssetNotFoundError, find_asset, unsafe_files

    try:
        asset = find_asset("checkpoint", name)
    except AssetNotFoundError:
        if any(p.stem.lower() == name.lower() for p in unsafe_files("checkpoint")):
            raise  # "... is a pickle file, which bildwerk never loads ..."
        return None
    if asset.is_folder and not (asset.path / "model_index.json").is_file():
        return None  # a single component's folder, not a pipeline
    return asset.path


def checkpoint_names() -> list[str]:
    """The single-file checkpoints (and pipeline folders) of the models folder and registered
    sources, by the names clients may use."""
    from bildwerk.models.assets import list_assets

    return [a.name for a in list_assets("checkpoint")
            if not a.is_folder or (a.path / "model_index.json").is_file()]


def models_dir() -> Path:
    """Where models are installed by name (``bildwerk models add``): ``$BILDWERK_HOME/models``."""
    return bildwerk_home() / "models"


def chosen_default() -> str | None:
    """The installed model chosen as the default (``bildwerk models add --default``), if any."""
    f = bildwerk_home() / DEFAULT_CHOICE_FILE
    try:
        name = f.read_text("utf-8").strip()
    except OSError:
        return None
    return name or None


def local_model_names() -> list[str]:
    """"default" and the models installed under ``$BILDWERK_HOME/models``."""
    folder = models_dir()
    return ["default"] + sorted(p.name for p in folder.glob("*") if (p / "model_index.json").is_file())


def _folder_config(ref: str | None | ModelSource) -> dict[str, Any]:
    """A local model's bildwerk.json, read without loading weights; {} for hub or unknown refs."""
    try:
        source = resolve_model(ref)
    except ModelNotFoundError:
        return {}
    return read_bildwerk_config(source.path) if source.path is not None else {}


def _guidance_from_config(config: dict[str, Any]) -> float:
    value = config.get("defaults", {}).get("guidance")
    return float(value) if value is not None else 7.5


def model_languages(ref: str | None | ModelSource) -> tuple[str, ...] | None:
    """The languages a model reads prompts in, told from its folder without loading weights;
    None = any language. Remote OpenAI image models and bildwerk's sentence-encoder (usem3)
    models read any language. A model trained on captions in other languages records them
    (bildwerk.json ``languages``, written by ``bildwerk train``); every other model (hub and
    CLIP models) reads English."""
    if is_remote_model(ref):
        return None
    config = _folder_config(ref)
    if config.get("conditioning", {}).get("type") == "usem3":
        return None  # the multilingual encoder, whatever the captions were
    listed = config.get("languages")
    if isinstance(listed, list) and listed and all(isinstance(c, str) for c in listed):
        return tuple(c.lower() for c in listed)
    return ("en",)


def vae_scale_factor(block_out_channels: Any) -> int:
    return 2 ** (len(block_out_channels) - 1)


def _native_size(sample_size: Any, block_out_channels: Any) -> int:
    """UNet latent size x VAE factor: the pixel size a model was trained at."""
    if isinstance(sample_size, list | tuple):
        sample_size = sample_size[0]
    return int(sample_size) * vae_scale_factor(block_out_channels)


def native_size_of(ref: str | None | ModelSource) -> int | None:
    """A local model's working size from its folder's UNet and VAE configs, without loading
    weights; None for hub models not on this machine or folders without those configs."""
    try:
        source = resolve_model(ref)
    except ModelNotFoundError:
        return None
    if source.path is None:
        return None
    if source.path.is_file():
        from bildwerk.models.single_file import (
            check_checkpoint,
            find_configs,
            native_size,
            prediction_type,
        )

        try:
            ckpt = check_checkpoint(source.path)
        except BildwerkError:
            return None
        try:  # what its configs say, as for a folder; else its family's size
            configs = find_configs(ckpt)
            unet = json.loads((configs / "unet" / "config.json").read_text("utf-8"))
            vae = json.loads((configs / "vae" / "config.json").read_text("utf-8"))
            return _native_size(unet["sample_size"], vae["block_out_channels"])
        except (BildwerkError, OSError, ValueError, KeyError, TypeError):
            try:
                return native_size(ckpt, prediction_type(ckpt)[0])
            except BildwerkError:
                return None
    try:
        unet = json.loads((source.path / "unet" / "config.json").read_text("utf-8"))
        vae = json.loads((source.path / "vae" / "config.json").read_text("utf-8"))
        return _native_size(unet["sample_size"], vae["block_out_channels"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recommended_guidance(ref: str | None | ModelSource) -> float:
    """The guidance a model's card recommends (bildwerk.json), else Stable Diffusion's 7.5;
    read from the folder without loading weights."""
    return _guidance_from_config(_folder_config(ref))


def download_hub_model(hub_id: str) -> Path:
    """Fetch a hub model's safetensors and configs into the HF cache; clear error when offline."""
    from diffusers import DiffusionPipeline

    try:
        return Path(DiffusionPipeline.download(hub_id, use_safetensors=True))
    except Exception as exc:  # noqa: BLE001 - many transport/offline errors, one message
        raise ModelNotFoundError(_hub_failure(hub_id, exc)) from exc


# `hf` is huggingface_hub's own command line (a dependency); safetensors only, as we load them.
_HUB_DOWNLOAD = "hf download {id} --exclude '*.bin' --exclude '*.ckpt' --local-dir FOLDER"


def _hub_failure(hub_id: str, exc: BaseException) -> str:
    """Why a hub model could not be fetched, and what to do, in one line."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    chain = []
    while exc is not None and len(chain) < 10:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    get = f"`{_HUB_DOWNLOAD.format(id=hub_id)}`, copy FOLDER here and pass --model FOLDER"
    if any(isinstance(e, GatedRepoError) for e in chain):
        return (f"model {hub_id!r} is gated on the Hugging Face Hub: accept its licence on its page, "
                f"then `hf auth login` (or set HF_TOKEN) and try again, or download it with {get}")
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return (f"model {hub_id!r} does not exist on the Hugging Face Hub (or is private: set HF_TOKEN); "
                "check the ORG/NAME, or pass --model FOLDER for a model on this machine")
    deepest = next((str(e).splitlines()[0] for e in reversed(chain) if str(e).strip()), type(chain[0]).__name__)
    reason = textwrap.shorten(deepest, 120, placeholder=" ...")  # whole words, never cut mid-word
    if constants.HF_HUB_OFFLINE:
        return (f"model {hub_id!r} is not on this machine and HF_HUB_OFFLINE is set, so the Hugging Face "
                f"Hub is not asked; download it where there is internet with {get}")
    if any(isinstance(e, (ConnectionError, TimeoutError)) or "Connect" in type(e).__name__
           or "Timeout" in type(e).__name__ for e in chain):
        return (f"model {hub_id!r} is not on this machine and the Hugging Face Hub cannot be reached "
                f"({reason}); download it where there is internet with {get}, or set HF_HUB_OFFLINE=1 "
                "on a machine without internet to skip the hub")
    return f"could not fetch model {hub_id!r} from the Hugging Face Hub ({reason}); try again, or download it with {get}"


@dataclass
class LoadedModel:
    """One set of components, shared by text-to-image, image-to-image and inpainting."""

    source: ModelSource
    pipe: Any
    family: Family
    device: torch.device
    dtype: torch.dtype
    name: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def unet(self):
        return self.pipe.unet

    @property
    def vae(self):
        return self.pipe.vae

    @property
    def unet_in_channels(self) -> int:
        return int(self.pipe.unet.config.in_channels)

    @property
    def vae_scale_factor(self) -> int:
        return vae_scale_factor(self.pipe.vae.config.block_out_channels)

    @property
    def native_size(self) -> int:
        """The model's working size: 512 for SD 1.x, 768 for SD 2.x-v, 1024 for SDXL, ..."""
        return _native_size(self.pipe.unet.config.sample_size, self.pipe.vae.config.block_out_channels)

    @property
    def default_guidance(self) -> float:
        """The guidance the model's card recommends (bildwerk.json), else Stable Diffusion's 7.5."""
        return _guidance_from_config(self.extras.get("config", {}))

    def guidance_for(self, requested: float | None) -> float:
        return self.default_guidance if requested is None else requested

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ref": self.source.ref,
            "family": self.family,
            "pipeline": type(self.pipe).__name__,
            "unet_in_channels": self.unet_in_channels,
            "native_size": self.native_size,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            **({"single_file": self.extras["single_file"]} if "single_file" in self.extras else {}),
            # How the engine runs it (engines/speed.py): on CUDA a batched picture is within bf16
            # rounding of its lone run, not bit-exact, and the record should say so.
            **({"speed": self.extras["speed"].summary()} if "speed" in self.extras else {}),
        }


def read_bildwerk_config(path: Path) -> dict[str, Any]:
    f = path / BILDWERK_CONFIG
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text("utf-8"))
    except ValueError as exc:
        raise UnsupportedModelError(f"{f} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def family_of(config: dict[str, Any], components: Collection[str]) -> Family | None:
    """A model's family from its bildwerk.json and the text components it has (loaded, or
    listed in model_index.json); None when it has no text side bildwerk knows."""
    if config.get("conditioning", {}).get("type") == "usem3":
        return "sentence"
    if "text_encoder_2" in components:
        return "sdxl"
    if {"text_encoder", "tokenizer"} <= set(components):
        return "sd"
    return None


def _family(pipe: Any, config: dict[str, Any]) -> Family:
    missing = [c for c in ("unet", "vae", "scheduler") if getattr(pipe, c, None) is None]
    if missing:
        raise UnsupportedModelError(
            f"{type(pipe).__name__} lacks {', '.join(missing)}; bildwerk drives UNet latent "
            "diffusion pipelines (Stable Diffusion 1.x/2.x, SDXL)"
        )
    present = {c for c in ("text_encoder", "tokenizer", "text_encoder_2") if getattr(pipe, c, None) is not None}
    family = family_of(config, present)
    if family is not None:
        return family
    raise UnsupportedModelError(f"{type(pipe).__name__} has no text encoder bildwerk knows")


def load_model(
    ref: str | None | ModelSource, *, device: str | None = None, dtype: str | None = None
) -> LoadedModel:
    source = resolve_model(ref)
    if source.path is not None and source.path.is_file():
        return _load_single_file(source, device=device, dtype=dtype)
    path = source.path if source.path is not None else download_hub_model(source.hub_id or "")
    check_model_folder(path)

    from diffusers import DiffusionPipeline

    apply_threads()
    dev = choose_device(device)
    dt = choose_dtype(dev, dtype)
    kwargs: dict[str, Any] = {"dtype": dt, "use_safetensors": True}
    index = (path / "model_index.json").read_text("utf-8")
    if '"safety_checker"' in index:
        # The NSFW gate is bildwerk's own concern; don't load the SD checker's weights.
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    config = read_bildwerk_config(path)
    if config.get("conditioning"):
        # Conditioned by bildwerk's sentence encoder, not by a transformers text encoder.
        kwargs.update(text_encoder=None, tokenizer=None)
    try:
        pipe = DiffusionPipeline.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"could not load model from {path}: {exc}") from exc
    family = _family(pipe, config)
    name = config.get("name") or source.hub_id or (path.name if source.ref != "default" else "default")
    extras: dict[str, Any] = {"config": config}
    if family == "sentence":
        from bildwerk.models.sentence_encoder import SentenceEncoder, SentenceEncoderConfig

        extras["encoder"] = SentenceEncoder(SentenceEncoderConfig(**config["conditioning"]))
    return _ready(pipe, source, family, dev, dt, name, extras)


def _load_single_file(source: ModelSource, *, device: str | None, dtype: str | None) -> LoadedModel:
    """A single-file checkpoint, converted while loading, into the same LoadedModel a folder gives."""
    from bildwerk.models.single_file import check_checkpoint, load_pipeline, sidecar

    assert source.path is not None
    ckpt = check_checkpoint(source.path)
    apply_threads()
    dev = choose_device(device)
    dt = choose_dtype(dev, dtype)
    pipe, facts = load_pipeline(ckpt, dt)
    family = _family(pipe, {})
    name = source.path.stem  # also for a chosen default: the record names the file
    # A file's default VAE is named in its NAME.bildwerk.json, as a folder's in its bildwerk.json.
    vae = sidecar(source.path).get("vae")
    config = {"vae": vae} if isinstance(vae, str) else {}
    return _ready(pipe, source, family, dev, dt, name, {"config": config, "single_file": facts})


def _ready(pipe: Any, source: ModelSource, family: Family, dev: torch.device, dt: torch.dtype, name: str,
           extras: dict[str, Any]) -> LoadedModel:
    """Check a built pipeline's UNet, move it to its device and freeze it for inference."""
    if int(pipe.unet.config.in_channels) not in (4, 9):
        raise UnsupportedModelError(
            f"UNet with {pipe.unet.config.in_channels} input channels; bildwerk supports 4-channel "
            "models and 9-channel inpainting models"
        )
    pipe.to(dev)
    if dt == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
        # SD/SDXL VAEs overflow to NaN in fp16; the engine casts latents to the VAE's dtype.
        pipe.vae.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)):
        if module is not None:
            module.eval().requires_grad_(False)
    return LoadedModel(source=source, pipe=pipe, family=family, device=dev, dtype=dt, name=name, extras=extras)


def adopt_pipeline(pipe: Any, *, name: str, config: dict[str, Any] | None = None, device: str | None = None,
                   dtype: str | None = None) -> LoadedModel:
    """A pipeline built in memory (the benchmarks build full-size architectures from configs)
    made ready exactly as a loaded folder is: checked, moved to its device and dtype, frozen."""
    config = config or {}
    dev = choose_device(device)
    dt = choose_dtype(dev, dtype)
    pipe.to(dtype=dt)
    family = _family(pipe, config)
    extras: dict[str, Any] = {"config": config}
    if family == "sentence":
        from bildwerk.models.sentence_encoder import SentenceEncoder, SentenceEncoderConfig

        extras["encoder"] = SentenceEncoder(SentenceEncoderConfig(**config["conditioning"]))
    return _ready(pipe, ModelSource(name, None), family, dev, dt, name, extras)


class ModelManager:
    """Keeps one model loaded; switching frees the old one first (diffusers #2284)."""

    def __init__(self, *, device: str | None = None, dtype: str | None = None) -> None:
        self._device = device
        self._dtype = dtype
        self._lock = threading.Lock()
        self._current: LoadedModel | None = None
        self._current_key: str | None = None

    def get(self, ref: str | None | ModelSource) -> LoadedModel:
        source = resolve_model(ref)
        key = str(source)
        if source.path is not None and source.path.is_file():
            from bildwerk.models.single_file import settings_stamp

            key += settings_stamp(source.path)  # an edited NAME.yaml / NAME.bildwerk.json reloads
        with self._lock:
            if self._current is not None and self._current_key == key:
                return self._current
            self.unload()
            self._current = load_model(source, device=self._device, dtype=self._dtype)
            self._current_key = key
            return self._current

    def adopt(self, model: LoadedModel, ref: str | None = None) -> None:
        """Serve ``model`` (built in memory: ``adopt_pipeline``) for ``ref`` (default: the default
        model), in place of what was loaded."""
        source = resolve_model(ref)  # the key ``get`` computes for the same reference
        with self._lock:
            self.unload()
            self._current, self._current_key = model, str(source)

    @property
    def current(self) -> LoadedModel | None:
        """The model loaded now, if any."""
        return self._current

    def unload(self) -> None:
        if self._current is None:
            return
        self._current = None
        self._current_key = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
