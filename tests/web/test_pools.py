"""The pools view: a pool planned from a German topic, its plan reviewed and edited in the
page, started and followed live to its target, its pictures browsed by kind; the YAML editor
and its one-line errors; pause, resume and cancel as the pool's status allows."""

from __future__ import annotations

import re

import pytest
from harness.browser import serious_violations, watch_console
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"




def action_states(page) -> dict[str, bool]:
    names = {"start": "Starten", "pause": "Pausieren", "resume": "Fortsetzen", "cancel": "Pool abbrechen"}
    return {k: page.get_by_role("button", name=v, exact=True).is_enabled() for k, v in names.items()}


def test_plan_review_run_and_browse_a_pool(web_server, new_page):
    page = new_page(locale="de-DE")
    page.goto(web_server.url + "/#/pools")
    page.get_by_label("Thema").fill("Medizin und Gesundheit")
    page.get_by_label("Bilder (Ziel)").fill("4")
    page.get_by_role("button", name="Entfernen: exteriors").click()
    expect(page.locator(".pool-mix-images")).to_have_text(["Bilder: 3", "Bilder: 1"])
    page.get_by_text("Weitere Einstellungen").click()
    page.get_by_role("spinbutton", name="Schritte").fill("2")
    page.get_by_label("Breite").fill("64")
    page.get_by_label("Höhe").fill("64")
    assert not serious_violations(page)
    page.get_by_role("button", name="Pool planen").click()

    # The draft: review the plan, drop a location, reword a prompt, switch two gates off.
    expect(page.locator(".pool-status")).to_have_text("Status: Entwurf (Plan prüfen)")
    pool_id = page.url.rsplit("/", 1)[1]
    assert action_states(page) == {"start": True, "pause": False, "resume": False, "cancel": True}
    interiors = page.locator(".plan-kind[data-kind=interiors]")
    dropped = interiors.locator(".plan-location").first.get_attribute("data-location")
    interiors.get_by_role("button", name=f"Entfernen: {dropped}").click()
    expect(interiors.locator(f'.plan-location[data-location="{dropped}"]')).to_have_count(0)
    prompt = page.locator(".plan-kind[data-kind=items] textarea").first
    prompt.fill("a stethoscope on a wooden desk, close-up, edited in the page")
    page.get_by_label("Anstößige Bilder aussortieren").uncheck()
    page.get_by_label("Beinahe-Duplikate aussortieren").uncheck()
    expect(page.get_by_text("Ungespeicherte Änderungen")).to_be_visible()
    assert not serious_violations(page)
    page.get_by_role("button", name="Plan speichern").click()
    expect(page.locator("#status")).to_have_text("Der Plan ist gespeichert.")
    expect(page.get_by_role("button", name="Plan speichern")).to_be_disabled()

    # Start and follow it live (EventSource) to its target.
    page.get_by_role("button", name="Starten").click()
    expect(page.locator(".pool-status")).to_have_text("Status: Fertig", timeout=30_000)
    expect(page.locator(".pool-summary")).to_have_text("4 / 4 angenommen · 0 abgelehnt · 0 fehlgeschlagen")
    expect(page.locator("progress[aria-labelledby]")).to_have_js_property("value", 4)
    expect(page.locator(".pool-kinds tr[data-kind=interiors] .pool-kind-accepted")).to_have_text("3 / 3")
    assert action_states(page) == {"start": False, "pause": False, "resume": False, "cancel": False}

    # Browse one kind: its thumbnails are the server's PNGs; its contact sheet and the report.
    page.get_by_label("Art", exact=True).select_option(label="Gegenstände")
    thumbs = page.locator(".pool-thumb img")
    expect(thumbs).to_have_count(1)
    expect(page.locator(".pool-thumb figcaption")).to_contain_text("chirurgische Instrumente")
    page.get_by_label("Art", exact=True).select_option(label="Innenräume")
    expect(thumbs).to_have_count(3)
    for i in range(3):
        expect(thumbs.nth(i)).to_have_js_property("complete", True)
        assert thumbs.nth(i).evaluate("(el) => el.naturalWidth") == 64
        assert page.request.get(web_server.url + thumbs.nth(i).get_attribute("src")).body().startswith(PNG_MAGIC)
    sheet = page.locator(".pool-sheet-img")
    expect(sheet).to_have_js_property("complete", True)
    assert sheet.evaluate("(el) => el.naturalWidth") > 64
    expect(page.locator(".pool-report tbody tr")).to_have_count(2)
    export = page.get_by_role("link", name="Exportieren (ZIP fürs Training)")
    assert export.get_attribute("href") == f"/api/v1/pools/{pool_id}/export"
    assert not serious_violations(page)

    with web_server.client() as c:
        pool = c.get(f"/api/v1/pools/{pool_id}").json()
    assert pool["status"] == "complete" and pool["accepted"] == pool["target"] == 4
    assert {k["kind"]: k["accepted"] for k in pool["kinds"]} == {"interiors": 3, "items": 1}
    plan = pool["plan"]
    assert plan["topic"] == "Medizin und Gesundheit" and plan["language"] == "de"
    assert dropped not in [loc["name"] for loc in plan["kinds"][0]["locations"]]
    assert plan["kinds"][1]["locations"][0]["prompts"][0]["prompt"] == \
        "a stethoscope on a wooden desk, close-up, edited in the page"
    assert plan["gates"]["nsfw"] is False and plan["gates"]["dedupe"] is False
    assert plan["settings"]["steps"] == 2 and plan["settings"]["width"] == 64

    page.goto(web_server.url + "/#/pools")
    row = page.locator(f"tr[data-pool='{pool_id}']")
    expect(row).to_contain_text("Fertig")
    expect(row).to_contain_text("4 / 4")


def test_yaml_editor_shows_the_servers_one_line_error(web_server, browser):
    with web_server.client() as c:
        pool = c.post("/api/v1/pools", json={"topic": "Business and office", "images": 2, "offline": True,
                                             "mix": {"interiors": 1}, "language": "en"}).json()
    # Its own page: the browser logs the 400 of the broken edit as a console error, on purpose.
    ctx = browser.new_context(locale="de-DE", viewport={"width": 768, "height": 1024})
    ctx.set_default_timeout(20_000)
    page = ctx.new_page()
    errors = watch_console(page)
    try:
        page.goto(f"{web_server.url}/#/pools/{pool['id']}")
        page.get_by_text("Plan als YAML bearbeiten").click()
        yaml = page.get_by_label("Plan (YAML)")
        expect(yaml).to_have_value(re.compile(r"^version: 1\npool: business-and-office\n"))
        text = yaml.input_value()
        yaml.fill(text.replace("images: 2\n", "images: [\n", 1))
        page.get_by_role("button", name="YAML speichern").click()
        error = page.locator(".pool-yaml-error")
        expect(error).to_have_text(re.compile(r"not valid YAML at line \d+"))
        assert "\n" not in error.inner_text()
        assert not serious_violations(page)

        yaml.fill(text.replace("topic: Business and office", "topic: Büro und Geschäft"))
        page.get_by_role("button", name="YAML speichern").click()
        expect(page.locator(".pool-title")).to_have_text("Büro und Geschäft")
        expect(error).to_have_text("")
        with web_server.client() as c:
            assert c.get(f"/api/v1/pools/{pool['id']}/plan").json()["topic"] == "Büro und Geschäft"
    finally:
        ctx.close()
    assert errors and all("status of 400" in e for e in errors), errors


def test_pause_resume_and_cancel_follow_the_pools_status(web_server, new_page):
    with web_server.client() as c:
        pool = c.post("/api/v1/pools", json={"topic": "Medizin und Gesundheit", "images": 24, "offline": True,
                                             "mix": {"items": 1}, "settings": {"steps": 2, "width": 64,
                                                                               "height": 64}}).json()
    page = new_page(locale="de-DE")
    page.goto(f"{web_server.url}/#/pools/{pool['id']}")
    expect(page.locator(".pool-status")).to_contain_text("Entwurf")
    # A kind's target changed in the form: Start saves the plan first, the pool's target follows.
    page.get_by_label("Anzunehmende Bilder").fill("30")
    expect(page.locator(".pool-summary")).to_contain_text("0 / 24")
    page.get_by_role("button", name="Starten").click()
    expect(page.locator(".pool-status")).to_contain_text("Läuft")
    assert action_states(page) == {"start": False, "pause": True, "resume": False, "cancel": True}
    expect(page.get_by_role("button", name="Pausieren")).to_be_focused()
    page.get_by_role("button", name="Pausieren").click()
    expect(page.locator(".pool-status")).to_contain_text("Pausiert")
    assert action_states(page) == {"start": False, "pause": False, "resume": True, "cancel": True}
    expect(page.locator(".plan-edit textarea").first).to_be_enabled()  # a paused pool's plan may be edited
    page.get_by_role("button", name="Fortsetzen").click()
    expect(page.locator(".pool-status")).to_contain_text("Läuft")
    page.get_by_role("button", name="Pool abbrechen").click()
    expect(page.locator(".pool-status")).to_have_text("Status: Abgebrochen", timeout=30_000)
    assert action_states(page) == {"start": False, "pause": False, "resume": False, "cancel": False}
    expect(page.locator(".plan-edit textarea").first).to_be_disabled()
    with web_server.client() as c:
        view = c.get(f"/api/v1/pools/{pool['id']}").json()
    assert view["status"] == "cancelled"
    assert view["target"] == view["plan"]["images"] == view["plan"]["kinds"][0]["images"] == 30
