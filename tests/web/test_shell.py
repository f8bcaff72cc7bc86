"""The shell: served at /, every file from the package, the language from the browser."""

from __future__ import annotations

import re

import pytest
from harness.browser import serious_violations
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_page_loads_in_the_browsers_language_with_nothing_from_outside(web_server, new_page):
    page = new_page(locale="de-DE")
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(web_server.url) else None)
    page.goto(web_server.url + "/")
    page.wait_for_selector("#tab-generate[aria-current=page]")
    assert page.locator("html").get_attribute("lang") == "de"
    assert page.locator("#tab-gallery").inner_text() == "Galerie"
    assert not [u for u in outside if not u.startswith(("data:", "blob:"))]


def test_language_switch_relabels_and_is_remembered(web_server, new_page):
    page = new_page(locale="en-US")
    page.goto(web_server.url + "/")
    page.wait_for_selector("#tab-generate[aria-current=page]")
    page.select_option("#lang", "ko")
    # Locators and expect, not wait_for_function: the page's CSP forbids evaluating strings.
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    expect(page.locator("#tab-pools")).to_have_text("이미지 풀")
    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    assert re.search("갤러리", page.locator("#tabs").inner_text())


def test_the_shell_is_accessible_and_keyboard_usable_on_a_tablet(web_server, new_page):
    page = new_page(locale="fr-FR", viewport=(768, 1024))
    page.goto(web_server.url + "/")
    page.wait_for_selector("#tab-generate[aria-current=page]")
    assert serious_violations(page) == []
    page.keyboard.press("Tab")  # the skip link first
    assert page.evaluate("() => document.activeElement.className") == "skip"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # brand, then the tabs
    focused = page.evaluate("() => document.activeElement.id")
    assert focused == "tab-vary", focused
    page.keyboard.press("Enter")
    expect(page.locator("#tab-vary")).to_have_attribute("aria-current", "page")
    expect(page.locator("#vary-title")).to_have_text("Varier")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 768  # no sideways scrolling


def test_the_api_docs_render_offline(web_server, new_page):
    page = new_page()
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(web_server.url) else None)
    page.goto(web_server.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("bildwerk")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/uploads").first).to_be_visible()
    assert not [u for u in outside if not u.startswith(("data:", "blob:"))]


def test_quick_hash_changes_leave_one_view(web_server, new_page):
    """Two navigations in a row (a click and a redirect, the back button pressed twice): each
    route awaits its view's module, and only the last one may build its view."""
    page = new_page(locale="de-DE")
    page.goto(web_server.url + "/#/generate")
    expect(page.locator("#gen-prompt")).to_have_count(1)
    for _ in range(3):
        page.evaluate("location.hash = '#/gallery'; setTimeout(() => { location.hash = '#/generate'; }, 0)")
        expect(page).to_have_url(re.compile(r"#/generate$"))
        expect(page.locator("#gen-prompt")).to_have_count(1)
        expect(page.locator("#main > section.view")).to_have_count(1)
