"""The OpenAPI document, corrected to say what the server really answers.

FastAPI's generated document assumes its own conventions: a 422 for every validation
failure, JSON for every answer, no bounds where a validator (not a type) enforces them.
bildwerk answers 400 with its one error shape, streams PNGs, zips, Prometheus text and
server-sent events, and checks sizes in ``GenerationRequest``. ``install`` swaps
``app.openapi`` for a version that corrects FastAPI's document from the table below, so
routes stay plain and every operation is described in one place.

Which error statuses an operation lists follows from what it does (``OPERATIONS``) and from
the guards every request passes (``_guard_statuses``): 401 with an API key, 403 for a
state-changing request from a foreign Origin, 413 for an oversized body, 500 always.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI
from PIL import Image, ImageDraw
from pydantic import BaseModel

from bildwerk.core.bounds import MAX_NAME_CHARS
from bildwerk.core.request import MAX_SEED, MAX_SIDE, MIN_SIDE, SIDE_MULTIPLE
from bildwerk.jobs.sqlite.pools import POOL_ID_RE
from bildwerk.jobs.sqlite.rows import STATUSES
from bildwerk.jobs.sqlite.state import _JOB_ID_RE
from bildwerk.server.errors import JOB_HEADER
from bildwerk.server.routes_native import _SHA
from bildwerk.server.security import UNSAFE_METHODS, is_public


class ErrorInfo(BaseModel):
    code: str
    message: str
    type: Literal["invalid_request_error", "server_error"]


class Error(BaseModel):
    """Every failure on every surface (the shape OpenAI's SDK reads)."""

    error: ErrorInfo


ERROR_REF = {"$ref": "#/components/schemas/Error"}

# What each error status means here; an operation lists those it can answer.
ERRORS: dict[int, str] = {
    400: "Invalid request (`invalid_request`: bounds, types, unknown names) or image (`invalid_image`).",
    401: "No or a wrong API key (`Authorization: Bearer KEY` or `X-API-Key: KEY`, or a browser's session cookie).",
    403: "A state-changing request from a web page of another origin (`forbidden_origin`), or model "
         "management on a server started without --allow-model-admin (`model_admin_off`).",
    404: "No such job, image, model or pool (or pool picture, sheet or report).",
    409: "The job is in the wrong state (not ended yet; cancelled while waited for), or the pool "
         "(`pool_state`: starting a running pool, editing the plan of a running one).",
    413: "The request body is over the server's limit (`too_large`).",
    429: "The queue is full (`queue_full`, with Retry-After), the remote service rate-limits, or too many "
         "wrong keys at login (`rate_limited`).",
    500: "An unexpected error (`internal`) or a job interrupted too often; details in the server log.",
    502: "A remote service or prompt backend failed (`remote_error`, `remote_auth`, `prompt_backend`, `prompt_answer_rejected`).",
    503: "Out of memory while generating (`out_of_memory`), or the server is stopping (`shutting_down`).",
    504: "The job did not end within the sync timeout (`job_timeout`, the job id to follow) "
         "or the remote service timed out (`remote_timeout`).",
}
RETRY_AFTER = {"description": "Seconds to wait before retrying (sent when the queue is full).",
               "schema": {"type": "integer", "minimum": 1}}

# Operations that build a job: bounds and images (400), an unknown model (404), a full queue.
SUBMITS = frozenset({400, 404, 429})
# ... and wait for its end, which may be any job failure: cancelled (409), remote or prompt
# backend failures (429, 502, 504), out of memory (503), the sync timeout (504).
WAITS = SUBMITS | {409, 502, 503, 504}

TEXT = {"type": "string"}
BINARY = {"type": "string", "format": "binary"}
# Open API 3.1: the schema of an event stream describes one event.
EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"type": "string", "enum": ["progress", "end"]},
    "data": {"type": "string", "contentMediaType": "application/json",
             "description": "progress: id, status, phase, step, total, fraction, elapsed, queue_position (and, with ?preview=true, now and then preview: a JPEG data: URL); "
                            "end: id, status, error (null or code and message)."}}}


# The pools' event stream (routes_pools.py).
POOL_EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"type": "string", "enum": ["status", "progress", "end", "stopping"]},
    "data": {"type": "string", "contentMediaType": "application/json",
             "description": "status: id, status, active, target, planned, accepted, rejected, failed, kinds "
                            "(and, on a change, the new status alone); progress: a run's start, each picture "
                            "(item, status, reason) and end (outcome), with target, accepted, counts per kind, "
                            "made, elapsed; end: id, status, error; stopping: id, status, message."}}}


@dataclass(frozen=True)
class Op:
    errors: frozenset[int] = frozenset()
    media: str | None = None  # the success answer's media type when it is not JSON
    schema: dict[str, Any] = field(default_factory=lambda: BINARY)
    also: dict[str, dict[str, Any]] = field(default_factory=dict)  # other media types of the success answer
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)
    other: dict[int, dict[str, Any]] = field(default_factory=dict)  # answers of their own shape
    with_key: frozenset[int] = frozenset()  # answered only by a server with an API key


def _status_view(*required: str) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": {k: TEXT for k in required}}


# A synchronous call's job: on its image answer (and on its error answers, see server/errors.py).
_JOB = {JOB_HEADER: {"description": "The job in the history.", "required": True, "schema": TEXT}}
_SUBMITTED = {"Location": {"description": "The job's URL.", "required": True, "schema": TEXT}, **_JOB}

OPERATIONS: dict[tuple[str, str], Op] = {
    ("get", "/health"): Op(),
    ("get", "/ready"): Op(other={503: {
        "description": "Not ready yet (warming up) or the worker stopped.",
        "content": {"application/json": {"schema": _status_view("status", "reason")}}}}),
    ("get", "/metrics"): Op(media="text/plain", schema=TEXT),  # Prometheus text exposition
    ("post", "/api/v1/jobs"): Op(SUBMITS, headers=_SUBMITTED),
    ("get", "/api/v1/jobs"): Op(frozenset({400})),
    ("get", "/api/v1/jobs/{job_id}"): Op(frozenset({404})),
    ("delete", "/api/v1/jobs/{job_id}"): Op(frozenset({404, 409})),
    ("post", "/api/v1/jobs/{job_id}/cancel"): Op(frozenset({404})),
    ("get", "/api/v1/jobs/{job_id}/events"): Op(frozenset({404}), media="text/event-stream", schema=EVENT),
    ("get", "/api/v1/jobs/{job_id}/images/{index}"): Op(frozenset({404}), media="image/png"),
    ("get", "/api/v1/images/{sha256}"): Op(frozenset({400, 404}), media="image/png"),
    ("get", "/api/v1/export"): Op(frozenset({400, 404}), media="application/zip"),
    ("get", "/api/v1/models"): Op(),
    # Model management (routes_models.py): refused (403) unless the server allows it; an upload
    # or hub model is checked (400), a name may be taken (409), a hub model not found (404).
    ("post", "/api/v1/models"): Op(frozenset({400, 404, 409})),
    ("post", "/api/v1/model-uploads"): Op(frozenset({400, 409})),
    ("get", "/api/v1/models/{name}"): Op(frozenset({400, 404})),
    ("delete", "/api/v1/models/{name}"): Op(frozenset({400, 404})),
    ("put", "/api/v1/default-model"): Op(frozenset({400, 404})),
    ("post", "/api/v1/uploads"): Op(SUBMITS, headers=_SUBMITTED),
    ("get", "/api/v1/styles"): Op(),
    ("get", "/api/v1/samplers"): Op(),
    # The prompt steps may ask an LLM or a remote describer (502).
    ("post", "/api/v1/prompt"): Op(frozenset({400, 404, 502})),
    # Browser login (routes_session.py): a wrong key is a 401, too many of them a 429.
    ("get", "/api/v1/session"): Op(),
    ("post", "/api/v1/session"): Op(frozenset({400}), with_key=frozenset({401, 429})),
    ("delete", "/api/v1/session"): Op(),
    # Image pools (routes_pools.py): a plan is checked like a job (400, an unknown model 404);
    # planning from a topic may ask an LLM (502); starting while the server stops is a 503.
    ("post", "/api/v1/pools"): Op(frozenset({400, 404, 502}), headers={"Location": {
        "description": "The pool's URL.", "required": True, "schema": TEXT}}),
    ("get", "/api/v1/pools"): Op(frozenset({400})),
    ("get", "/api/v1/pools/{pool_id}"): Op(frozenset({404})),
    ("get", "/api/v1/pools/{pool_id}/plan"): Op(frozenset({400, 404}), also={"application/yaml": {"schema": TEXT}}),
    ("put", "/api/v1/pools/{pool_id}/plan"): Op(frozenset({400, 404, 409})),
    ("post", "/api/v1/pools/{pool_id}/start"): Op(frozenset({400, 404, 409, 503})),
    ("post", "/api/v1/pools/{pool_id}/pause"): Op(frozenset({404, 409})),
    ("post", "/api/v1/pools/{pool_id}/resume"): Op(frozenset({400, 404, 409, 503})),
    ("post", "/api/v1/pools/{pool_id}/cancel"): Op(frozenset({404, 409})),
    ("get", "/api/v1/pools/{pool_id}/events"): Op(frozenset({404}), media="text/event-stream", schema=POOL_EVENT),
    ("get", "/api/v1/pools/{pool_id}/images"): Op(frozenset({400, 404})),
    ("get", "/api/v1/pools/{pool_id}/images/{item_id}"): Op(frozenset({404}), media="image/png"),
    ("get", "/api/v1/pools/{pool_id}/sheets/{kind}.png"): Op(frozenset({404}), media="image/png"),
    ("get", "/api/v1/pools/{pool_id}/report"): Op(frozenset({404})),
    ("get", "/api/v1/pools/{pool_id}/export"): Op(frozenset({400, 404}), media="application/zip"),
    ("post", "/sdapi/v1/txt2img"): Op(WAITS, headers=_JOB),
    ("post", "/sdapi/v1/img2img"): Op(WAITS, headers=_JOB),
    ("get", "/sdapi/v1/progress"): Op(),
    ("post", "/sdapi/v1/interrupt"): Op(),
    ("post", "/sdapi/v1/png-info"): Op(frozenset({400})),
    ("post", "/sdapi/v1/interrogate"): Op(frozenset({400, 502})),  # a remote describer may fail
    ("get", "/sdapi/v1/sd-models"): Op(),
    ("post", "/sdapi/v1/refresh-checkpoints"): Op(),
    ("get", "/sdapi/v1/sd-vae"): Op(),
    ("get", "/sdapi/v1/loras"): Op(),
    ("post", "/sdapi/v1/refresh-loras"): Op(),
    ("get", "/sdapi/v1/embeddings"): Op(),
    ("get", "/sdapi/v1/samplers"): Op(),
    ("get", "/sdapi/v1/schedulers"): Op(),
    ("get", "/sdapi/v1/upscalers"): Op(),
    ("get", "/sdapi/v1/latent-upscale-modes"): Op(),
    ("get", "/sdapi/v1/options"): Op(),
    ("post", "/sdapi/v1/options"): Op(frozenset({400, 404})),
    ("get", "/controlnet/model_list"): Op(),
    ("get", "/controlnet/module_list"): Op(),
    ("post", "/controlnet/detect"): Op(frozenset({400})),
    ("post", "/v1/images/generations"): Op(WAITS, headers=_JOB),
    ("post", "/v1/images/edits"): Op(WAITS, headers=_JOB),
    ("post", "/v1/images/variations"): Op(WAITS, headers=_JOB),
    ("post", "/api/v1/museum/inpaint"): Op(WAITS, media="image/png", headers=_JOB),
}

# Path parameters: what the server accepts (anything else is a 400 or a 404).
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "job_id": {"type": "string", "pattern": f"^{_JOB_ID_RE.pattern}$"},
    "sha256": {"type": "string", "pattern": _SHA.pattern},
    "index": {"type": "integer", "minimum": 0},
    "pool_id": {"type": "string", "pattern": f"^{POOL_ID_RE.pattern}$"},
    "item_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},  # pool/plan.py item_id
    "kind": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
    "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},  # a listed model's name
}
QUERY_PARAMETERS: dict[tuple[str, str], dict[str, Any]] = {
    ("/api/v1/jobs", "status"): {"type": "string", "enum": list(STATUSES)},
}

# Request fields are checked by ``GenerationRequest``; ``JobIn`` carries their bounds (but
# not the picture sides, which a validator checks). Other surfaces' body fields become request
# fields under their own names: each takes the bounds of the request field it becomes.
SIDE = {"minimum": MIN_SIDE, "maximum": MAX_SIDE, "multipleOf": SIDE_MULTIPLE}
_A1111 = {"prompt": "prompt", "negative_prompt": "negative_prompt", "steps": "steps",
          "cfg_scale": "guidance", "width": "width", "height": "height",
          "batch_size": "num_images", "n_iter": "num_images",
          "seed": {"minimum": -1, "maximum": MAX_SEED}}  # -1: a random seed, as in A1111
BODY_FIELDS: dict[str, dict[str, str | dict[str, Any]]] = {
    "JobIn": {"width": SIDE, "height": SIDE},
    "PoolSettingsIn": {"width": SIDE, "height": SIDE},
    "Txt2ImgIn": _A1111,
    "Img2ImgIn": {**_A1111, "denoising_strength": "strength", "mask_blur": "mask_blur",
                  "inpaint_full_res_padding": "only_masked_padding"},
    "GenerationsIn": {"prompt": "prompt", "n": "num_images", "seed": "seed"},
    "Body_edits_v1_images_edits_post": {"prompt": "prompt", "n": "num_images"},
    "Body_variations_v1_images_variations_post": {"n": "num_images"},
    "MuseumInpaintIn": {"model": "model", "steps": "steps", "seed": "seed", "mask_blur": "mask_blur",
                        "padding": "only_masked_padding"},
}
_NUMERIC = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_STRING = ("minLength", "maxLength", "pattern")


def _png_base64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def request_examples() -> dict[tuple[str, str], dict[str, Any]]:
    """Request bodies that work, per operation: for readers, and seeds for a fuzzer."""
    picture = Image.new("RGB", (64, 64), (40, 90, 160))
    ImageDraw.Draw(picture).rectangle((0, 40, 63, 63), fill=(90, 150, 60))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 39), fill=255)  # white: repaint
    image, mask_b64 = _png_base64(picture), _png_base64(mask)
    data_url = "data:image/png;base64,"
    # A small pool: two kinds, three pictures at 64 x 64, gates off.
    pool_plan = {"pool": "bahnhof", "topic": "Bahnhof", "language": "de", "images": 3, "kinds": [
        {"kind": "interiors", "share": 60, "images": 2, "locations": [{"name": "Bahnhofshalle", "english": "station hall",
         "prompts": [{"prompt": "a station hall, morning light", "seed": 1, "images": 2}]}]},
        {"kind": "exteriors", "share": 40, "images": 1, "locations": [{"name": "Vorplatz", "english": "station square",
         "prompts": [{"prompt": "a station square in the rain", "seed": 7, "images": 1}]}]}],
        "settings": {"width": 64, "height": 64, "steps": 2}, "gates": {"nsfw": False, "dedupe": False}}
    return {
        ("post", "/api/v1/jobs"): {
            "text-to-image": {"prompt": "ein See zwischen Hochhäusern", "seed": 1, "steps": 20},
            "inpaint": {"mode": "inpaint", "prompt": "a lake", "image": data_url + image,
                        "mask": data_url + mask_b64, "seed": 1}},
        ("post", "/sdapi/v1/txt2img"): {
            "txt2img": {"prompt": "a lake between towers", "steps": 20, "seed": 1, "sampler_name": "Euler a"}},
        ("post", "/sdapi/v1/img2img"): {
            "inpaint": {"prompt": "a lake", "init_images": [image], "mask": mask_b64, "denoising_strength": 0.75}},
        ("post", "/sdapi/v1/png-info"): {"png": {"image": image}},
        ("post", "/sdapi/v1/interrogate"): {"png": {"image": image}},
        ("post", "/v1/images/generations"): {"generation": {"prompt": "a lake", "response_format": "b64_json"}},
        ("post", "/api/v1/museum/inpaint"): {
            "inpaint": {"image": data_url + image, "mask": data_url + mask_b64, "prompt": "ein See"}},
        ("post", "/api/v1/pools"): {"plan": {"plan": pool_plan}},
        ("put", "/api/v1/pools/{pool_id}/plan"): {"plan": pool_plan},
    }


def install(app: FastAPI) -> None:
    """Serve the corrected document at /openapi.json (and in /docs)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            draft = generate()
            app.openapi_schema = None  # FastAPI cached its draft; keep only the corrected one
            app.openapi_schema = describe(draft, api_key=bool(app.state.bildwerk.settings.api_key))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe(doc: dict[str, Any], *, api_key: bool) -> dict[str, Any]:
    """Correct FastAPI's document in place (and return it)."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 shapes, never sent
        schemas.pop(name, None)
    error = Error.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error.pop("$defs"))
    schemas["Error"] = error
    if api_key:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    _bound_bodies(schemas)
    _plan_schemas(schemas)
    examples = request_examples()
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            _describe_operation(path, method, operation, OPERATIONS.get((method, path), Op()), api_key)
            for content in operation.get("requestBody", {}).get("content", {}).values():
                if (method, path) in examples:
                    content["examples"] = {name: {"value": body}
                                           for name, body in examples[(method, path)].items()}
    return doc


def _describe_operation(path: str, method: str, operation: dict[str, Any], op: Op, api_key: bool) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    success = next((s for s in responses if s.startswith("2")), "200")
    answer = responses.setdefault(success, {"description": "Successful Response"})
    if success == "204":
        answer.pop("content", None)
    elif op.media is not None:
        answer["content"] = {op.media: {"schema": op.schema}}
    if op.also:
        answer.setdefault("content", {}).update(op.also)
    if op.headers:
        answer["headers"] = op.headers
    # Before the parameters' bounds are added: FastAPI's 400s come from its own schemas.
    statuses = set(op.errors) | (op.with_key if api_key else set()) | _guard_statuses(path, method, operation, api_key)
    for param in operation.get("parameters", []):
        extra = PATH_PARAMETERS.get(param["name"]) if param["in"] == "path" else \
            QUERY_PARAMETERS.get((path, param["name"]))
        if extra:  # replaces FastAPI's schema (``str | None`` is an anyOf; a query has no null)
            param["schema"] = {"title": param.get("schema", {}).get("title", param["name"]), **extra}
    for status in sorted(statuses):
        error = {"description": ERRORS[status], "content": {"application/json": {"schema": ERROR_REF}}}
        if status == 429:
            error["headers"] = {"Retry-After": RETRY_AFTER}
        responses[str(status)] = error
    responses.update({str(s): r for s, r in op.other.items()})
    if api_key and not is_public(path):
        operation["security"] = [{"bearer": []}, {"apiKey": []}]


def _guard_statuses(path: str, method: str, operation: dict[str, Any], api_key: bool) -> set[int]:
    statuses = {500}
    if "requestBody" in operation or any(_typed(p["schema"]) for p in operation.get("parameters", [])):
        statuses.add(400)  # a body, or a parameter that is more than any text, can be invalid
    if "requestBody" in operation:
        statuses.add(413)
    if method.upper() in UNSAFE_METHODS:
        statuses.add(403)
    if api_key and not is_public(path):
        statuses.add(401)
    return statuses


def _typed(schema: dict[str, Any]) -> bool:
    """Whether a parameter's value can fail validation (a number, an enum, bounds, a pattern)."""
    return any(b.get("type") not in ("string", "null", None) or "enum" in b
               or any(k in b for k in _NUMERIC + _STRING) for b in _branches(schema))


def _bound_bodies(schemas: dict[str, Any]) -> None:
    request = schemas["JobIn"]["properties"]
    for name, fields in BODY_FIELDS.items():
        properties = schemas[name]["properties"]
        for prop, source in fields.items():
            bounds = source if isinstance(source, dict) else _bounds(request[source])
            _constrain(properties[prop], bounds)


def _plan_schemas(schemas: dict[str, Any]) -> None:
    """The pool plan (PUT .../plan takes it; POST /pools takes it as ``plan``), and the bounds
    its settings get from the request fields they become."""
    from bildwerk.pool.plan import PoolPlan

    plan = PoolPlan.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(plan.pop("$defs", {}))
    schemas["PoolPlan"] = plan
    settings, source = schemas["PoolSettings"]["properties"], schemas["PoolSettingsIn"]["properties"]
    for name, prop in settings.items():
        if name in source:
            _constrain(prop, _bounds(source[name]))
    if "PoolIn" in schemas:
        schemas["PoolIn"]["properties"]["plan"] = {"anyOf": [{"$ref": "#/components/schemas/PoolPlan"},
                                                             {"type": "null"}],
                                                   "description": "A whole plan instead of a topic."}


def _branches(prop: dict[str, Any]) -> list[dict[str, Any]]:
    """The schema and its ``anyOf`` alternatives (``int | None`` is an anyOf)."""
    return [prop, *prop.get("anyOf", [])]


def _bounds(prop: dict[str, Any]) -> dict[str, Any]:
    return {k: v for branch in _branches(prop) for k, v in branch.items() if k in _NUMERIC + _STRING}


def _constrain(prop: dict[str, Any], bounds: dict[str, Any]) -> None:
    """Add bounds to the branches of the type they apply to; bounds already there stay."""
    for branch in _branches(prop):
        kind = branch.get("type")
        keys = _NUMERIC if kind in ("integer", "number") else _STRING if kind == "string" else ()
        for k in keys:
            if k in bounds:
                branch.setdefault(k, bounds[k])
