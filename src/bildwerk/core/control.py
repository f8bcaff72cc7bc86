"""ControlNet units: a control picture, the network that reads it, and how strongly and when.

A request carries up to ``MAX_CONTROL_UNITS`` of them. Like the request's own image, a unit's
picture travels with it but is left out of its JSON form: the record keeps its hash, the job
store keeps it as an input blob (role ``control<i>``) and the worker puts it back. Nothing here
imports torch: the network is found by name (models/assets.py) when the use case checks the
request, and loaded by the engine.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from bildwerk.core.bounds import MAX_NAME_CHARS
from bildwerk.core.hashing import image_sha256
from bildwerk.core.text import check_text

MAX_CONTROL_UNITS = 4
MAX_CONTROL_SCALE = 2.0

# What is done to the control picture before the network sees it (images/control.py):
# "none": it already is a control map (edges, depth, a pose drawing);
# "canny": Canny edges of a photo; "scribble": a user's drawing, made white lines on black;
# "lineart": thin lines from a photo (edges thickened a little), for scribble/lineart networks.
Preprocessor = Literal["none", "canny", "scribble", "lineart"]
PREPROCESSORS: tuple[str, ...] = get_args(Preprocessor)

CONTROL_ROLE_PREFIX = "control"


def control_role(index: int) -> str:
    """The job store's input role of unit ``index``'s picture (``control0``...)."""
    return f"{CONTROL_ROLE_PREFIX}{index}"


def control_index(role: str) -> int | None:
    """The unit index of a ``control<i>`` role; None for other roles (image, mask)."""
    tail = role.removeprefix(CONTROL_ROLE_PREFIX)
    if tail == role or not tail.isdigit():
        return None
    return int(tail)


class ControlUnit(BaseModel):
    """One ControlNet applied to one generation."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: str = Field(min_length=1, max_length=MAX_NAME_CHARS,
                       description="A ControlNet by name (`bildwerk models list --kind controlnet`).")
    preprocessor: Preprocessor = "none"
    low_threshold: int = Field(default=100, ge=0, le=255, description="Canny: the lower edge threshold.")
    high_threshold: int = Field(default=200, ge=0, le=255, description="Canny: the upper edge threshold.")
    scale: float = Field(default=1.0, ge=0.0, le=MAX_CONTROL_SCALE,
                         description="Conditioning scale: how strongly the control picture steers.")
    start: float = Field(default=0.0, ge=0.0, le=1.0, description="Fraction of the steps where it starts.")
    end: float = Field(default=1.0, ge=0.0, le=1.0, description="Fraction of the steps where it stops.")

    image: Annotated[Image.Image | None, Field(exclude=True, repr=False)] = None

    @field_validator("model")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_text(v).strip()

    @model_validator(mode="after")
    def _check(self) -> ControlUnit:
        if self.image is None:
            raise ValueError(f"ControlNet {self.model!r} needs a control image")
        if not isinstance(self.image, Image.Image):
            raise ValueError("a control image must be a decoded PIL image")
        if self.start >= self.end:
            raise ValueError(f"control start ({self.start}) must be below its end ({self.end})")
        if self.low_threshold > self.high_threshold:
            raise ValueError(f"canny low threshold ({self.low_threshold}) must not exceed the high one "
                             f"({self.high_threshold})")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def image_sha256(self) -> str | None:
        return image_sha256(self.image) if self.image is not None else None

    def active(self, index: int, total: int) -> bool:
        """Whether step ``index`` of ``total`` lies in [start, end) of the schedule (as diffusers'
        control_guidance_start/end: a step applies when its fraction is inside the window)."""
        lo, hi = index / total, (index + 1) / total
        return not (lo < self.start or hi > self.end)
