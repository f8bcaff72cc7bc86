"""Every failure answers JSON ``{"error": {"code", "message", "type"}}`` — the shape OpenAI's
SDK reads, used on every surface so one client-side handler fits all."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bildwerk.core.errors import BildwerkError

log = logging.getLogger("bildwerk.server")

STATUS = {
    "invalid_request": 400,
    "invalid_image": 400,
    "model_not_found": 404,
    "unsafe_model": 400,
    "unsupported_model": 400,
    "cancelled": 409,
    "queue_full": 429,
    "prompt_backend": 502,
    "remote_rate_limited": 429,
    "remote_auth": 502,
    "remote_timeout": 504,
    "remote_error": 502,
    "not_found": 404,
    "job_not_found": 404,
    "image_not_found": 404,
    "job_exists": 409,
    "job_state": 409,
    "corrupt_image": 500,
    "export_failed": 400,
    "job_timeout": 504,
    "out_of_memory": 503,
    "interrupted": 500,
    "insufficient_storage": 507,
    "store_unavailable": 503,
    "shutting_down": 503,
}


def error_body(code: str, message: str, status: int) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"code": code, "message": message, "type": kind}}


def error_response(code: str, message: str, status: int | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    status = status or STATUS.get(code, 500)
    return JSONResponse(error_body(code, message, status), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BildwerkError)
    async def _bildwerk(request: Request, exc: BildwerkError) -> JSONResponse:
        headers = {}
        retry = getattr(exc, "retry_after", None)
        if retry is not None:
            headers["Retry-After"] = str(max(1, int(round(float(retry)))))
        status = STATUS.get(exc.code, 500)
        body = error_body(exc.code, str(exc), status)
        job = getattr(exc, "job", None)  # a synchronous call's job, still to follow
        if isinstance(job, dict) and "id" in job:
            base = str(request.base_url).rstrip("/")
            body["error"]["job"] = {**job, "url": f"{base}/api/v1/jobs/{job['id']}"}
        return JSONResponse(body, status_code=status, headers=headers or None)

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
        return error_response(code, str(exc.detail), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not the client's fault: the documented JSON shape, no internals (paths, values).
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response("internal", "internal error; the server log has the details", 500)
