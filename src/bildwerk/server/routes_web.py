"""The web interface and the API docs, both served from files in the installed package: no
CDN, no build step, nothing fetched from outside (an offline kiosk works as well as a laptop).

    /               the interface (web/index.html); its files under /ui/
    /docs           Swagger UI, its assets from the fastapi-offline package (no ReDoc: its
                    bundle fetches a logo from redocly's CDN)

The interface's page has a strict Content-Security-Policy: only this server's own scripts,
styles and connections, images from here or made in the page (data:, blob:), no framing.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

WEB = Path(str(files("bildwerk.server") / "web"))
UI_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
          "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
          "frame-ancestors 'none'")
UI_HEADERS = {"Content-Security-Policy": UI_CSP, "X-Content-Type-Options": "nosniff",
              "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(WEB / "index.html", media_type="text/html; charset=utf-8", headers=UI_HEADERS)


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    return FileResponse(WEB / "favicon.svg", media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


@router.get("/docs")
def swagger() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="bildwerk API",
                               swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs-assets/swagger-ui.css",
                               swagger_favicon_url="/favicon.ico")


class _UIFiles(StaticFiles):
    """The interface's files, revalidated on each load (ETag), never sniffed as another type."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] += [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-cache")]
            await send(message)

        await super().__call__(scope, receive, with_headers)


def install(app: FastAPI) -> None:
    import fastapi_offline

    app.include_router(router)
    app.mount("/ui", _UIFiles(directory=WEB), name="ui")
    docs = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=docs), name="docs-assets")
