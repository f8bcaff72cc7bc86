"""Image pools over REST: create from a topic or a plan, review and edit the plan, start,
pause, resume, cancel, follow the progress (server-sent events), browse the pictures by kind
and location, fetch sheets and the report, export the imagefolder ``bildwerk train`` reads.

A pool's pictures are ordinary jobs (``api`` "pool", with the pool's id), so they are in the
history too: ``GET /api/v1/jobs?pool_id=ID``. The work is the pool service's
(pool/service.py); these routes translate, and run every store or file access in a worker
thread (plain ``def`` routes, or ``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from bildwerk.core.bounds import MAX_NAME_CHARS
from bildwerk.core.errors import BildwerkError
from bildwerk.jobs.store import MAX_OFFSET, POOL_STATUSES, ExportError, PoolRow
from bildwerk.server.app import state
from bildwerk.server.errors import error_response
from bildwerk.server.schemas import YAML_TYPES, PoolIn, plan_from_body, plan_from_data

router = APIRouter(prefix="/api/v1", tags=["pools"])

PoolStatus = Literal["draft", "running", "paused", "cancelled", "complete", "short", "failed"]
assert set(PoolStatus.__args__) == set(POOL_STATUSES)  # type: ignore[attr-defined]
ItemStatus = Literal["accepted", "rejected", "failed"]


class PoolsUnavailable(BildwerkError):
    code = "not_found"


def _pools(request: Request) -> Any:
    pools = state(request).pools
    if pools is None:  # an app built around a stand-in service (tests of the document)
        raise PoolsUnavailable("this server runs no pools")
    return pools


def pool_view(request: Request, row: PoolRow, *, full: bool = False) -> dict[str, Any]:
    st = state(request)
    pools = _pools(request)
    base = f"{st.settings.base_url}/api/v1/pools/{row.id}"
    view: dict[str, Any] = {
        "id": row.id, "name": row.name, "topic": row.topic, "status": row.status, "error": row.error,
        "created_at": row.created_at, "updated_at": row.updated_at,
        "active": pools.running_here(row.id),  # a runner works on it here (also while it winds down)
        "target": row.plan.get("images"),
        "links": {"self": base, "plan": f"{base}/plan", "start": f"{base}/start", "pause": f"{base}/pause",
                  "resume": f"{base}/resume", "cancel": f"{base}/cancel", "events": f"{base}/events",
                  "images": f"{base}/images", "report": f"{base}/report", "export": f"{base}/export",
                  "jobs": f"{st.settings.base_url}/api/v1/jobs?pool_id={row.id}"},
    }
    plan = pools.plan_of(row)
    view.update(pools.counts(row.id, plan))  # the list shows how far each pool is, too
    if full:
        view["jobs"] = st.service.store.pool_job_counts(row.id)
        view["plan"] = plan.dump()
    return view


def _created(request: Request, row: PoolRow, status: int = 201) -> JSONResponse:
    view = pool_view(request, row, full=True)
    return JSONResponse(view, status_code=status, headers={"Location": view["links"]["self"]})


@router.post("/pools", status_code=201)
def create_pool(body: PoolIn, request: Request) -> JSONResponse:  # type: ignore[valid-type]
    """A new pool (a draft) from a topic or a plan; answers it with its plan to review."""
    pools = _pools(request)
    if body.plan is not None:
        plan = plan_from_data(body.plan)
    else:
        from bildwerk.pool.plan import PoolSettings, parse_mix

        options: dict[str, Any] = {k: getattr(body, k) for k in ("images", "language", "llm", "offline", "seed")
                                   if getattr(body, k) is not None}
        if body.mix is not None:
            options["mix"] = parse_mix(body.mix) if isinstance(body.mix, str) else dict(body.mix)
        if body.settings is not None:
            options["settings"] = PoolSettings(**body.settings.model_dump(exclude_none=True))
        if body.name is not None:
            options["pool"] = body.name
        plan = pools.make_plan(body.topic, **options)
    return _created(request, pools.create(plan))


@router.get("/pools")
def list_pools(request: Request, status: PoolStatus | None = Query(None),
               limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> dict:
    pools = _pools(request)
    rows = pools.list_pools(status=status, limit=limit, offset=offset)
    return {"pools": [pool_view(request, r) for r in rows], "limit": limit, "offset": offset,
            "total": pools.store.count_pools(status)}


@router.get("/pools/{pool_id}")
def get_pool(pool_id: str, request: Request) -> dict:
    """The pool: status, counts per kind against their targets, its jobs by status, the plan."""
    return pool_view(request, _pools(request).get(pool_id), full=True)


@router.get("/pools/{pool_id}/plan")
def get_plan(pool_id: str, request: Request,
             format: Literal["json", "yaml"] | None = Query(
                 None, description="json, or yaml to edit by hand; unset: as the Accept header asks "
                                   "(application/yaml or text/yaml), else json.")) -> Response:
    from bildwerk.pool.plan import to_yaml

    pools = _pools(request)
    plan = pools.plan_of(pools.get(pool_id))
    if format is None:
        accept = request.headers.get("accept", "").lower()
        format = "yaml" if any(t in accept for t in YAML_TYPES) else "json"
    if format == "yaml":
        return Response(to_yaml(plan.dump()), media_type="application/yaml")
    return JSONResponse(plan.dump())


_PLAN_BODY = {"required": True, "description": "The whole plan, as GET .../plan answers it (JSON or YAML).",
              "content": {media: {"schema": {"$ref": "#/components/schemas/PoolPlan"}}
                          for media in ("application/json", "application/yaml", "text/yaml")}}


@router.put("/pools/{pool_id}/plan", openapi_extra={"requestBody": _PLAN_BODY})
async def put_plan(pool_id: str, request: Request) -> dict:
    """Replace the plan of a pool that is not running (draft, paused, short, failed): JSON, or
    YAML with content type application/yaml or text/yaml. One 400 names the first wrong field."""
    pools = _pools(request)
    body = await request.body()  # bounded by the body-size guard

    def edit() -> dict:
        pools.get(pool_id)  # an unknown pool is a 404 before the body is judged
        plan = plan_from_body(body, request.headers.get("content-type"))
        return pool_view(request, pools.update_plan(pool_id, plan), full=True)

    return await asyncio.to_thread(edit)


def _action(request: Request, pool_id: str, act: str) -> JSONResponse:
    pools = _pools(request)
    row = getattr(pools, f"{act}_pool")(pool_id)
    return JSONResponse(pool_view(request, row), status_code=202)


@router.post("/pools/{pool_id}/start", status_code=202)
def start_pool(pool_id: str, request: Request) -> JSONResponse:
    """Run a draft: its images go through the queue, at most a window of them at a time."""
    return _action(request, pool_id, "start")


@router.post("/pools/{pool_id}/pause", status_code=202)
def pause_pool(pool_id: str, request: Request) -> JSONResponse:
    """Submit nothing new; what is queued still runs and is kept."""
    return _action(request, pool_id, "pause")


@router.post("/pools/{pool_id}/resume", status_code=202)
def resume_pool(pool_id: str, request: Request) -> JSONResponse:
    """Go on with a paused pool (or a short or failed one, after editing its plan)."""
    return _action(request, pool_id, "resume")


@router.post("/pools/{pool_id}/cancel", status_code=202)
def cancel_pool(pool_id: str, request: Request) -> JSONResponse:
    """Stop for good and cancel the pool's queued jobs; what was made stays."""
    return _action(request, pool_id, "cancel")


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.get("/pools/{pool_id}/events")
async def pool_events(pool_id: str, request: Request) -> StreamingResponse:
    """Server-sent events: ``status`` (a snapshot: status and counts; again after a gap),
    ``progress`` (each picture, and the start and end of each run), then ``end`` once the
    pool stopped (complete, short, paused, cancelled, failed; a draft ends at once); or
    ``stopping`` when the server stops first (the pool resumes after its next start)."""
    pools = _pools(request)
    await asyncio.to_thread(pools.get, pool_id)

    def snapshot() -> dict[str, Any]:
        row, active = pools.state(pool_id)
        return {"id": pool_id, "status": row.status, "active": active,
                **pools.counts(pool_id, pools.plan_of(row))}

    async def stream():
        seen = pools.last_event(pool_id)
        yield _sse("status", await asyncio.to_thread(snapshot))
        idle = 0.0
        while True:
            row, active = await asyncio.to_thread(pools.state, pool_id)  # before the events: none missed
            new, gap = pools.events_after(pool_id, seen)
            if gap:
                yield _sse("status", await asyncio.to_thread(snapshot))
            for seq, name, data in new:
                seen = seq
                yield _sse(name, data)
            if not active and row.status != "running":
                yield _sse("end", {"id": pool_id, "status": row.status, "error": row.error})
                return
            if pools.stopping:
                yield _sse("stopping", {"id": pool_id, "status": row.status,
                                        "message": "the server is stopping; the pool resumes after the next "
                                                   "start; reconnect to follow it"})
                return
            if await request.is_disconnected():
                return
            t = time.monotonic()
            await pools.next_event(pool_id, seen, 0.5)
            idle += time.monotonic() - t
            if new:
                idle = 0.0
            elif idle >= 15:
                idle = 0.0
                yield ": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/pools/{pool_id}/images")
def pool_images(pool_id: str, request: Request, status: ItemStatus = Query("accepted"),
                kind: str | None = Query(None, max_length=MAX_NAME_CHARS),
                location: str | None = Query(None, max_length=MAX_NAME_CHARS),
                limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> dict:
    """The pool's pictures in the order they were made, by status, kind and location."""
    st = state(request)
    pools = _pools(request)
    rows, total = pools.images(pool_id, status=status, kind=kind, location=location, offset=offset, limit=limit)
    jobs = pools.store.pool_item_jobs(pool_id, [r.id for r in rows]) if rows else {}
    base = f"{st.settings.base_url}/api/v1/pools/{pool_id}/images"
    out = []
    for r in rows:
        made = [j for j, s in jobs.get(r.id, []) if s == "succeeded"]
        out.append({"id": r.id, "kind": r.kind, "location": r.location, "prompt_index": r.prompt_index,
                    "prompt": r.prompt, "original": r.original, "model_prompt": r.model_prompt, "seed": r.seed,
                    "status": r.status, "reason": r.reason, "model": r.model, "scores": r.scores,
                    "seconds": round(r.seconds, 3), "job_id": made[-1] if made else None,
                    "url": f"{base}/{r.id}" if r.file else None})
    return {"images": out, "total": total, "limit": limit, "offset": offset}


def _png_file(path: Path | None, what: str) -> Response:
    if path is None:
        return error_response("not_found", f"no {what}", 404)
    return Response(path.read_bytes(), media_type="image/png",
                    headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})


@router.get("/pools/{pool_id}/images/{item_id}")
def pool_image(pool_id: str, item_id: str, request: Request) -> Response:
    """One picture (accepted or rejected) with its full record in the PNG."""
    pools = _pools(request)
    pools.get(pool_id)
    return _png_file(pools.image_file(pool_id, item_id), f"picture {item_id[:20]!r} in pool {pool_id}")


@router.get("/pools/{pool_id}/sheets/{kind}.png")
def pool_sheet(pool_id: str, kind: str, request: Request) -> Response:
    """The contact sheet of one kind (written by each run's report)."""
    pools = _pools(request)
    pools.get(pool_id)
    return _png_file(pools.sheet_file(pool_id, kind), f"sheet for kind {kind[:80]!r} (yet)")


@router.get("/pools/{pool_id}/report")
def pool_report(pool_id: str, request: Request) -> Response:
    """The report of the last run (counts, rejections and why, diversity, speed)."""
    pools = _pools(request)
    pools.get(pool_id)
    path = pools.report_file(pool_id)
    if path is None:
        return error_response("not_found", f"pool {pool_id} has no report yet (a run writes it when it ends)", 404)
    return Response(path.read_bytes(), media_type="application/json")


class _Chunks:
    """A write-only file for zipfile that hands out what was written since the last take."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _zip_stream(metadata: bytes, files: list[tuple[str, Path]]) -> Iterator[bytes]:
    out = _Chunks()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:  # PNGs do not compress further
        zf.writestr("metadata.csv", metadata)
        yield out.take()
        for name, path in files:
            zf.write(path, name)
            yield out.take()
    yield out.take()


@router.get("/pools/{pool_id}/export")
def pool_export(pool_id: str, request: Request) -> StreamingResponse:
    """A zip of metadata.csv and the accepted pictures (images/KIND/ID.png), streamed: the
    imagefolder ``bildwerk train`` reads. Taken as it is now, also while the pool runs."""
    pools = _pools(request)
    metadata, files = pools.export_files(pool_id)
    if not files:
        raise ExportError(f"nothing to export: pool {pool_id} has no accepted pictures yet")
    # The id, not the name: a name may be any script, and a header is Latin-1.
    return StreamingResponse(_zip_stream(metadata, files), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="pool-{pool_id}.zip"'})
