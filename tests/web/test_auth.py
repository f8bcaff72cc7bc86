"""A key-protected server in the browser: the page loads, asks for the key, a login sets the
session cookie (the key itself is never readable by the page, nor in any URL), the API and
EventSource then work on the cookie, and a logout ends it."""

from __future__ import annotations

import httpx
import pytest
from harness.server import ServerProcess
from playwright.sync_api import expect

pytestmark = pytest.mark.browser
KEY = "kiosk-key-7f3a"


@pytest.fixture(scope="module")
def keyed_server(tiny_models, tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("web-keyed"), str(tiny_models["sd"]), api_key=KEY).start()
    srv.wait_ready()
    yield srv
    srv.stop()


def test_login_cookie_authenticates_the_api_and_event_streams(keyed_server, new_page):
    page = new_page(locale="de-DE")
    new_page.allow(r"status of 401")  # the wrong key below, and the page's first look before the login
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(keyed_server.url + "/")
    dialog = page.locator("#login")
    expect(dialog).to_be_visible()
    expect(page.locator("#login-title")).to_have_text("Dieser Server braucht einen API-Schlüssel")
    page.fill("#login-key", "wrong")
    page.keyboard.press("Enter")
    expect(page.locator("#login-error")).to_have_text("Dieser Schlüssel stimmt nicht.")
    page.fill("#login-key", KEY)
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(page.locator("#logout")).to_be_visible()
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["bildwerk_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and KEY not in session["value"]
    assert page.evaluate("() => document.cookie") == ""  # scripts cannot read it
    assert not any(KEY in u for u in urls)

    # A job made by a script with the key; the page follows it on its cookie alone.
    with keyed_server.client() as c:
        job = c.post("/api/v1/jobs", json={"prompt": "a lake", "steps": 3, "seed": 2}).json()
    end = page.evaluate("""(id) => new Promise((resolve, reject) => {
        const src = new EventSource(`/api/v1/jobs/${id}/events?preview=true`);
        src.addEventListener("end", (e) => { src.close(); resolve(JSON.parse(e.data).status); });
        src.onerror = () => { src.close(); reject(new Error("the event stream failed")); };
    })""", job["id"])
    assert end == "succeeded"
    listed = page.evaluate("""async () => {
        const r = await fetch("/api/v1/jobs", {credentials: "same-origin"});
        return [r.status, (await r.json()).total];
    }""")
    assert listed[0] == 200 and listed[1] >= 1
    # A state-changing fetch from the page carries its Origin: the cookie is enough.
    cancelled = page.evaluate("""async (id) => (await fetch(`/api/v1/jobs/${id}/cancel`, {method: "POST"})).status""",
                              job["id"])
    assert cancelled == 202

    page.click("#logout")
    expect(dialog).to_be_visible()
    assert "bildwerk_session" not in {c["name"] for c in page.context.cookies()}
    assert httpx.get(keyed_server.url + "/api/v1/jobs").status_code == 401  # and scripts still need the key
