"""What several API surfaces share: decoding inputs, submitting and waiting, job views."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from PIL import Image

from bildwerk.core.errors import BildwerkError, InvalidImageError, hide_paths
from bildwerk.core.spec import JobSpec
from bildwerk.images.io import decode_base64_image, decode_image
from bildwerk.server.app import AppState
from bildwerk.server.errors import JOB_HEADER


class JobFailed(BildwerkError):
    """A synchronous call's job ended without images; carries the job's own error code."""

    def __init__(self, code: str, message: str, job: dict[str, str]) -> None:
        super().__init__(message)
        self.code = code
        self.job = job  # the error answer names it (body and header), like every answer about it


class JobTimeout(BildwerkError):
    code = "job_timeout"


def b64_image(st: AppState, text: str | None, what: str) -> Image.Image | None:
    if text is None or text == "":
        return None
    return decode_base64_image(text, limits=st.limits, what=what)


async def upload_bytes(st: AppState, upload: Any, what: str) -> bytes | None:
    """An upload's bytes (up to the cap, so an oversized one fails when decoded)."""
    if upload is None:
        return None
    data = await upload.read(st.limits.max_bytes + 1)
    if not data:
        raise InvalidImageError(f"the {what} upload is empty")
    return data


def decode_upload(st: AppState, data: bytes | None, what: str) -> Image.Image | None:
    return None if data is None else decode_image(data, limits=st.limits, what=what)


async def result_pngs_async(st: AppState, row: Any) -> list[bytes]:
    return await asyncio.to_thread(result_pngs, st, row)


async def submit_and_wait(st: AppState, make_spec: Callable[[], JobSpec], *, api: str,
                          response: Response | None = None) -> Any:
    """Queue a job like any other (so it is persisted and counted) and wait for its end.

    ``make_spec`` decodes the inputs and validates the request; it and the store's writes run
    in a worker thread, never on the event loop (big uploads would stall every other client).
    A call answered before its job ended (timeout, a stop, a full store) names the job in its
    error body (``error.job``: id, status, url), so the client can follow it; a failed job's
    error names it too. Every answer about the job carries its id in ``X-Bildwerk-Job``: the
    success (set on ``response``) and the errors (server/errors.py reads ``exc.job``).
    """
    row = await asyncio.to_thread(lambda: st.service.submit(make_spec(), api=api))
    if response is not None:
        response.headers[JOB_HEADER] = row.id
    try:
        done = await st.service.wait(row.id, timeout=st.settings.sync_timeout)
    except BildwerkError as exc:  # ServiceStopping, StoreFullError: the job stays queued
        exc.job = {"id": row.id, "status": getattr(exc, "status", "queued")}  # type: ignore[attr-defined]
        raise
    if done is None or done.status != "succeeded":
        if done is not None and done.status in ("failed", "cancelled"):
            code = done.error_type or ("cancelled" if done.status == "cancelled" else "internal")
            raise JobFailed(code, done.error_message or f"job {row.id} {done.status}",
                            {"id": row.id, "status": done.status})
        timeout = JobTimeout(f"job {row.id} is still {done.status if done else 'unknown'} after "
                             f"{st.settings.sync_timeout:.0f} s; follow it at /api/v1/jobs/{row.id}")
        timeout.job = {"id": row.id, "status": done.status if done else "unknown"}  # type: ignore[attr-defined]
        raise timeout
    return done


def result_pngs(st: AppState, row: Any) -> list[bytes]:
    return [st.service.store.read_image(r.sha256) for r in sorted(row.results, key=lambda r: r.idx)]


def job_error(row: Any) -> dict[str, str] | None:
    """A job's failure as clients see it: its code and a message without server paths."""
    if not row.error_type:
        return None
    return {"code": row.error_type, "message": hide_paths(row.error_message or "")}


def job_view(request: Request, row: Any, progress: dict | None = None, *, full: bool = False) -> dict[str, Any]:
    base = request.app.state.bildwerk.settings.base_url  # configured, never the request's Host
    view: dict[str, Any] = {
        "id": row.id,
        "status": row.status,
        "api": row.api,
        "engine": row.engine,
        "model": row.model,
        "mode": row.mode,
        "prompt": row.prompt,
        "seed": row.seed,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "error": job_error(row),
        # The use case's warnings (a size far from the model's...), from submission on.
        "warnings": (row.request or {}).get("warnings", []),
        "pool_id": getattr(row, "pool_id", None),  # the image pool it makes a picture of, and which
        "pool_item": getattr(row, "pool_item", None),
        "results": [{"index": r.idx, "seed": r.seed, "sha256": r.sha256,
                     "url": f"{base}/api/v1/jobs/{row.id}/images/{r.idx}"}
                    for r in sorted(row.results, key=lambda r: r.idx)],
        "links": {"self": f"{base}/api/v1/jobs/{row.id}", "events": f"{base}/api/v1/jobs/{row.id}/events",
                  "cancel": f"{base}/api/v1/jobs/{row.id}/cancel"},
    }
    if progress is not None:
        view["progress"] = progress
    if full:
        view.update(request=row.request, options=row.options, record=row.record,
                    inputs={role: {"sha256": sha, "url": f"{base}/api/v1/images/{sha}"}
                            for role, sha in row.inputs.items()})
    return view


def control_units(st: AppState, units: list[Any] | None) -> list[dict[str, Any]] | None:
    """REST control units (``ControlUnitIn``) as request fields, each picture decoded with the
    server's limits."""
    if not units:
        return None
    return [{**u.model_dump(exclude={"image"}), "image": b64_image(st, u.image, f"controls[{i}].image")}
            for i, u in enumerate(units)]
