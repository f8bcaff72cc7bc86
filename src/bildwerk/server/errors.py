"""Every failure answers JSON ``{"error": {"code", "message", "type"}}`` — the shape OpenAI's
SDK reads, used on every surface so one client-side handler fits all. Messages name no
absolute server path (``hide_paths``); the server log keeps the full text."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from bildwerk.core.errors import BildwerkError, hide_paths

log = logging.getLogger("bildwerk.server")

STATUS = {
    "invalid_request": 400,
    "invalid_image": 400,
    "not_configured": 400,
    "model_not_found": 404,
    "asset_not_found": 404,
    "model_exists": 409,
    "model_admin_off": 403,
    "unsafe_model": 400,
    "unsupported_model": 400,
    "cancelled": 409,
    "queue_full": 429,
    "prompt_backend": 502,
    "prompt_answer_rejected": 502,
    "remote_rate_limited": 429,
    "remote_auth": 502,
    "remote_timeout": 504,
    "remote_error": 502,
    "not_found": 404,
    "job_not_found": 404,
    "ambiguous_job_id": 400,
    "image_not_found": 404,
    "job_exists": 409,
    "job_state": 409,
    "pool_not_found": 404,
    "pool_state": 409,
    "corrupt_image": 500,
    "export_failed": 400,
    "job_timeout": 504,
    "out_of_memory": 503,
    "interrupted": 500,
    "insufficient_storage": 507,
    "store_unavailable": 503,
    "shutting_down": 503,
}


# The header naming the job an answer is about: on a synchronous call's image answer and on
# its error answer alike, so a client can look the job up whichever way the call ended.
JOB_HEADER = "X-Bildwerk-Job"

# Failures a retry of the same call can cure (a full queue, a busy or slow remote, memory).
# Every other error answer says ``x-should-retry: false``: the official openai SDK (and the
# other Stainless SDKs) obey it before their default of retrying 408/409/429/5xx, so a
# configuration error (a refused OpenAI key: 502) or a cancelled job (409) is one call, one
# job, not three. An answer about a job that is still queued or running never invites a
# retry either: the job goes on, and a retry would make a second one.
TRANSIENT = frozenset({"queue_full", "remote_rate_limited", "remote_timeout", "remote_error",
                       "prompt_backend", "out_of_memory", "store_unavailable", "shutting_down"})


def retry_headers(code: str, job: dict | None = None) -> dict[str, str]:
    """The headers of an error answer: the job it is about, and whether to retry."""
    headers = {}
    if job is not None:
        headers[JOB_HEADER] = str(job["id"])
    if code not in TRANSIENT or (job is not None and job.get("status") in ("queued", "running")):
        headers["x-should-retry"] = "false"
    return headers


def error_body(code: str, message: str, status: int) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"code": code, "message": hide_paths(message), "type": kind}}


def error_response(code: str, message: str, status: int | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    status = status or STATUS.get(code, 500)
    return JSONResponse(error_body(code, message, status), status_code=status,
                        headers={**retry_headers(code), **(headers or {})})


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this request's path.

    Starlette's 405 names only the methods of the first route whose path matched, but here a
    path's methods are often separate routes (GET and POST /sdapi/v1/options, GET and DELETE
    /api/v1/jobs/{id}); RFC 9110 wants them all in Allow. Each method is tried against the
    router (``matches`` sees through FastAPI's included routers).
    """
    routes = request.app.router.routes
    return ", ".join(m for m in _METHODS
                     if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes))


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BildwerkError)
    async def _bildwerk(request: Request, exc: BildwerkError) -> JSONResponse:
        job = getattr(exc, "job", None)  # a synchronous call's job, still to follow
        job = job if isinstance(job, dict) and "id" in job else None
        headers = retry_headers(exc.code, job)
        if hide_paths(str(exc)) != str(exc):  # the client gets it without paths; the log in full
            log.info("%s on %s %s: %s", exc.code, request.method, request.url.path, exc)
        retry = getattr(exc, "retry_after", None)
        if retry is not None:
            headers["Retry-After"] = str(max(1, int(round(float(retry)))))
        status = STATUS.get(exc.code, 500)
        body = error_body(exc.code, str(exc), status)
        if job is not None:
            base = request.app.state.bildwerk.settings.base_url  # configured, never the Host header
            body["error"]["job"] = {**job, "url": f"{base}/api/v1/jobs/{job['id']}"}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
        return error_response("invalid_request", "invalid request: " + "; ".join(parts), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden",
                413: "too_large"}.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return error_response(code, str(exc.detail), exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not the client's fault: the documented JSON shape, no internals (paths, values).
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response("internal", "internal error; the server log has the details", 500)
