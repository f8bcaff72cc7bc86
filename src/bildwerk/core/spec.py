"""The job spec: everything one generation needs, from whichever face it came.

A face (the CLI, a REST surface, the Python API, a pool) turns its own vocabulary into a
``JobSpec``: the validated request (with its input images and its seed, drawn once), the
prompt steps to run, and where it came from. The use case (app/generate.py) turns a spec into
results; the job store keeps a spec's JSON form (``stored()``) and the worker rebuilds it
(``from_stored``) without drawing anything again.
"""

from __future__ import annotations

from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from bildwerk.core.control import control_role
from bildwerk.core.prompt import PromptOptions
from bildwerk.core.refs import reference_kind
from bildwerk.core.request import GenerationRequest, build_request

Origin = Literal["cli", "python", "demo", "native", "a1111", "openai", "museum", "pool", "eval", "train"]


class JobSpec(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", frozen=True)

    request: GenerationRequest
    options: PromptOptions = Field(default_factory=PromptOptions)
    origin: Origin = "python"

    @classmethod
    def build(cls, *, origin: Origin = "python", options: PromptOptions | None = None,
              image: Image.Image | None = None, mask: Image.Image | None = None,
              **fields: Any) -> JobSpec:
        """Validate request fields (one clear InvalidRequestError) into a spec; unset fields
        (None) take their defaults, an unset seed is drawn here, once."""
        fields = {k: v for k, v in fields.items() if v is not None}
        request = build_request(**fields, image=image, mask=mask)
        return cls(request=request, options=options or PromptOptions(), origin=origin)

    @property
    def engine_kind(self) -> str:
        """Which kind of engine serves it: ``local`` or a remote kind (core/refs.py)."""
        return reference_kind(self.request.model)

    @property
    def prompt_options(self) -> PromptOptions:
        """The prompt options seeded by the request's seed unless they name their own, so one
        recorded seed reproduces both the prompt steps (wildcards, LLM) and the image."""
        if "seed" in self.options.model_fields_set:
            return self.options
        return self.options.model_copy(update={"seed": int(self.request.seed or 0)})

    def stored(self) -> dict[str, Any]:
        """The JSON-safe request fields and prompt options the job store keeps (images apart)."""
        return {"request": self.request.fields(),
                "options": self.options.model_dump(mode="json", exclude_unset=True)}

    def inputs(self) -> dict[str, Image.Image]:
        """The pictures the job store keeps apart, by role: image, mask, control0, ..."""
        req = self.request
        out = {role: im for role, im in (("image", req.image), ("mask", req.mask)) if im is not None}
        out.update({control_role(i): u.image for i, u in enumerate(req.controls) if u.image is not None})
        return out

    @classmethod
    def from_stored(cls, request: dict[str, Any], options: dict[str, Any] | None, *, origin: Origin,
                    image: Image.Image | None = None, mask: Image.Image | None = None,
                    **controls: Image.Image) -> JobSpec:
        """The spec again from ``stored()`` and its pictures by role (``inputs()``); each control
        unit gets its ``control<i>`` picture back."""
        fields = {k: v for k, v in request.items() if v is not None}
        units = fields.get("controls") or []
        if units:
            fields["controls"] = [{**u, "image": controls.get(control_role(i))} for i, u in enumerate(units)]
        req = build_request(**fields, image=image, mask=mask)
        return cls(request=req, options=PromptOptions(**(options or {})), origin=origin)
