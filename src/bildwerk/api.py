"""bildwerk from Python: import a class, call it. The same use case as every other face.

    from bildwerk import Bildwerk

    bw = Bildwerk()                                    # the default model, loaded once and kept
    result = bw.generate("ein See zwischen Hochhäusern", seed=42, num_images=2)
    result.save("outputs")                             # PNGs with their full record inside
    var = bw.vary(result.images[0], "als Aquarell", strength=0.6)
    fix = bw.inpaint("map.png", "mask.png", "ein See", mask_blur=8)
    print(fix.record(0)["request"]["prompt_record"])  # how the words became the model's prompt

Keyword arguments are the request's fields (``steps``, ``guidance``, ``seed``, ``width``,
``height``, ``num_images``, ``scheduler``, ``negative_prompt``, ``mask_blur``, ...); prompt
steps go in ``options`` (a ``PromptOptions`` or a dict: ``{"style": "watercolor",
"translate": "llm"}``). Bad input raises ``bildwerk.core.errors.InvalidRequestError`` with one
clear message, as the CLI and the REST APIs answer it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image

from bildwerk.app.generate import Generator
from bildwerk.core.prompt import PromptOptions
from bildwerk.core.spec import JobSpec
from bildwerk.engines.base import GenerationResult, ProgressCallback
from bildwerk.models.loader import ModelManager

ImageInput = Image.Image | str | os.PathLike[str] | bytes


def _picture(value: ImageInput | None, what: str) -> Image.Image | None:
    from bildwerk.images.io import decode_image, load_image_file

    if value is None or isinstance(value, Image.Image):
        return value
    if isinstance(value, (bytes, bytearray)):
        return decode_image(bytes(value), what=what)
    return load_image_file(Path(value), what=what)


def _options(value: PromptOptions | dict[str, Any] | None) -> PromptOptions | None:
    return PromptOptions(**value) if isinstance(value, dict) else value


class Bildwerk:
    """Generate, vary and inpaint with one model kept loaded between calls."""

    def __init__(self, model: str | None = None, *, device: str | None = None, dtype: str | None = None,
                 threads: int | None = None, options: PromptOptions | dict[str, Any] | None = None) -> None:
        """``model``: a folder, a registered name, a hub id, ``openai:MODEL``, or None for the
        default model; ``options``: prompt steps used when a call names none."""
        if threads is not None:
            os.environ["BILDWERK_THREADS"] = str(int(threads))
        self.model = model
        self.options = _options(options)
        self.generator = Generator(models=ModelManager(device=device, dtype=dtype))

    def run(self, spec: JobSpec, *, on_progress: ProgressCallback | None = None) -> GenerationResult:
        """A ready spec: checked, prompt steps, engine."""
        source = self.generator.check(spec)
        return self.generator.run(spec, on_progress=on_progress, source=source)

    def _call(self, options: PromptOptions | dict[str, Any] | None, on_progress: ProgressCallback | None,
              **fields: Any) -> GenerationResult:
        fields.setdefault("model", self.model)
        spec = JobSpec.build(origin="python", options=_options(options) or self.options, **fields)
        return self.run(spec, on_progress=on_progress)

    def generate(self, prompt: str, *, options: PromptOptions | dict[str, Any] | None = None,
                 on_progress: ProgressCallback | None = None, **fields: Any) -> GenerationResult:
        """Text to image."""
        return self._call(options, on_progress, mode="text-to-image", prompt=prompt, **fields)

    def vary(self, image: ImageInput, prompt: str = "", *, options: PromptOptions | dict[str, Any] | None = None,
             on_progress: ProgressCallback | None = None, **fields: Any) -> GenerationResult:
        """Image to image: variations of ``image`` guided by an edit prompt ("als Aquarell")."""
        return self._call(options, on_progress, mode="image-to-image", prompt=prompt,
                          image=_picture(image, "image"), **fields)

    def inpaint(self, image: ImageInput, mask: ImageInput, prompt: str, *,
                options: PromptOptions | dict[str, Any] | None = None,
                on_progress: ProgressCallback | None = None, **fields: Any) -> GenerationResult:
        """Repaint the masked part (white, or transparent, = change); every pixel outside the
        mask stays bit-identical."""
        return self._call(options, on_progress, mode="inpaint", prompt=prompt, image=_picture(image, "image"),
                          mask=_picture(mask, "mask"), **fields)

    def close(self) -> None:
        """Free the loaded model's memory."""
        self.generator.models.unload()

    def __enter__(self) -> Bildwerk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
