"""Browser login for a key-protected server (sessions.py): the key goes in once, in a POST
body, and comes back as an HttpOnly, SameSite=Strict cookie; never in a URL or in a script."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field

from bildwerk.server.app import state
from bildwerk.server.errors import error_response
from bildwerk.server.schemas import StrictBody
from bildwerk.server.sessions import COOKIE, cookie_value

router = APIRouter(prefix="/api/v1", tags=["session"])


class LoginIn(StrictBody):
    model_config = ConfigDict(extra="forbid", strict=True)

    key: str = Field(min_length=1, max_length=4096, description="The server's API key.")


@router.get("/session")
def session(request: Request) -> dict:
    """Whether this server needs a key and whether this browser's session cookie is valid."""
    st = state(request)
    if st.sessions is None:
        return {"auth_required": False, "authenticated": True, "expires_at": None}
    expires = st.sessions.expires(cookie_value(request.headers.get("cookie")) or "")
    return {"auth_required": True, "authenticated": expires is not None, "expires_at": expires}


@router.post("/session")
def login(body: LoginIn, request: Request) -> Response:
    """Trade the API key for a session cookie (HttpOnly, SameSite=Strict, Secure behind https)."""
    st = state(request)
    if st.sessions is None:
        return JSONResponse({"auth_required": False, "authenticated": True, "expires_at": None})
    client = request.client.host if request.client else "?"
    wait = st.login_throttle.retry_after(client)
    if wait:
        return error_response("rate_limited", f"too many wrong keys; try again in {wait} s", 429,
                              headers={"Retry-After": str(wait)})
    if not hmac.compare_digest(body.key.encode(), (st.settings.api_key or "").encode()):
        st.login_throttle.failed(client)
        return error_response("unauthorized", "that is not this server's API key", 401)
    token = st.sessions.issue()
    expires = st.sessions.expires(token)
    resp = JSONResponse({"auth_required": True, "authenticated": True, "expires_at": expires})
    resp.set_cookie(COOKIE, token, max_age=int(st.sessions.max_age_s), httponly=True, samesite="strict",
                    secure=_secure(request, st.settings.base_url), path="/")
    return resp


@router.delete("/session", status_code=204)
def logout(request: Request) -> Response:
    resp = Response(status_code=204)
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                       secure=_secure(request, state(request).settings.base_url))
    return resp


def _secure(request: Request, base_url: str) -> bool:
    return request.url.scheme == "https" or base_url.startswith("https://")
