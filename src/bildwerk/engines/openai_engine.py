"""The remote engine: OpenAI's Images API (dall-e-2, dall-e-3, gpt-image-*) via the official SDK.

A request whose model is ``openai:<model>`` comes here. The API has a fixed set of sizes
per model, no seed, no negative prompt and no strength, so this engine maps what it can
and writes down in ``result.notes`` what it could not:

* sizes: the supported size closest in aspect and area is asked for; the answer is
  cropped to the wanted aspect and resized to the requested size;
* input images are letterboxed into the remote canvas (aspect kept) and cut back out;
* inpainting sends an RGBA mask that is transparent where the user's mask says
  "change", then composites the answer back locally through bildwerk's feathered
  mask, so every pixel outside the mask is bit-identical to the input (gpt-image
  models repaint the whole canvas).

The key comes from ``BILDWERK_OPENAI_API_KEY`` or ``OPENAI_API_KEY``, the endpoint from
``BILDWERK_OPENAI_BASE_URL`` (a proxy, or a test server); both are read on first use.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageOps, ImageStat

from bildwerk.core.errors import (
    GenerationCancelled,
    InvalidImageError,
    InvalidRequestError,
    NotConfiguredError,
    RemoteAuthError,
    RemoteError,
    RemoteRateLimited,
    RemoteTimeout,
)
from bildwerk.core.openai_errors import explain, retry_after_seconds  # noqa: F401 (re-exported)
from bildwerk.core.refs import is_remote_model, remote_model_name  # noqa: F401 (re-exported)
from bildwerk.core.request import GenerationRequest, Mode
from bildwerk.engines.base import CancelToken, GenerationResult, ProgressCallback, ProgressEvent
from bildwerk.engines.sizing import input_size
from bildwerk.images.crop import CropBox, context_box, paste_back
from bildwerk.images.io import decode_base64_image, encode_png, to_rgb
from bildwerk.images.masks import feather_mask, mask_bbox, mask_is_empty, normalize_mask

KEY_ENV_VARS = ("BILDWERK_OPENAI_API_KEY", "OPENAI_API_KEY")
BASE_URL_ENV = "BILDWERK_OPENAI_BASE_URL"
DEFAULT_SIZE = (1024, 1024)
# dall-e-2 refuses uploads of 4 MB or more.
DALL_E_2_MAX_UPLOAD = 4 * 1024 * 1024

Size = tuple[int, int]


@dataclass(frozen=True)
class ModelSpec:
    """What one family of OpenAI image models accepts."""

    family: str  # "dall-e-2", "dall-e-3" or "gpt-image"
    sizes: tuple[Size, ...]
    max_n: int  # images per call
    response_format: bool  # dall-e-* take response_format; gpt-image rejects it (always b64)
    edits: bool
    variations: bool

    @property
    def image_to_image(self) -> bool:
        return self.variations or self.edits


_SPECS = {
    "dall-e-2": ModelSpec("dall-e-2", ((256, 256), (512, 512), (1024, 1024)), 10, True, True, True),
    "dall-e-3": ModelSpec(
        "dall-e-3", ((1024, 1024), (1792, 1024), (1024, 1792)), 1, True, False, False
    ),
    "gpt-image": ModelSpec(
        "gpt-image", ((1024, 1024), (1536, 1024), (1024, 1536)), 10, False, True, False
    ),
}


def model_spec(name: str) -> ModelSpec:
    """The spec of an OpenAI image model id; unknown ids are refused with the known ones."""
    if name in _SPECS:
        return _SPECS[name]
    if name.startswith(("gpt-image", "chatgpt-image")):
        return _SPECS["gpt-image"]
    raise InvalidRequestError(
        f"unknown OpenAI image model {name!r}; use openai:dall-e-2, openai:dall-e-3 or "
        "openai:gpt-image-1 (or another gpt-image model)"
    )


def closest_size(sizes: tuple[Size, ...], wanted: Size) -> Size:
    """The supported size closest to ``wanted`` in aspect first, then in area (log scale)."""
    w, h = wanted

    def distance(size: Size) -> tuple[float, float]:
        aspect = abs(math.log((size[0] / size[1]) / (w / h)))
        area = abs(math.log((size[0] * size[1]) / (w * h)))
        return round(aspect, 6), area  # rounded so equal aspects tie and area decides

    return min(sizes, key=distance)


def _fit(image: Image.Image, size: Size) -> Image.Image:
    """Centre-crop to the aspect of ``size`` and resize (no stretching)."""
    if image.size == tuple(size):
        return image
    return ImageOps.fit(image, size, Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class _Frame:
    """Where a picture sits in the remote canvas: scaled to fit, centred, aspect kept."""

    canvas: Size
    inner: tuple[int, int, int, int]  # left, top, right, bottom in canvas pixels

    @classmethod
    def around(cls, picture: Size, canvas: Size) -> _Frame:
        scale = min(canvas[0] / picture[0], canvas[1] / picture[1])
        w = min(canvas[0], max(1, round(picture[0] * scale)))
        h = min(canvas[1], max(1, round(picture[1] * scale)))
        left, top = (canvas[0] - w) // 2, (canvas[1] - h) // 2
        return cls(canvas, (left, top, left + w, top + h))

    @property
    def inner_size(self) -> Size:
        return self.inner[2] - self.inner[0], self.inner[3] - self.inner[1]

    def place(self, picture: Image.Image) -> Image.Image:
        """RGB picture on the canvas; the bars take its mean colour (least distracting)."""
        fill = tuple(round(v) for v in ImageStat.Stat(picture).mean[:3])
        out = Image.new("RGB", self.canvas, fill)
        scaled = picture
        if picture.size != self.inner_size:
            scaled = picture.resize(self.inner_size, Image.Resampling.LANCZOS)
        out.paste(scaled, self.inner[:2])
        return out

    def place_mask(self, mask: Image.Image) -> Image.Image:
        """Binary "L" mask on the canvas; bars are "keep"."""
        scaled = mask
        if mask.size != self.inner_size:
            # Same rule as crop_for_inpaint: area resize, any covered pixel is "change",
            # so thin strokes survive downscaling.
            scaled = mask.resize(self.inner_size, Image.Resampling.BOX)
            scaled = scaled.point(lambda v: 255 if v > 0 else 0)
        out = Image.new("L", self.canvas, 0)
        out.paste(scaled, self.inner[:2])
        return out

    def take(self, answer: Image.Image) -> Image.Image:
        """The picture's part of the remote answer (answer scaled to the canvas first)."""
        if answer.size != self.canvas:
            answer = answer.resize(self.canvas, Image.Resampling.LANCZOS)
        return answer.crop(self.inner)


def openai_mask_png(change: Image.Image) -> bytes:
    """OpenAI's mask convention from bildwerk's: RGBA, alpha 0 where the "L" mask is 255."""
    out = Image.new("RGBA", change.size, (0, 0, 0, 255))
    out.putalpha(change.point(lambda v: 0 if v > 0 else 255))
    return encode_png(out)


def _remote_prompt(req: GenerationRequest) -> str:
    # OpenAI reads no A1111 weights: "(red:1.3) apple" would arrive with its brackets.
    from bildwerk.core.weights import plain_text

    return plain_text(req.prompt)


def _file(png: bytes, name: str) -> tuple[str, bytes, str]:
    return (name, png, "image/png")


@dataclass
class _Plan:
    """The remote calls one request turns into, and how each answer becomes a result image."""

    endpoint: str  # "generate", "edit" or "variation"
    kwargs: dict[str, Any]  # everything but n
    finish: Callable[[Image.Image], Image.Image]
    notes: list[str] = field(default_factory=list)


class OpenAIImagesEngine:
    """Generates with OpenAI's Images API; implements the :class:`Engine` protocol."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        client: Any = None,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self._client = client  # an openai.OpenAI (tests, custom setups); made on first use else
        self._key_source = "the api_key argument" if api_key else None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # Never show the key, not even in a debugger or a log of repr()s.
        where = self._base_url or os.environ.get(BASE_URL_ENV) or "api.openai.com"
        return f"OpenAIImagesEngine(endpoint={where!r})"

    # -- public -----------------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        t0 = time.perf_counter()
        emit = on_progress or (lambda _e: None)
        emit(ProgressEvent("load", 0, 1, 0.0))
        name = remote_model_name(request.model)
        spec = model_spec(name)
        seeds = [(request.seed or 0) + i for i in range(request.num_images)]
        notes = self._request_notes(request, spec)

        if request.mode is Mode.TEXT_TO_IMAGE:
            plan: _Plan | None = self._plan_text(request, name, spec)
        elif request.mode is Mode.IMAGE_TO_IMAGE:
            plan = self._plan_image(request, name, spec)
        else:
            plan, unchanged = self._plan_inpaint(request, name, spec)
            if plan is None:
                # Nothing to repaint: the input comes back untouched, and the record says why.
                images = [unchanged.copy() for _ in seeds]
                timings = {"load": time.perf_counter() - t0, "remote": 0.0}
                timings["total"] = timings["load"]
                emit(ProgressEvent("done", 1, 1, timings["total"]))
                notes.append("mask is empty; image returned unchanged")
                return self._result(request, name, images, seeds, timings, notes)
        assert plan is not None
        notes.extend(plan.notes)
        client = self._get_client()
        timings = {"load": time.perf_counter() - t0}

        images, revised, remote_s = self._run(client, name, spec, plan, len(seeds), cancel)
        notes.extend(f"OpenAI revised the prompt: {text}" for text in revised)
        timings["remote"] = remote_s
        timings["total"] = time.perf_counter() - t0
        emit(ProgressEvent("done", 1, 1, timings["total"]))
        return self._result(request, name, images, seeds, timings, notes)

    # -- planning ---------------------------------------------------------------------------
    @staticmethod
    def _request_notes(req: GenerationRequest, spec: ModelSpec) -> list[str]:
        notes = [
            "OpenAI's Images API takes no seed: the seeds are recorded, but remote results "
            "cannot be reproduced from them"
        ]
        if req.negative_prompt:
            notes.append("negative prompt not sent: the OpenAI Images API has no negative prompt")
        if _remote_prompt(req) != req.prompt:
            notes.append("prompt weights removed: the OpenAI Images API reads plain text")
        ignored = [f for f in ("steps", "guidance", "scheduler") if f in req.model_fields_set]
        if req.mode is Mode.IMAGE_TO_IMAGE or (req.mode is Mode.INPAINT and req.strength != 1.0):
            ignored.append("strength")
        if ignored:
            notes.append(f"{', '.join(ignored)} not used: remote models take no such setting")
        if spec.max_n == 1 and req.num_images > 1:
            notes.append(f"{spec.family} makes one image per call: {req.num_images} calls")
        return notes

    @staticmethod
    def _size_note(name: str, remote: Size, local: Size, what: str = "") -> str:
        """Which size was asked of OpenAI, and how it maps to the local picture."""
        note = f"remote size {remote[0]}x{remote[1]} ({name}{what})"
        if remote == local:
            return note
        if remote[0] * local[1] == remote[1] * local[0]:
            return note + f", resized to {local[0]}x{local[1]}"
        if what:  # an input picture: letterboxed into the canvas and cut back out
            return note + f", {local[0]}x{local[1]} picture letterboxed into it"
        return note + f", centre-cropped and resized to {local[0]}x{local[1]}"

    @staticmethod
    def _need_prompt(req: GenerationRequest, name: str) -> None:
        if not req.prompt:
            raise InvalidRequestError(f"openai:{name} needs a prompt describing the image")

    @staticmethod
    def _b64(spec: ModelSpec) -> dict[str, Any]:
        # gpt-image models always answer base64 and reject the parameter.
        return {"response_format": "b64_json"} if spec.response_format else {}

    def _plan_text(self, req: GenerationRequest, name: str, spec: ModelSpec) -> _Plan:
        self._need_prompt(req, name)
        out = (req.width or DEFAULT_SIZE[0], req.height or DEFAULT_SIZE[1])
        remote = closest_size(spec.sizes, out)
        kwargs = {"model": name, "prompt": _remote_prompt(req), "size": f"{remote[0]}x{remote[1]}"}
        return _Plan(
            endpoint="generate",
            kwargs=kwargs | self._b64(spec),
            finish=lambda answer: _fit(answer, out),
            notes=[self._size_note(name, remote, out)],
        )

    def _plan_image(self, req: GenerationRequest, name: str, spec: ModelSpec) -> _Plan:
        if not spec.image_to_image:
            raise InvalidRequestError(
                f"openai:{name} cannot start from an image; use openai:dall-e-2 (variations) "
                "or openai:gpt-image-1 (edits) for image-to-image"
            )
        if not spec.variations:
            self._need_prompt(req, name)
        assert req.image is not None
        original = to_rgb(req.image)
        out = input_size(req, original)
        notes: list[str] = []
        frame, png, remote = self._upload(original, closest_size(spec.sizes, out), spec, notes)
        kwargs: dict[str, Any] = {"model": name, "image": _file(png, "image.png")}
        if spec.variations:
            endpoint = "variation"
            notes.append(
                f"{name} makes variations of the image, which take no prompt: the prompt "
                "was not used"
            )
        else:
            endpoint = "edit"
            kwargs["prompt"] = _remote_prompt(req)
        kwargs["size"] = f"{remote[0]}x{remote[1]}"
        notes.insert(0, self._size_note(name, remote, original.size, f", {endpoint}"))
        if out != original.size:
            notes.insert(1, f"result fitted to {out[0]}x{out[1]}")
        return _Plan(
            endpoint=endpoint,
            kwargs=kwargs | self._b64(spec),
            finish=lambda answer: _fit(frame.take(answer), out),
            notes=notes,
        )

    def _plan_inpaint(
        self, req: GenerationRequest, name: str, spec: ModelSpec
    ) -> tuple[_Plan | None, Image.Image]:
        if not spec.edits:
            raise InvalidRequestError(
                f"openai:{name} cannot inpaint; use openai:dall-e-2 or openai:gpt-image-1"
            )
        self._need_prompt(req, name)
        assert req.image is not None and req.mask is not None
        original = to_rgb(req.image)
        mask = normalize_mask(
            req.mask, size=original.size, source=req.mask_source, invert=req.invert_mask
        )
        if mask_is_empty(mask):
            return None, original
        alpha = feather_mask(mask, req.mask_blur)

        wanted = (req.width, req.height) if req.width and req.height else None
        if req.only_masked:
            bbox = mask_bbox(mask)
            assert bbox is not None
            pad = req.only_masked_padding
            # The padded mask area picks the remote size; the crop then takes its aspect.
            around = context_box(
                bbox, original.size, padding=pad, aspect=(bbox[2] - bbox[0]) / (bbox[3] - bbox[1])
            )
            remote = closest_size(spec.sizes, wanted or (around.width, around.height))
            box = context_box(bbox, original.size, padding=pad, aspect=remote[0] / remote[1])
        else:
            remote = closest_size(spec.sizes, wanted or original.size)
            box = CropBox(0, 0, original.width, original.height)

        notes: list[str] = []
        region = original.crop(box.as_tuple())
        frame, png, remote = self._upload(region, remote, spec, notes)
        mask_png = openai_mask_png(frame.place_mask(mask.crop(box.as_tuple())))
        kwargs = {
            "model": name,
            "prompt": _remote_prompt(req),
            "image": _file(png, "image.png"),
            "mask": _file(mask_png, "mask.png"),
            "size": f"{remote[0]}x{remote[1]}",
        }
        notes.insert(0, self._size_note(name, remote, (box.width, box.height), ", edit"))
        if req.only_masked:
            notes.append(f"inpainted region {box.as_tuple()} at {remote[0]}x{remote[1]}")
        notes.append("composited locally: pixels outside the mask are the input's, unchanged")
        plan = _Plan(
            endpoint="edit",
            kwargs=kwargs | self._b64(spec),
            # The remote model may touch every pixel; only the feathered mask lets it through.
            finish=lambda answer: paste_back(original, frame.take(answer), box, alpha),
            notes=notes,
        )
        return plan, original

    @staticmethod
    def _upload(
        picture: Image.Image, remote: Size, spec: ModelSpec, notes: list[str]
    ) -> tuple[_Frame, bytes, Size]:
        """The picture letterboxed into the remote canvas, as PNG bytes.

        dall-e-2 wants an RGBA PNG under 4 MB; a canvas too big for that drops to the
        next smaller size.
        """
        if spec.family != "dall-e-2":
            frame = _Frame.around(picture.size, remote)
            return frame, encode_png(frame.place(picture)), remote
        smaller = [s for s in sorted(spec.sizes, reverse=True) if s[0] <= remote[0]]
        for size in smaller:
            frame = _Frame.around(picture.size, size)
            png = encode_png(frame.place(picture).convert("RGBA"))
            if len(png) < DALL_E_2_MAX_UPLOAD:
                if size != remote:
                    notes.append(
                        f"the image is over dall-e-2's 4 MB limit at {remote[0]}x{remote[1]}; "
                        f"sent at {size[0]}x{size[1]}"
                    )
                return frame, png, size
        raise InvalidImageError("the image is too large for dall-e-2 even at 256x256 (4 MB)")

    def configured(self) -> bool:
        """A key is set (the call itself can still fail)."""
        return self._client is not None or bool(self._api_key) or any(os.environ.get(v) for v in KEY_ENV_VARS)

    def check(self, request: GenerationRequest) -> None:
        """Before the job is queued: a key is configured (the call itself can still fail)."""
        if not self.configured():
            raise NotConfiguredError(
                f"model {request.model or 'openai:...'} needs an OpenAI API key on the server, and "
                "this server has none (the operator sets BILDWERK_OPENAI_API_KEY or OPENAI_API_KEY)"
            )

    # -- remote calls -----------------------------------------------------------------------
    def _get_client(self) -> Any:
        with self._lock:
            if self._client is not None:
                return self._client
            key = self._api_key
            if not key:
                for var in KEY_ENV_VARS:
                    if os.environ.get(var):
                        key, self._key_source = os.environ[var], var
                        break
            if not key:
                raise RemoteAuthError(
                    "no OpenAI API key: set BILDWERK_OPENAI_API_KEY or OPENAI_API_KEY "
                    "to use openai:<model> models"
                )
            import openai

            self._client = openai.OpenAI(
                api_key=key,
                base_url=self._base_url or os.environ.get(BASE_URL_ENV) or None,
                timeout=self.timeout,
                max_retries=self.max_retries,
            )
            return self._client

    def _run(
        self,
        client: Any,
        name: str,
        spec: ModelSpec,
        plan: _Plan,
        count: int,
        cancel: CancelToken | None,
    ) -> tuple[list[Image.Image], list[str], float]:
        method = {
            "generate": client.images.generate,
            "edit": client.images.edit,
            "variation": client.images.create_variation,
        }[plan.endpoint]
        calls = math.ceil(count / spec.max_n)
        images: list[Image.Image] = []
        revised: list[str] = []
        remote_s = 0.0
        for call in range(calls):
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled(f"cancelled before remote call {call + 1} of {calls}")
            n = min(spec.max_n, count - len(images))
            t = time.perf_counter()
            response = self._call(client, name, method, dict(plan.kwargs, n=n))
            remote_s += time.perf_counter() - t
            for item in self._items(response, name, n):
                images.append(plan.finish(self._decode(item, name)))
                text = getattr(item, "revised_prompt", None)
                if text and text not in revised:
                    revised.append(text)
        return images, revised, remote_s

    @staticmethod
    def _items(response: Any, name: str, n: int) -> list[Any]:
        data = list(getattr(response, "data", None) or [])
        if len(data) < n:
            raise RemoteError(f"OpenAI ({name}) answered {len(data)} images instead of {n}")
        return data[:n]

    @staticmethod
    def _decode(item: Any, name: str) -> Image.Image:
        b64 = getattr(item, "b64_json", None)
        if not b64:
            raise RemoteError(f"OpenAI ({name}) answered without image data (b64_json)")
        try:
            return to_rgb(decode_base64_image(b64, what=f"image from OpenAI ({name})"))
        except InvalidImageError as exc:
            # A broken answer is the service's fault, not the user's request.
            raise RemoteError(str(exc)) from exc

    def _call(self, client: Any, name: str, method: Callable[..., Any], kwargs: dict) -> Any:
        import openai

        where = f"OpenAI Images API at {str(client.base_url).rstrip('/')} ({name})"
        retries = getattr(client, "max_retries", self.max_retries)
        try:
            return method(**kwargs)
        except openai.OpenAIError as e:
            f = explain(e, where=where, secrets=[self._api_key, getattr(client, "api_key", None)],
                        timeout=getattr(client, "timeout", self.timeout), retries=retries,
                        key_hint=self._key_hint())
            if f.kind == "timeout":
                raise RemoteTimeout(f.message) from e
            if f.kind == "rate_limited":
                raise RemoteRateLimited(f.message, retry_after=f.retry_after) from e
            if f.kind in ("auth", "forbidden"):
                raise RemoteAuthError(f.message) from e
            if f.kind == "bad_request":
                # Content policy refusals, bad sizes...: the request is what OpenAI refused.
                raise InvalidRequestError(f"OpenAI ({name}) refused the request: {f.message}") from e
            raise RemoteError(f.message) from e

    def _key_hint(self) -> str:
        if self._key_source in KEY_ENV_VARS:
            return self._key_source
        return " or ".join(KEY_ENV_VARS)

    # -- result -----------------------------------------------------------------------------
    @staticmethod
    def _result(
        req: GenerationRequest,
        name: str,
        images: list[Image.Image],
        seeds: list[int],
        timings: dict[str, float],
        notes: list[str],
    ) -> GenerationResult:
        w, h = images[0].size
        return GenerationResult(
            request=req,
            images=images,
            seeds=seeds,
            model={"name": f"openai:{name}", "family": "remote", "ref": req.model},
            scheduler="remote",
            guidance=req.guidance if req.guidance is not None else 0.0,
            width=w,
            height=h,
            timings=timings,
            notes=notes,
        )


__all__ = [
    "ModelSpec",
    "OpenAIImagesEngine",
    "closest_size",
    "is_remote_model",
    "model_spec",
    "openai_mask_png",
    "remote_model_name",
    "retry_after_seconds",
]
