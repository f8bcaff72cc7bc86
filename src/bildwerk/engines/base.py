"""What every engine takes and gives: a request in, a result with its full record out.

Two shapes: every engine has ``generate`` (one request, start to end); engines that denoise
step by step also have the batch API (``prepare`` a request into denoising state, ``step`` a
list of states in one network call, ``finish`` into a result), which cross-request batching
(app/batching.py) drives. ``run_alone`` is ``generate`` written with the batch API, so a
request run alone and one run in a batch take the same path.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from PIL import Image

from bildwerk.core.errors import GenerationCancelled
from bildwerk.core.request import GenerationRequest

Phase = Literal["load", "encode", "denoise", "decode", "done"]


@dataclass(frozen=True)
class ProgressEvent:
    phase: Phase
    step: int
    total: int
    elapsed: float
    # Denoising steps of local engines: a picture of where the image is heading, made only
    # when called (a VAE decode costs time; the caller decides how often it is worth it).
    preview: Callable[[], Image.Image | None] | None = field(default=None, compare=False, repr=False)
    # Hires fix: which pass the denoising steps are in (1, then 2; ``step``/``total`` count both)
    # and what it is doing in words ("hires pass at 1024x1024"); None for one-pass jobs.
    detail: str | None = field(default=None, compare=False)
    pass_index: int = field(default=1, compare=False)


ProgressCallback = Callable[[ProgressEvent], None]


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


@cache
def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("bildwerk", "torch", "diffusers", "transformers", "safetensors", "pillow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


@dataclass
class GenerationResult:
    request: GenerationRequest
    images: list[Image.Image]
    seeds: list[int]
    model: dict[str, Any]
    scheduler: str
    guidance: float
    width: int
    height: int
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    loras: list[dict[str, Any]] = field(default_factory=list)  # applied: name, weight, hash, size, ...
    embeddings: list[dict[str, Any]] = field(default_factory=list)  # used: name, hash, vectors
    # What was used beyond the request's fields, by feature ("hires": both passes' sizes and
    # steps; "vae": the VAE override), so the record says what made the picture.
    details: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)
    created: float = field(default_factory=time.time)

    def record(self, index: int | None = None) -> dict[str, Any]:
        """The full, JSON-safe record of this generation (or of one of its images)."""
        rec: dict[str, Any] = {
            "request": self.request.record(),
            "model": self.model,
            "scheduler": self.scheduler,
            "guidance": self.guidance,
            "width": self.width,
            "height": self.height,
            "seeds": self.seeds,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "notes": self.notes,
            "details": self.details,
            "versions": self.versions,
            "created": self.created,
        }
        if self.loras:
            rec["loras"] = self.loras
        if self.embeddings:
            rec["embeddings"] = self.embeddings
        if index is not None:
            rec["index"] = index
            rec["seed"] = self.seeds[index]
        return rec

    def parameters_text(self, index: int) -> str:
        from bildwerk.images.metadata import format_a1111_parameters

        r = self.request
        # A1111's convention: the LoRA tags stay in the infotext's prompt, their files' hashes
        # (sha256 of the tensor data, 12 digits) under "Lora hashes", embeddings' under "TI hashes".
        tags = " ".join(f"<lora:{x['name']}:{x['weight']:g}>" for x in self.loras)
        lora_hashes = ", ".join(f"{x['name']}: {x['hash']}" for x in self.loras) or None
        ti_hashes = ", ".join(f"{x['name']}: {x['hash']}" for x in self.embeddings) or None
        width, height = self.images[index].width, self.images[index].height
        strength = None if r.mode.value == "text-to-image" else r.strength
        extra: dict[str, Any] = {"Lora hashes": lora_hashes, "TI hashes": ti_hashes, "Mode": r.mode.value}
        hires = self.details.get("hires")
        if hires:
            # A1111 writes the first pass's size as Size and the hires settings beside it.
            width, height = hires["first_size"]
            strength = hires["strength"]
            if r.hires is not None and (r.hires.width or r.hires.height):
                extra["Hires resize"] = f"{r.hires.width or 0}x{r.hires.height or 0}"
            else:
                extra["Hires upscale"] = r.hires.scale if r.hires is not None and r.hires.scale else 2.0
            extra["Hires steps"] = hires["steps"]
            from bildwerk.core.hires import a1111_upscaler_name

            extra["Hires upscaler"] = a1111_upscaler_name(hires["upscaler"])
            if "prompt" in hires:
                extra["Hires prompt"] = hires["prompt"]
            if "negative_prompt" in hires:
                extra["Hires negative prompt"] = hires["negative_prompt"]
        vae = self.details.get("vae")
        if vae:
            extra["VAE"] = vae["name"]
        extra["Version"] = f"bildwerk {self.versions.get('bildwerk', '')}".strip()
        return format_a1111_parameters(
            prompt=f"{r.prompt} {tags}".strip() if tags else r.prompt,
            negative_prompt=r.negative_prompt,
            steps=r.steps,
            sampler=self.scheduler,
            cfg_scale=self.guidance,
            seed=self.seeds[index],
            width=width,
            height=height,
            model=self.model.get("name"),
            denoising_strength=strength,
            extra=extra,
        )

    def png_bytes(self, index: int) -> bytes:
        from bildwerk.images.metadata import png_with_metadata

        return png_with_metadata(
            self.images[index], parameters=self.parameters_text(index), record=self.record(index)
        )

    def save(self, out_dir: str | Path, stem: str | None = None, *, overwrite: bool = False) -> list[Path]:
        """Write each image as ``<stem>-seed<seed>.png`` (:func:`image_file_name`) into
        ``out_dir``. A name already taken gets the next free one (``...-seed42-v2.png``), so an
        earlier result is never lost; ``overwrite=True`` replaces files of the same names."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = stem or self.request.mode.value  # the CLI's names: text-to-image-seed42.png
        return [write_image_file(out / image_file_name(stem, seed), self.png_bytes(i), overwrite=overwrite)
                for i, seed in enumerate(self.seeds)]


def image_file_name(stem: str, seed: int) -> str:
    """``text-to-image-seed42.png``: what made the image and the seed that makes it again on its
    own (image i of a batch has seed + i), with nothing that reads as a range ("0-1")."""
    return f"{stem}-seed{seed}.png"


def write_image_file(path: Path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` at ``path``, or, when that is taken and not ``overwrite``, at the first free
    ``<name>-v2.png``, ``<name>-v3.png``... Returns where it went. Exclusive creation: two
    processes writing into one folder never replace each other's files."""
    if overwrite:
        path.write_bytes(data)
        return path
    candidate, n = path, 1
    while True:
        try:
            with candidate.open("xb") as fh:
                fh.write(data)
            return candidate
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.stem}-v{n}{path.suffix}")


class Engine(Protocol):
    """Turns a validated request into images. Local diffusers, remote APIs, ...

    An engine may also have ``check(request)``: what it can tell before any work (a remote
    engine's key is configured), raising the error the submitter should get.
    """

    def generate(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult: ...


class Prepared(Protocol):
    """A request an engine has prepared for stepping (its denoising state, engine-private)."""

    request: GenerationRequest

    @property
    def done(self) -> bool: ...

    @property
    def steps(self) -> tuple[int, int]:
        """Steps done and steps in all."""
        ...

    @property
    def batch_key(self) -> Hashable:
        """Prepared requests with equal keys can share one network call."""
        ...

    @property
    def rows(self) -> int:
        """Rows one step of it adds to a network call (images, twice with guidance)."""
        ...

    @property
    def cells(self) -> int:
        """Rows times latent pixels: what one step costs in activation memory, roughly."""
        ...


@runtime_checkable
class BatchEngine(Engine, Protocol):
    """Optionally also ``load(source)``: load a model ahead of its jobs (``Generator.load``;
    the service's worker loads before it claims, so no job is charged for a load)."""

    def prepare(self, request: GenerationRequest, *, on_progress: ProgressCallback | None = None,
                source: Any = None) -> Prepared:
        """``source``: the model reference as the caller already resolved it (else resolved here)."""
        ...

    def step(self, batch: Sequence[Prepared]) -> None:
        """Advance every prepared request in ``batch`` (equal ``batch_key``) by one step."""
        ...

    def finish(self, prepared: Prepared) -> GenerationResult: ...


def run_alone(engine: BatchEngine, request: GenerationRequest, *, on_progress: ProgressCallback | None = None,
              cancel: CancelToken | None = None) -> GenerationResult:
    """``generate`` through the batch API: prepare, step until done (cancel between steps), finish."""
    return step_to_end(engine, engine.prepare(request, on_progress=on_progress), cancel)


def step_to_end(engine: BatchEngine, job: Prepared, cancel: CancelToken | None = None) -> GenerationResult:
    """Step one prepared request alone until it is done, then finish it."""
    while not job.done:
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("cancelled after {} of {} steps".format(*job.steps))
        engine.step([job])
    return engine.finish(job)
