"""REST schemas derived from the vocabulary (core/), not copied from it.

A REST body names every request field as optional (unset: the model's or bildwerk's
default), with the same types, bounds and descriptions as ``GenerationRequest``; images
arrive as base64 or data URLs instead of decoded pictures.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, create_model, model_validator

from bildwerk.core.control import MAX_CONTROL_UNITS, ControlUnit
from bildwerk.core.prompt import PromptOptions
from bildwerk.core.request import GenerationRequest
from bildwerk.core.text import text_problem

MAX_DEPTH = 32  # nesting a body may have (extension fields of A1111 clients included)
# Longer ASCII strings are image data (no text field may hold more; their own bounds say
# so): scanning megabytes of base64 here would hold the event loop for tens of milliseconds.
# ``isascii`` is a fast scan, and ASCII holds no surrogates.
MAX_CHECKED_CHARS = 64 * 1024


def _first_text_problem(value: Any, where: str, depth: int = 0) -> str | None:
    """The first string anywhere in a JSON value (keys too) that is not storable text."""
    if depth > MAX_DEPTH:
        return f"{where or 'body'}: nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        if len(value) > MAX_CHECKED_CHARS and value.isascii():
            return None  # image data: the base64 decoder refuses anything but base64 characters
        problem = text_problem(value)
        return f"{where or 'body'}: {problem}" if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            found = _first_text_problem(key, path, depth + 1) if isinstance(key, str) else None
            found = found or _first_text_problem(item, path, depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _first_text_problem(item, f"{where}[{i}]", depth + 1)
            if found:
                return found
    return None


class StrictBody(BaseModel):
    """A JSON body as clients must send it: types as declared (``"steps": "2"`` or ``true`` is a
    400, not 2 or 1), and every string, wherever it sits, storable text (no NUL or other control
    characters, no unpaired surrogates: they would reach SQLite, PNG chunks and logs)."""

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        problem = _first_text_problem(data, "")
        if problem:
            raise ValueError(problem)
        return data


class PromptOptionsIn(PromptOptions):
    """The prompt options as a REST body: the same fields, strict types."""

    model_config = ConfigDict(extra="forbid", strict=True)

_NOT_FROM_CLIENTS = {"image", "mask", "prompt_record", "origin_inputs", "warnings", "controls"}


def _control_unit_fields() -> dict[str, Any]:
    """A control unit's fields as the request has them (bounds included), but its picture."""
    fields: dict[str, Any] = {}
    for name, info in ControlUnit.model_fields.items():
        if name == "image":
            continue
        base = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation  # type: ignore[valid-type]
        fields[name] = (base, Field(default=info.default if not info.is_required() else ...,
                                    description=info.description))
    return fields


class _ControlUnitBase(StrictBody):
    model_config = ConfigDict(extra="forbid", strict=True)

    image: str = Field(description="The control picture: base64 or a data: URL (a photo for canny and "
                                   "lineart, a drawing for scribble, a ready control map for none).")


ControlUnitIn = create_model(  # type: ignore[call-overload]
    "ControlUnitIn", __base__=_ControlUnitBase, __doc__="One ControlNet: its name, control picture and strength.",
    **_control_unit_fields())


def _optional_request_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in GenerationRequest.model_fields.items():
        if name in _NOT_FROM_CLIENTS:
            continue
        base = info.annotation
        metadata = list(info.metadata)
        if isinstance(base, type) and issubclass(base, Enum):
            metadata.append(Strict(False))  # JSON names an enum by its value ("inpaint")
        annotated = Annotated[base, *metadata] if metadata else base  # type: ignore[valid-type]
        fields[name] = (annotated | None, Field(default=None, description=info.description))
    return fields


class _JobBase(StrictBody):
    model_config = ConfigDict(extra="forbid", strict=True)

    image: str | None = Field(default=None, description="Input image: base64 or a data: URL.")
    mask: str | None = Field(default=None, description="Inpainting mask: white = change, or alpha 0 = change.")
    controls: list[ControlUnitIn] | None = Field(  # type: ignore[valid-type]
        default=None, max_length=MAX_CONTROL_UNITS, description="ControlNet units (docs/models.md).")
    prompt_options: PromptOptionsIn | None = None


JobIn = create_model(  # type: ignore[call-overload]
    "JobIn", __base__=_JobBase, __doc__="A generation. Unset fields take the model's or bildwerk's defaults.",
    **_optional_request_fields())


class _PromptPreviewBase(StrictBody):
    model_config = ConfigDict(extra="forbid", strict=True)

    image: str | None = Field(default=None, description="Input image (base64 or a data: URL), for describe.")
    prompt_options: PromptOptionsIn | None = None


_PREVIEW_FIELDS = ("prompt", "negative_prompt", "model", "mode")
PromptPreviewIn = create_model(  # type: ignore[call-overload]
    "PromptPreviewIn", __base__=_PromptPreviewBase,
    __doc__="A prompt and its options, as a job would have them: the prompt steps without generating.",
    **{k: v for k, v in _optional_request_fields().items() if k in _PREVIEW_FIELDS})


def sent_fields(body: BaseModel, *names: str) -> dict[str, Any]:
    """What a client set of ``names`` in its own API's words (JSON scalars; unset ones left
    out), for the request's ``origin_inputs``: the record keeps them beside the request fields
    they became (A1111's batch_size x n_iter -> num_images, OpenAI's dall-e-2 -> the server's
    model)."""
    sent = {n: getattr(body, n, None) for n in names if n in body.model_fields_set}
    return {k: v for k, v in sent.items() if v is None or isinstance(v, str | int | float | bool)}


def request_fields(body: BaseModel) -> dict[str, Any]:
    """The request fields a client set (images and prompt options apart)."""
    return body.model_dump(exclude={"image", "mask", "prompt_options", "controls"}, exclude_none=True)


# -- image pools ------------------------------------------------------------------------------
def _pool_settings_fields() -> dict[str, Any]:
    """The pool plan's settings with the bounds of what they become: request fields take the
    request's types and bounds, ``translate`` and ``style`` the prompt options'."""
    from bildwerk.pool.plan import PoolSettings

    fields: dict[str, Any] = {}
    request = _optional_request_fields()
    for name, info in PoolSettings.model_fields.items():
        if name in request:
            fields[name] = request[name]
        elif name in PromptOptions.model_fields:
            source = PromptOptions.model_fields[name]
            metadata = list(source.metadata)
            base = source.annotation
            annotated = Annotated[base, *metadata] if metadata else base  # type: ignore[valid-type]
            fields[name] = (annotated | None, Field(default=None, description=info.description or source.description))
        else:
            fields[name] = (info.annotation, Field(default=info.default, description=info.description))
    return fields


class _PoolSettingsBase(StrictBody):
    model_config = ConfigDict(extra="forbid", strict=True)


PoolSettingsIn = create_model(  # type: ignore[call-overload]
    "PoolSettingsIn", __base__=_PoolSettingsBase,
    __doc__="What every image of the pool shares; unset: the model's or bildwerk's defaults.",
    **_pool_settings_fields())


def _pool_in() -> type[StrictBody]:
    from bildwerk.core.bounds import MAX_NAME_CHARS, MAX_SEED
    from bildwerk.pool.plan import MAX_KINDS, MAX_POOL_IMAGES

    Share = Annotated[float, Field(gt=0, allow_inf_nan=False)]
    KindName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]

    class PoolIn(StrictBody):
        """A new pool: from a topic (the planner writes the plan: an LLM, or offline from its
        templates) or from a plan (as GET /pools/{id}/plan answers it, or `bildwerk pool plan`
        writes it). The pool starts as a draft: review and edit the plan, then start it."""

        model_config = ConfigDict(extra="forbid", strict=True)

        topic: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS,
                                  description="What the pool is about, in any language.")
        images: int | None = Field(default=None, ge=1, le=MAX_POOL_IMAGES,
                                   description="How many accepted images the pool should have (planner: 600).")
        mix: dict[KindName, Share] | str | None = Field(
            default=None, description="Kinds and their shares: {\"interiors\": 60, ...} or "
                                      "\"interiors=60,exteriors=20,items=20\".")
        language: str | None = Field(default=None, min_length=1, max_length=16,
                                     description="The language to write the plan in (default: the topic's).")
        llm: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS,
                                description="The planner's LLM backend (local, openai, openai:MODEL).")
        offline: bool | None = Field(default=None, description="Plan from the template grammar, without an LLM.")
        seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="The planner's seed.")
        name: str | None = Field(default=None, min_length=1, max_length=64,
                                 description="The pool's name (a slug); default: from the topic.")
        settings: PoolSettingsIn | None = None  # type: ignore[valid-type]
        plan: dict[str, Any] | None = Field(default=None, description="A whole plan instead of a topic.")

        @model_validator(mode="after")
        def _one_source(self) -> PoolIn:
            if (self.topic is None) == (self.plan is None):
                raise ValueError("send either a topic (the planner writes the plan) or a plan")
            if self.plan is not None:
                extra = [k for k in ("images", "mix", "language", "llm", "offline", "seed", "name", "settings")
                         if getattr(self, k) is not None]
                if extra:
                    raise ValueError(f"{', '.join(extra)}: only with a topic; a plan carries its own")
            if isinstance(self.mix, dict) and len(self.mix) > MAX_KINDS:
                raise ValueError(f"mix: at most {MAX_KINDS} kinds")
            return self

    return PoolIn


PoolIn = _pool_in()


def _shared_node(value: Any) -> str | None:
    """Where a YAML alias makes a node appear twice (``&a``/``*a``): walking such a document
    can take exponential time (a "billion laughs"), so a plan may not have any."""
    seen: set[int] = set()
    todo: list[tuple[Any, str, int]] = [(value, "", 0)]
    while todo:
        node, where, depth = todo.pop()
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                return where or "plan"
            seen.add(id(node))
            if depth >= MAX_DEPTH:
                return None  # the text check reports the depth
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, item in items:
                todo.append((item, f"{where}.{key}" if where else str(key), depth + 1))
    return None


def plan_from_data(data: Any, where: str = "plan") -> Any:
    """A plan from a JSON or YAML body: storable text everywhere, strict types (``"images":
    "6"`` is a 400, not 6), every field validated; one 400 naming the first wrong field."""
    from pydantic import ValidationError

    from bildwerk.core.errors import InvalidRequestError
    from bildwerk.pool.plan import PoolPlan

    if not isinstance(data, dict):
        raise InvalidRequestError(f"{where}: a plan is a mapping with pool, topic, images and kinds")
    shared = _shared_node(data)
    if shared is not None:
        raise InvalidRequestError(f"{where}: {shared}: YAML anchors and aliases are not accepted in a plan")
    problem = _first_text_problem(data, where)
    if problem:
        raise InvalidRequestError(problem)
    try:
        return PoolPlan.model_validate(data, strict=True)
    except ValidationError as exc:
        errors = exc.errors()
        loc = ".".join(str(p) for p in errors[0]["loc"])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        msg = str(errors[0]["msg"]).removeprefix("Value error, ")
        raise InvalidRequestError(f"{where}: {loc}: {msg}{more}" if loc else f"{where}: {msg}{more}") from None


YAML_TYPES = ("application/yaml", "text/yaml", "application/x-yaml", "text/x-yaml")


def plan_from_body(body: bytes, content_type: str | None) -> Any:
    """A plan sent as JSON (application/json) or YAML (application/yaml, text/yaml)."""
    import json

    import yaml

    from bildwerk.core.errors import InvalidRequestError

    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in ("application/json", *YAML_TYPES):
        raise InvalidRequestError("send the plan as JSON (application/json) or YAML (application/yaml or "
                                  f"text/yaml), not {media[:80] or 'no content type'!r}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError("the plan is not UTF-8 text") from None
    try:
        if media == "application/json":
            data = json.loads(text, parse_constant=no_json_constant)
        else:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except (ValueError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        kind = "JSON" if media == "application/json" else "YAML"
        raise InvalidRequestError(f"the plan is not valid {kind}{at}: {str(exc).splitlines()[0][:200]}") from None
    except RecursionError:
        raise InvalidRequestError(f"the plan is nested deeper than {MAX_DEPTH} levels") from None
    return plan_from_data(data)


def no_json_constant(name: str) -> Any:
    """``json.loads(parse_constant=...)``: NaN and Infinity are not JSON numbers."""
    raise ValueError(f"{name} is not a JSON number")
