"""Browser tests: a real server on 127.0.0.1 (the default model), Debian's Chromium driven by
Playwright. One server and one browser for the session; each test gets a fresh context (no
cookies, no storage), a 768x1024 tablet-sized viewport by default, and fails if the page
logged a console error or threw."""

from __future__ import annotations

import pytest
from harness.browser import launch, watch_console
from harness.server import ServerProcess


@pytest.fixture(scope="session")
def web_server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("web-srv"), None).start()
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


@pytest.fixture
def new_page(browser):
    """new_page(locale="de-DE", viewport=(768, 1024), touch=False) -> a page; console errors fail the test."""
    contexts, logs = [], []

    def make(locale: str = "en-US", viewport: tuple[int, int] = (768, 1024), touch: bool = False):
        ctx = browser.new_context(locale=locale, viewport={"width": viewport[0], "height": viewport[1]},
                                  has_touch=touch, is_mobile=False)
        ctx.set_default_timeout(20_000)
        contexts.append(ctx)
        page = ctx.new_page()
        logs.append(watch_console(page))
        return page

    yield make
    errors = [e for log in logs for e in log]
    for ctx in contexts:
        ctx.close()
    assert not errors, "the page logged errors:\n" + "\n".join(errors)
