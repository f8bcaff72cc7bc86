"""bildwerk's own API: asynchronous jobs (202 + id), progress as server-sent events,
cancellation, results, history search, delete, export as a training folder."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from bildwerk.core.bounds import MAX_MODEL_REF_CHARS, MAX_NAME_CHARS
from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.spec import JobSpec
from bildwerk.jobs.store import (
    MAX_JOB_IDS,
    MAX_OFFSET,
    MAX_SEARCH_WORDS,
    ImageNotFoundError,
    JobNotFoundError,
)
from bildwerk.server.app import state
from bildwerk.server.common import (
    b64_image,
    control_units,
    decode_upload,
    job_error,
    job_view,
    upload_bytes,
)
from bildwerk.server.errors import JOB_HEADER, error_response
from bildwerk.server.schemas import JobIn, PromptPreviewIn, no_json_constant, request_fields

router = APIRouter(prefix="/api/v1", tags=["jobs"])
_SHA = re.compile(r"^[0-9a-f]{64}$")
MAX_QUERY_CHARS = 500


@router.post("/jobs", status_code=202)
def create_job(body: JobIn, request: Request) -> JSONResponse:  # type: ignore[valid-type]
    st = state(request)
    fields = request_fields(body)
    fields.setdefault("model", st.settings.model)
    spec = JobSpec.build(origin="native", options=body.prompt_options, image=b64_image(st, body.image, "image"),
                         mask=b64_image(st, body.mask, "mask"), controls=control_units(st, body.controls),
                         **fields)
    return _accepted(request, st.service.submit(spec, api="native"))


def _accepted(request: Request, row) -> JSONResponse:
    """202 with the job and its Location: what both ways of submitting answer."""
    view = job_view(request, row)
    return JSONResponse(view, status_code=202, headers={"Location": view["links"]["self"], JOB_HEADER: row.id})


# The JSON body of an upload's "request" part is at most this long (no images inside it).
MAX_UPLOAD_REQUEST_CHARS = 256 * 1024


@router.post("/uploads", status_code=202)
async def create_job_upload(
        request: Request,
        fields: str = Form(..., alias="request", max_length=MAX_UPLOAD_REQUEST_CHARS,
                           description="The job as JSON: the fields of POST /api/v1/jobs, without image and mask."),
        image: UploadFile | None = File(None, description="Input image (PNG, JPEG or WebP)."),
        mask: UploadFile | None = File(None, description="Inpainting mask: white = change, or alpha 0 = change.")
) -> JSONResponse:
    """A job with its pictures as multipart/form-data (what a browser form or ``curl -F``
    sends): no base64 on the way; otherwise the same as POST /api/v1/jobs."""
    st = state(request)
    body = _job_from_json(fields)
    image_data = await upload_bytes(st, image, "image")
    mask_data = await upload_bytes(st, mask, "mask")

    def submit():
        values = request_fields(body)
        values.setdefault("model", st.settings.model)
        spec = JobSpec.build(origin="native", options=body.prompt_options,
                             image=decode_upload(st, image_data, "image"),
                             mask=decode_upload(st, mask_data, "mask"),
                             controls=control_units(st, body.controls), **values)  # base64 in the JSON
        return st.service.submit(spec, api="native")

    return _accepted(request, await asyncio.to_thread(submit))


def _job_from_json(text: str):
    from bildwerk.core.request import format_validation_error

    try:
        data = json.loads(text, parse_constant=no_json_constant)
    except (ValueError, RecursionError):
        raise InvalidRequestError("request: not valid JSON (the job's fields as a JSON object)") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request: a JSON object with the job's fields")
    if data.get("image") is not None or data.get("mask") is not None:
        raise InvalidRequestError("request: send image and mask as file parts of the upload, not inside the JSON")
    try:
        return JobIn.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequestError(format_validation_error(exc).replace("invalid request", "request")) from None


@router.get("/jobs")
def list_jobs(request: Request, status: str | None = Query(None, max_length=MAX_NAME_CHARS),
              q: str | None = Query(None, max_length=MAX_QUERY_CHARS,
                                    description=f"Words in the prompt (at most {MAX_SEARCH_WORDS})."),
              model: str | None = Query(None, max_length=MAX_MODEL_REF_CHARS),
              api: str | None = Query(None, max_length=MAX_NAME_CHARS),
              mode: str | None = Query(None, max_length=MAX_NAME_CHARS),
              since: float | None = Query(None, allow_inf_nan=False, description="Epoch seconds."),
              until: float | None = Query(None, allow_inf_nan=False, description="Epoch seconds."),
              pool_id: str | None = Query(None, max_length=64, description="The jobs of one image pool."),
              limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> dict:
    store = state(request).service.store
    filters = dict(status=status, text=q, model=model, api=api, mode=mode, since=since, until=until,
                   pool_id=pool_id)
    rows = store.list_jobs(**filters, limit=limit, offset=offset)
    return {"jobs": [job_view(request, r) for r in rows], "limit": limit, "offset": offset,
            "total": store.count(**filters)}  # what these filters find, all pages


def _row_or_404(request: Request, job_id: str):
    row = state(request).service.store.get(job_id)
    if row is None:
        raise JobNotFoundError(job_id)
    return row


@router.get("/jobs/{job_id}")
def get_job(job_id: str, request: Request) -> dict:
    """One job's full record: request, prompt steps, engine, model, seeds, versions, timings."""
    info = state(request).service.status(job_id)
    if info is None:
        raise JobNotFoundError(job_id)
    view = job_view(request, info["row"], info["progress"], full=True)
    view["queue_position"] = info["position"]
    return view


@router.post("/jobs/{job_id}/cancel", status_code=202)
def cancel_job(job_id: str, request: Request) -> dict:
    row = _row_or_404(request, job_id)
    outcome = state(request).service.cancel(job_id)
    return {"id": job_id, "status": outcome or row.status}


@router.delete("/jobs/{job_id}", status_code=204)
def delete_job(job_id: str, request: Request) -> Response:
    row = _row_or_404(request, job_id)
    if row.status in ("queued", "running"):
        return error_response("conflict", "the job has not ended; cancel it first", 409)
    state(request).service.store.delete(job_id)
    return Response(status_code=204)


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request,
                     preview: bool = Query(False, description="Add a small JPEG of the picture as it forms "
                                                              "(``preview``, a data: URL) to progress events, "
                                                              "about once a second while it denoises.")
                     ) -> StreamingResponse:
    """Server-sent events: ``progress`` while it runs, then one ``end`` with the status; or,
    when the server stops before the job ends here, one ``stopping`` (reconnect to follow it)."""
    svc = state(request).service
    await asyncio.to_thread(_row_or_404, request, job_id)
    watching = getattr(svc, "watching_previews", None)

    async def stream():
        last = None
        idle = 0.0
        seen = 0.0
        sent_previews = 0
        while True:
            info = await asyncio.to_thread(svc.status, job_id)  # SQLite reads off the event loop
            if info is None:
                yield "event: end\ndata: {\"status\": \"deleted\"}\n\n"
                return
            row, prog = info["row"], info["progress"]
            previews, image = svc.preview_of(job_id) if preview and watching else (0, None)
            current = (row.status, prog["phase"], prog["step"], previews)
            if current != last:
                last, idle = current, 0.0
                payload = {"id": job_id, "status": row.status, **prog, "queue_position": info["position"]}
                if image is not None and previews != sent_previews:
                    payload["preview"], sent_previews = image, previews
                yield f"event: progress\ndata: {json.dumps(payload)}\n\n"
            if row.status in ("succeeded", "failed", "cancelled"):
                end = {"id": job_id, "status": row.status, "error": job_error(row)}
                yield f"event: end\ndata: {json.dumps(end)}\n\n"
                return
            if svc.leaving(job_id):  # a stop: the job will not end here; let the client go
                bye = {"id": job_id, "status": row.status,
                       "message": "the server is stopping; the job stays in the queue and runs after "
                                  "the next start; reconnect to follow it"}
                yield f"event: stopping\ndata: {json.dumps(bye)}\n\n"
                return
            if await request.is_disconnected():
                return
            t = time.monotonic()
            seen = await svc.next_change(job_id, seen, 0.5)  # news from the worker, or a look every 0.5 s
            idle += time.monotonic() - t
            if idle >= 15:
                idle = 0.0
                yield ": keep-alive\n\n"

    async def previewed():
        with watching(job_id):
            async for chunk in stream():
                yield chunk

    body = previewed() if preview and watching else stream()
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"X-Content-Type-Options": "nosniff",
                                                          "Cache-Control": "public, max-age=31536000, immutable"})


@router.get("/jobs/{job_id}/images/{index}")
def job_image(job_id: str, index: int, request: Request) -> Response:
    row = _row_or_404(request, job_id)
    for r in row.results:
        if r.idx == index:
            return _png(state(request).service.store.read_image(r.sha256))
    return error_response("not_found", f"job {job_id} has no image {index}", 404)


@router.get("/images/{sha256}")
def image_by_hash(sha256: str, request: Request) -> Response:
    if not _SHA.match(sha256):  # only hashes reach the file system: no paths, no traversal
        raise InvalidRequestError("an image is named by its sha256 (64 hex characters)")
    store = state(request).service.store
    if not store.image_path(sha256).is_file():
        raise ImageNotFoundError(sha256)
    return _png(store.read_image(sha256))


@router.get("/export")
def export(request: Request,
           ids: str | None = Query(None, max_length=MAX_JOB_IDS * 33, description="Comma-separated job ids."),
           q: str | None = Query(None, max_length=MAX_QUERY_CHARS),
           model: str | None = Query(None, max_length=MAX_MODEL_REF_CHARS),
           api: str | None = Query(None, max_length=MAX_NAME_CHARS),
           since: float | None = Query(None, allow_inf_nan=False),
           until: float | None = Query(None, allow_inf_nan=False)) -> StreamingResponse:
    """A zip of an image folder plus metadata.csv, ready for ``bildwerk train``."""
    store = state(request).service.store
    job_ids = [i for i in (ids or "").split(",") if i] or None
    tmp = Path(tempfile.mkdtemp(prefix="bildwerk-export-"))
    try:
        out = tmp / "export"
        filters = {k: v for k, v in dict(text=q, model=model, api=api, since=since, until=until).items()
                   if v is not None}
        store.export(job_ids, out, **filters)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # PNGs do not compress further
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(out).as_posix())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    buf.seek(0)
    return StreamingResponse(buf, media_type="application/zip",
                             headers={"Content-Disposition": 'attachment; filename="bildwerk-export.zip"'})


@router.get("/styles")
def styles() -> dict:
    """The prompt styles (``prompt_options.style``): shipped ones and the operator's own."""
    from bildwerk.prompts.styles import load_styles

    return {"styles": [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                       for s in sorted(load_styles().values(), key=lambda s: s.name.lower())]}


@router.get("/samplers")
def samplers() -> dict:
    """The sampler names a request may give (``scheduler``) and their aliases; unset: the model's own."""
    from bildwerk.core.samplers import SAMPLERS

    return {"samplers": [{"name": s.name, "aliases": list(s.aliases)} for s in SAMPLERS], "default": None}


@router.post("/prompt")
async def prompt_preview(body: PromptPreviewIn, request: Request) -> dict:  # type: ignore[valid-type]
    """The prompt steps for a prompt, without generating: detected language, translation,
    keywords, expansion, style; with an image and ``prompt_options.describe``, the description
    and the merge. What a job with the same fields and options would give the model."""
    st = state(request)

    def run() -> dict:
        fields = request_fields(body)
        fields.setdefault("model", st.settings.model)
        image = b64_image(st, body.image, "image")
        if image is not None:
            fields.setdefault("mode", "image-to-image")
        spec = JobSpec.build(origin="native", options=body.prompt_options, image=image, **fields)
        st.service.generator.check(spec)
        rec = st.service.generator.with_prompt(spec).request.prompt_record
        return {"prompt": rec.prompt, "negative_prompt": rec.negative_prompt,
                "record": rec.model_dump(mode="json")}

    return await asyncio.to_thread(run)

