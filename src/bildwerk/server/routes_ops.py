"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bildwerk.core.errors import hide_paths
from bildwerk.server.app import state

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict:
    """Liveness: the process answers. On the event loop itself (nothing here blocks), so a
    thread pool busy with a burst of submissions does not make a live server look dead."""
    return {"status": "ok"}


@router.get("/ready")
def ready(request: Request) -> JSONResponse:
    """Readiness: the worker runs, the model loaded and a one-step generation worked, the
    store takes writes and no stop was asked for."""
    svc = state(request).service
    alive = svc.alive
    if svc.stopping:
        return JSONResponse({"status": "stopping", "reason": "the server is stopping"}, status_code=503)
    if svc.store_problem is not None:  # its message names no server path
        return JSONResponse({"status": "not_ready", "reason": svc.store_problem}, status_code=503)
    if svc.ready and alive:
        body = {"status": "ready", "model": svc.loaded_model()}
        limits = getattr(svc, "batch_limits", None)  # a stand-in service may have none
        if limits is not None:
            body["batch"] = limits()  # what a UNet call may hold, and whether it was measured
        return JSONResponse(body)
    reason = svc.ready_error or ("the worker is not running" if not alive else "warming up")
    return JSONResponse({"status": "not_ready", "reason": hide_paths(reason)}, status_code=503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    svc = state(request).service
    svc.metrics.queue_depth.set(svc.store.queue_depth())
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
