"""GenerationRequest: the one request every face of bildwerk builds.

The CLI, the REST APIs, the Python API and the pools all build a ``GenerationRequest``
(inside a ``JobSpec``, core/spec.py) and hand it to the one use case (app/generate.py).
Everything here is validated *before* anything is allocated, so a bad request fails fast
with a message a user can act on. Nothing here imports torch or diffusers.

Images (the init image and the mask) travel with the request but are excluded
from its JSON form: the record stores their content hashes instead.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

from PIL import Image
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    computed_field,
    field_validator,
    model_validator,
)

from bildwerk.core.bounds import (  # noqa: F401  (re-exported: the request's bounds)
    MAX_IMAGES,
    MAX_MASK_BLUR,
    MAX_MASK_PADDING,
    MAX_MODEL_REF_CHARS,
    MAX_NAME_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    SIDE_MULTIPLE,
    check_side,
)
from bildwerk.core.control import MAX_CONTROL_UNITS, ControlUnit
from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.hashing import image_sha256
from bildwerk.core.hires import HiresFix, hires_sizes
from bildwerk.core.loras import MAX_LORAS, LoraSpec
from bildwerk.core.prompt import PromptRecord
from bildwerk.core.samplers import canonical_sampler_name
from bildwerk.core.text import check_text


class Mode(StrEnum):
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"
    INPAINT = "inpaint"


# A value a face was sent (JSON scalars only: the record is JSON, and nothing here is nested).
OriginValue = str | int | float | bool | None

# How a mask says "change": white (luminance), transparent (alpha), or whichever it has (auto).
MaskSource = Literal["auto", "luminance", "alpha"]


def draw_seed() -> int:
    """A random seed; drawn once per request, then recorded with every result."""
    return secrets.randbelow(MAX_SEED + 1)


class GenerationRequest(BaseModel):
    """One generation: text-to-image, image-to-image or inpainting.

    ``seed`` may be left unset: a random one is drawn at validation time and is
    then part of the request, so every result records the seed that made it.
    Image ``i`` of a batch uses ``seed + i``, so each image can be reproduced
    on its own with ``num_images=1``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", validate_assignment=False)

    mode: Mode = Mode.TEXT_TO_IMAGE
    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    steps: int = Field(default=20, ge=1, le=MAX_STEPS)
    guidance: float | None = Field(
        default=None,
        ge=0.0,
        le=30.0,
        description="Text fidelity (classifier-free guidance scale); the model's recommended "
        "value when unset (7.5 for Stable Diffusion).",
    )
    strength: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="How much of the input image is repainted: 0.75 for image-to-image and "
        "1.0 for inpaint when unset.",
    )
    width: int | None = Field(default=None, description="Output width; model default when unset.")
    height: int | None = Field(default=None, description="Output height; model default when unset.")
    num_images: int = Field(default=1, ge=1, le=MAX_IMAGES)
    scheduler: str | None = Field(default=None, description="Sampler name; the model's own when unset.")
    model: str | None = Field(default=None, max_length=MAX_MODEL_REF_CHARS,
                              description="Model folder, hub id or registered name.")
    loras: list[LoraSpec] = Field(
        default_factory=list, max_length=MAX_LORAS,
        description="LoRAs by name with their weights; merged with <lora:NAME:WEIGHT> tags in the prompt "
        "(the field's weight wins for a name in both).")

    # Inpainting options (the museum's use case).
    mask_source: MaskSource = "auto"
    invert_mask: bool = False
    mask_blur: int = Field(default=4, ge=0, le=MAX_MASK_BLUR, description="Feather radius in pixels.")
    only_masked: bool = Field(
        default=True,
        description="Inpaint a crop around the mask at the model's working size, then paste back.",
    )
    only_masked_padding: int = Field(default=32, ge=0, le=MAX_MASK_PADDING)

    # ControlNet units (core/control.py): each a network by name and its control picture.
    controls: list[ControlUnit] = Field(default_factory=list, max_length=MAX_CONTROL_UNITS)

    # Hires fix (text-to-image): a second pass at a larger size (core/hires.py).
    hires: HiresFix | None = Field(default=None, description="Upscale the first picture and refine it "
                                   "(A1111's hires fix); text-to-image only.")
    vae: str | None = Field(default=None, max_length=MAX_NAME_CHARS,
                            description="A VAE by name (`bildwerk models list --kind vae`) instead of the "
                            "model's own; unset or auto: the model's (or its bildwerk.json's \"vae\").")

    # How the user's words became ``prompt`` (translation, styles, ...), when the prompt
    # pipeline ran; kept with the request so every result can say so.
    prompt_record: PromptRecord | None = None

    # Not from clients either. What the face was sent in its own API's words where a field
    # above holds it translated (the museum's text_fidelity, become guidance), so the record
    # keeps what the user chose, not only what it became.
    origin_inputs: dict[str, OriginValue] = Field(default_factory=dict)
    # What the use case warned about before anything ran (a size far from the model's, the
    # size image-to-image works at): in the record from submission on, and in every result's.
    warnings: list[str] = Field(default_factory=list, max_length=16)

    image: Annotated[Image.Image | None, Field(exclude=True, repr=False)] = None
    mask: Annotated[Image.Image | None, Field(exclude=True, repr=False)] = None

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _strip(cls, v: str) -> str:
        return check_text(v).strip()

    @field_validator("model")
    @classmethod
    def _model_text(cls, v: str | None) -> str | None:
        return v if v is None else check_text(v)

    @field_validator("width", "height")
    @classmethod
    def _side(cls, v: int | None) -> int | None:
        return check_side(v)

    @field_validator("vae")
    @classmethod
    def _vae_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = check_text(v).strip()
        # A1111's sd_vae values for "the checkpoint's own": no override.
        return None if v.lower() in ("", "auto", "automatic", "none") else v

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, v: str | None) -> str | None:
        if v is None:
            return v
        return canonical_sampler_name(v)

    @model_validator(mode="after")
    def _check_mode_inputs(self) -> GenerationRequest:
        if self.seed is None:
            self.seed = draw_seed()
        if self.strength is None:
            self.strength = 1.0 if self.mode is Mode.INPAINT else 0.75
        if self.mode is Mode.TEXT_TO_IMAGE:
            if self.image is not None or self.mask is not None:
                raise ValueError("text-to-image takes no image or mask; use image-to-image or inpaint")
        else:
            if self.image is None:
                raise ValueError(f"{self.mode.value} needs an input image")
            if not isinstance(self.image, Image.Image):
                raise ValueError("image must be a decoded PIL image")
        if self.mode is Mode.INPAINT:
            if self.mask is None:
                raise ValueError("inpaint needs a mask")
            if self.mask.size != self.image.size:
                raise ValueError(
                    f"mask is {self.mask.width}x{self.mask.height} but the image is "
                    f"{self.image.width}x{self.image.height}; they must match"
                )
        elif self.mask is not None:
            raise ValueError("a mask is only used by inpaint")
        if self.hires is not None:
            if self.mode is not Mode.TEXT_TO_IMAGE:
                raise ValueError("hires is for text-to-image (as in A1111); for a larger "
                                 f"{self.mode.value} result set width and height")
            if self.width is not None and self.height is not None:
                hires_sizes(self.width, self.height, self.hires)  # within bounds, else ValueError
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def image_sha256(self) -> str | None:
        return image_sha256(self.image) if self.image is not None else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mask_sha256(self) -> str | None:
        return image_sha256(self.mask) if self.mask is not None else None

    def record(self) -> dict[str, Any]:
        """JSON-safe form for logs, PNG chunks and the store (images as hashes)."""
        return self.model_dump(mode="json")

    def fields(self) -> dict[str, Any]:
        """The fields a request is built from again (``build_request(**fields, image=, mask=)``,
        each control unit given its ``image`` back): JSON-safe, without the images and their
        hashes. Kept in the job store."""
        return self.model_dump(mode="json", exclude={"image_sha256": True, "mask_sha256": True,
                                                     "controls": {"__all__": {"image_sha256"}}})


def build_request(**fields: Any) -> GenerationRequest:
    """Validate fields into a request, turning pydantic's errors into one clear message."""
    try:
        return GenerationRequest(**fields)
    except ValidationError as exc:
        # The ValidationError stays as __cause__: a face may name the fields its own way.
        raise InvalidRequestError(format_validation_error(exc, model=GenerationRequest)) from exc


# pydantic's range checks and the words for their bounds.
_BOUND_WORDS = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
_RANGE_ERRORS = {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}


def _field_bounds(model: type[BaseModel] | None, field: str) -> dict[str, Any]:
    """The ge/gt/le/lt bounds a model declares on a field (annotated_types metadata)."""
    info = model.model_fields.get(field) if model is not None else None
    bounds: dict[str, Any] = {}
    for meta in info.metadata if info is not None else ():
        for key in _BOUND_WORDS:
            if getattr(meta, key, None) is not None:
                bounds[key] = getattr(meta, key)
    return bounds


def _range_text(bounds: dict[str, Any]) -> str:
    if "ge" in bounds and "le" in bounds:
        return f"between {bounds['ge']} and {bounds['le']}"
    return " and ".join(f"{_BOUND_WORDS[k]} {v}" for k, v in bounds.items())


def format_validation_error(exc: ValidationError, *, model: type[BaseModel] | None = None,
                            names: Mapping[str, str] | None = None,
                            prefix: str = "invalid request: ") -> str:
    """One line for all of a validation's errors. A range error names the whole range the
    ``model`` declares ("steps must be between 1 and 150 (got 200)"); ``names`` lets a face
    call a field as its users know it (the CLI: ``--steps``)."""
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "__root__"]
        where = ".".join(loc)
        if names and where in names:
            where = names[where]
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") in _RANGE_ERRORS and loc:
            bounds = _field_bounds(model, loc[0]) or dict(err.get("ctx") or {})
            msg = f"must be {_range_text(bounds)} (got {err.get('input')})"
        if not where:
            parts.append(msg)
        elif msg.startswith("must "):  # our validators' messages read on from the name
            parts.append(f"{where} {msg}")
        else:
            parts.append(f"{where}: {msg}")
    return prefix + "; ".join(parts)
