"""What the web interface needs of the server (issue 16 item 7): the page and its files from
the package, /docs offline, a browser login (cookie) on a key-protected server, CORS by an
allow-list, multipart uploads, styles, samplers, the prompt preview, progress previews.
In-process: the guard and the routing are the point (jobs on a real server: test_native_api.py)."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

from fastapi.testclient import TestClient
from PIL import Image

from bildwerk.server.app import create_app
from bildwerk.server.sessions import COOKIE, MAX_FAILURES, SessionSigner
from bildwerk.server.settings import ServerSettings

KEY = "s3cret-key"
OWN = "http://127.0.0.1"


class _NoJobs:
    """A stand-in service: every job is unknown (a 404 shows the guard let a request through)."""

    store = SimpleNamespace(get=lambda _id: None)

    def loaded_model(self):
        return None


def _client(tmp_path, **settings) -> TestClient:
    app = create_app(ServerSettings(store=tmp_path / "store", **settings), service=_NoJobs())
    return TestClient(app, base_url=OWN)


def _png(size=(64, 64), color=(30, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def test_the_page_its_files_and_the_docs_come_from_the_package(tmp_path):
    c = _client(tmp_path)
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert '<script type="module" src="/ui/js/app.js">' in page.text
    js = c.get("/ui/js/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert js.headers["x-content-type-options"] == "nosniff"
    for lang in ("de", "en", "fr", "ko", "ru"):
        assert c.get(f"/ui/i18n/{lang}/common.json").json()["tab_generate"]
    assert c.get("/ui/../pyproject.toml").status_code == 404
    assert c.get("/ui/%2e%2e/server/app.py").status_code == 404
    docs = c.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower() and "https://" not in docs.text.replace("https://fastapi", "")
    bundle = c.get("/docs-assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
    assert c.get("/docs-assets/swagger-ui.css").status_code == 200
    assert c.get("/redoc").status_code == 404  # ReDoc's bundle reaches for a CDN: not served


def test_a_key_protected_server_serves_the_page_and_a_login_sets_a_safe_cookie(tmp_path):
    c = _client(tmp_path, api_key=KEY)
    assert c.get("/").status_code == 200 and c.get("/ui/app.css").status_code == 200  # the login page loads
    assert c.get("/api/v1/styles").status_code == 401
    assert c.get("/openapi.json").status_code == 401
    assert c.get("/api/v1/session").json() == {"auth_required": True, "authenticated": False, "expires_at": None}
    r = c.post("/api/v1/session", json={"key": KEY}, headers={"Origin": OWN})
    assert r.status_code == 200 and r.json()["authenticated"]
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/" in cookie and KEY not in cookie
    assert c.get("/api/v1/session").json()["authenticated"] is True
    assert c.get("/api/v1/styles").status_code == 200  # the cookie authenticates
    assert c.get("/openapi.json").status_code == 200  # so /docs works after a login
    # A state-changing request on the cookie alone needs its page's Origin ...
    assert c.post("/api/v1/jobs/abc/cancel").json()["error"]["code"] == "forbidden_origin"
    assert c.post("/api/v1/jobs/abc/cancel", headers={"Origin": "http://evil.test"}).status_code == 403
    assert c.post("/api/v1/jobs/abc/cancel", headers={"Origin": OWN}).status_code == 404  # through the guard
    # ... while a script with the key needs none.
    assert c.post("/api/v1/jobs/abc/cancel", headers={"Authorization": f"Bearer {KEY}"},
                  cookies={}).status_code == 404
    assert c.delete("/api/v1/session", headers={"Origin": OWN}).status_code == 204
    c.cookies.clear()
    assert c.get("/api/v1/styles").status_code == 401


def test_forged_tampered_and_expired_cookies_are_refused(tmp_path):
    c = _client(tmp_path, api_key=KEY)
    signer = SessionSigner(KEY)
    good = signer.issue()
    issued, nonce, sig = good.split(".")
    for bad in (f"{issued}.{nonce}.{'0' * 64}", f"{int(issued) + 1}.{nonce}.{sig}", "x", "",
                SessionSigner("other-key").issue(), SessionSigner(KEY).issue(now=time.time() - 8 * 86400)):
        c.cookies.set(COOKIE, bad)
        assert c.get("/api/v1/styles").status_code == 401, bad
    c.cookies.set(COOKIE, good)
    assert c.get("/api/v1/styles").status_code == 200


def test_wrong_keys_are_throttled(tmp_path):
    c = _client(tmp_path, api_key=KEY)
    for _ in range(MAX_FAILURES):
        assert c.post("/api/v1/session", json={"key": "guess"}, headers={"Origin": OWN}).status_code == 401
    r = c.post("/api/v1/session", json={"key": KEY}, headers={"Origin": OWN})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1  # even the right key waits now
    assert c.post("/api/v1/session", json={}, headers={"Origin": OWN}).status_code == 400


def test_cors_answers_preflights_for_allowed_pages_only(tmp_path):
    page = "https://kiosk.example.org"
    c = _client(tmp_path, api_key=KEY, allowed_origins=[page])
    pre = c.options("/api/v1/jobs", headers={"Origin": page, "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == page
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    other = c.options("/api/v1/jobs", headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    # The page's real requests: readable answers (errors too), headers it may read exposed.
    r = c.get("/api/v1/styles", headers={"Origin": page, "Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == page
    assert "Location" in r.headers["access-control-expose-headers"]
    assert c.get("/api/v1/styles", headers={"Origin": page}).headers["access-control-allow-origin"] == page  # the 401
    assert c.post("/api/v1/jobs/abc/cancel", headers={"Origin": page, "Authorization": f"Bearer {KEY}"}).status_code == 404
    assert "access-control-allow-origin" not in c.get("/api/v1/styles", headers={"Origin": "https://evil.test"}).headers


def test_styles_samplers_and_what_remote_models_can_do(tmp_path):
    c = _client(tmp_path)
    modes = c.get("/api/v1/models").json()["remote_modes"]
    assert modes["openai:dall-e-3"] == ["text-to-image"]  # no edits: the page does not offer it for inpainting
    assert "inpaint" in modes["openai:gpt-image-1"] and "image-to-image" in modes["openai:dall-e-2"]
    styles = c.get("/api/v1/styles").json()["styles"]
    assert any(s["name"].lower() == "watercolor" and "{prompt}" in s["prompt"] for s in styles)
    samplers = c.get("/api/v1/samplers").json()["samplers"]
    assert {"name": "Euler a", "aliases": ["euler_a", "euler_ancestral", "k_euler_a"]} in samplers
