"""Hires fix: make the picture at the model's size, upscale it, then refine it at the larger size.

A1111's "hires fix" in bildwerk's words (torch-free, so every face and the request share it):
``HiresFix`` is what a request asks for (a scale or a target size, the upscaler, the second
pass's strength and steps, optionally its own prompt), ``hires_sizes`` the sizes both passes
work at, checked against the request bounds before anything is allocated.

Upscalers: the latent ones interpolate the first pass's latents (A1111's "Latent" family,
mapped to torch's modes); ``lanczos`` and ``nearest`` decode the first picture, resize it with
Pillow and encode it again. Upscalers that need a model of their own (ESRGAN, SwinIR, ...) are
refused with the list of those that work: bildwerk ships none of their weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bildwerk.core.bounds import (
    MAX_PROMPT_CHARS,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    SIDE_MULTIPLE,
    check_side,
)
from bildwerk.core.text import check_text

Upscaler = Literal["latent", "latent-antialiased", "latent-bicubic", "latent-bicubic-antialiased",
                   "latent-nearest", "latent-nearest-exact", "lanczos", "nearest"]

# A1111's names (what /sdapi/v1/upscalers and /latent-upscale-modes list) -> ours.
A1111_UPSCALERS: dict[str, Upscaler] = {
    "Latent": "latent",
    "Latent (antialiased)": "latent-antialiased",
    "Latent (bicubic)": "latent-bicubic",
    "Latent (bicubic antialiased)": "latent-bicubic-antialiased",
    "Latent (nearest)": "latent-nearest",
    "Latent (nearest-exact)": "latent-nearest-exact",
    "Lanczos": "lanczos",
    "Nearest": "nearest",
}
UPSCALERS: tuple[Upscaler, ...] = tuple(dict.fromkeys(A1111_UPSCALERS.values()))

# torch.nn.functional.interpolate's mode and antialias per latent upscaler.
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "latent": ("bilinear", False),
    "latent-antialiased": ("bilinear", True),
    "latent-bicubic": ("bicubic", False),
    "latent-bicubic-antialiased": ("bicubic", True),
    "latent-nearest": ("nearest", False),
    "latent-nearest-exact": ("nearest-exact", False),
}

DEFAULT_SCALE = 2.0  # A1111's
DEFAULT_STRENGTH = 0.7  # A1111's interface default (its API's is 0.75: the A1111 face keeps that)
MAX_SCALE = 4.0


def canonical_upscaler(name: str) -> Upscaler:
    """Our name for an upscaler named ours or A1111's way (case and spaces do not matter)."""
    key = " ".join(name.split()).lower()
    for a1111, ours in A1111_UPSCALERS.items():
        if key in (a1111.lower(), ours):
            return ours
    if key == "":
        return "latent"  # no upscaler named: A1111's default
    if key == "none":
        return "lanczos"  # A1111's "None" resizes the picture with Lanczos
    shown = name if len(name) <= 60 else name[:60] + "..."
    raise ValueError(
        f"upscaler {shown!r} is not available: bildwerk has {', '.join(UPSCALERS)} "
        f"(A1111's {', '.join(repr(k) for k in A1111_UPSCALERS)}); upscalers with weights of their own "
        "(ESRGAN, SwinIR, ...) are not shipped")


def a1111_upscaler_name(upscaler: str) -> str:
    """A1111's name for one of ours (what its infotext and /sdapi/v1/upscalers say)."""
    return next((k for k, v in A1111_UPSCALERS.items() if v == upscaler), upscaler)


class HiresFix(BaseModel):
    """The second pass of a text-to-image request: upscale, add noise, denoise again. Strict
    types (``"steps": "3"`` is refused) as the REST bodies it is part of."""

    model_config = ConfigDict(extra="forbid", strict=True)

    scale: float | None = Field(default=None, gt=1.0, le=MAX_SCALE,
                                description=f"Upscale factor of the first picture ({DEFAULT_SCALE} when "
                                            "neither scale nor width/height is set).")
    width: int | None = Field(default=None, description="Final width instead of a scale (the height "
                                                        "follows the aspect unless set too).")
    height: int | None = Field(default=None, description="Final height instead of a scale.")
    upscaler: Upscaler = Field(default="latent", description="latent (and its bicubic, antialiased and "
                               "nearest variants), lanczos or nearest; A1111's names are accepted too.")
    strength: float = Field(default=DEFAULT_STRENGTH, gt=0.0, le=1.0,
                            description="How much the second pass repaints (A1111's denoising_strength).")
    steps: int = Field(default=0, ge=0, le=MAX_STEPS,
                       description="The second pass's schedule length; 0: the request's steps. As in "
                                   "image-to-image, about steps x strength of them run.")
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS,
                               description="The second pass's prompt, used as written; unset: the request's.")
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)

    @field_validator("upscaler", mode="before")
    @classmethod
    def _upscaler(cls, v: object) -> object:
        return canonical_upscaler(v) if isinstance(v, str) else v

    @field_validator("width", "height")
    @classmethod
    def _side(cls, v: int | None) -> int | None:
        return check_side(v)

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return v if v is None else check_text(v).strip()

    @model_validator(mode="after")
    def _scale_or_size(self) -> HiresFix:
        if self.scale is not None and (self.width is not None or self.height is not None):
            raise ValueError("give hires either a scale or a width/height, not both")
        return self

    @property
    def is_latent(self) -> bool:
        return self.upscaler in LATENT_MODES


@dataclass(frozen=True)
class HiresSizes:
    first: tuple[int, int]  # the first pass's picture
    upscaled: tuple[int, int]  # what the first picture is upscaled to (covers ``final``)
    final: tuple[int, int]  # the second pass's picture, the result

    @property
    def crop(self) -> tuple[int, int]:
        """Pixels cut from the upscaled picture (width, height), half on each side."""
        return self.upscaled[0] - self.final[0], self.upscaled[1] - self.final[1]


def _down(v: float) -> int:
    return int(v) // SIDE_MULTIPLE * SIDE_MULTIPLE


def hires_sizes(width: int, height: int, hires: HiresFix) -> HiresSizes:
    """Both passes' sizes, as A1111 computes them: the first size times the scale, or the
    target width/height (one given: the other from the aspect; both: upscaled to cover them and
    centre-cropped), rounded down to multiples of 8. ValueError when the result leaves the
    request bounds, so the request fails before anything is allocated."""
    tw, th = hires.width, hires.height
    if tw is None and th is None:
        scale = hires.scale or DEFAULT_SCALE
        up = final = (_down(width * scale), _down(height * scale))
    elif th is None:
        assert tw is not None
        up = final = (tw, _down(tw * height / width))
    elif tw is None:
        up = final = (_down(th * width / height), th)
    else:
        # Cover the target at the first picture's aspect, then cut the overhang.
        if width / height < tw / th:
            up = (tw, max(th, -(-tw * height // width)))
        else:
            up = (max(tw, -(-th * width // height)), th)
        up = (-(-up[0] // SIDE_MULTIPLE) * SIDE_MULTIPLE, -(-up[1] // SIDE_MULTIPLE) * SIDE_MULTIPLE)
        final = (tw, th)
    for side in (*up, *final):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise ValueError(
                f"hires makes {width}x{height} into {final[0]}x{final[1]}"
                + (f" (upscaled to {up[0]}x{up[1]} first)" if up != final else "")
                + f", outside {MIN_SIDE}-{MAX_SIDE} pixels a side; choose a smaller scale or size")
    return HiresSizes(first=(width, height), upscaled=up, final=final)


def second_pass_steps(hires: HiresFix, steps: int) -> int:
    """The second pass's schedule length: its own, else the request's (A1111's 0)."""
    return hires.steps or steps
