"""Browser tests: a real server on 127.0.0.1 (the default model; "remote" is a loopback stand-in
of the OpenAI Images API), Debian's Chromium driven by
Playwright. One server and one browser for the session; each test gets a fresh context (no
cookies, no storage), a 768x1024 tablet-sized viewport by default, and fails if the page
logged a console error or threw."""

from __future__ import annotations

import re

import pytest
from fakes.openai_server import FakeOpenAIServer
from harness.browser import launch, watch_console
from harness.server import ServerProcess


@pytest.fixture(scope="session")
def fake_openai():
    """The OpenAI Images API as a loopback stand-in: the page's "remote" model choice."""
    with FakeOpenAIServer(required_key="sk-test") as fake:
        yield fake


@pytest.fixture(scope="session")
def web_server(tmp_path_factory, fake_openai):
    srv = ServerProcess(tmp_path_factory.mktemp("web-srv"), None, extra_env={
        "BILDWERK_OPENAI_BASE_URL": fake_openai.base_url, "BILDWERK_OPENAI_API_KEY": "sk-test",
        "BILDWERK_REMOTE_MODEL": "openai:gpt-image-1"}).start()
    srv.wait_ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


class _Pages:
    """new_page(locale="de-DE", viewport=(768, 1024), touch=False) -> a page whose console errors
    fail the test; ``new_page.allow(r"status of 401")`` accepts the ones a test provokes (Chromium
    logs every 4xx answer to a fetch as a console error)."""

    def __init__(self, browser) -> None:
        self.browser = browser
        self.contexts: list = []
        self.logs: list[list[str]] = []
        self.allowed: list[re.Pattern] = []

    def __call__(self, locale: str = "en-US", viewport: tuple[int, int] = (768, 1024), touch: bool = False):
        ctx = self.browser.new_context(locale=locale, viewport={"width": viewport[0], "height": viewport[1]},
                                       has_touch=touch, is_mobile=False)
        ctx.set_default_timeout(20_000)
        self.contexts.append(ctx)
        page = ctx.new_page()
        self.logs.append(watch_console(page))
        return page

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for log in self.logs for e in log if not any(p.search(e) for p in self.allowed)]


@pytest.fixture
def new_page(browser):
    pages = _Pages(browser)
    yield pages
    errors = pages.unexpected()
    for ctx in pages.contexts:
        ctx.close()
    assert not errors, "the page logged errors:\n" + "\n".join(errors)
