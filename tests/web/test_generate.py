"""The generate view end to end: a German prompt previewed as the server's prompt steps, a job
followed live to its image (whose PNG the server has) and record, cancel, errors shown near the
button, axe-core, and the whole form by keyboard."""

from __future__ import annotations

import re

import httpx
import pytest
from harness.browser import serious_violations, watch_console
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PNG = b"\x89PNG\r\n\x1a\n"
# Records what the progress line showed (phases, step texts, bar values) as it happened: a job
# of 4 steps on the tiny model is over in about a second, faster than polling would see it.
WATCH_PROGRESS = """() => {
  window.seen = [];
  const phase = document.getElementById("gen-phase");
  const bar = document.querySelector(".gen-progress progress");
  new MutationObserver(() => window.seen.push({phase: phase.dataset.phase, text: phase.textContent,
                                               value: bar.getAttribute("value")}))
    .observe(phase, {attributes: true, childList: true, characterData: true, subtree: true});
}"""




def open_generate(page, url: str) -> None:
    page.goto(url + "/#/generate")
    expect(page.locator("#gen-prompt")).to_be_visible()


def set_steps(page, steps: int) -> None:
    """The steps slider by keyboard: Home is 1, each ArrowRight one more."""
    slider = page.locator(".gen-slider input[type=range]").first
    slider.focus()
    page.keyboard.press("Home")
    for _ in range(steps - 1):
        page.keyboard.press("ArrowRight")
    expect(slider).to_have_value(str(steps))


def job_id_of(page) -> str:
    src = page.locator(".gen-result img").first.get_attribute("src")
    m = re.match(r"^/api/v1/jobs/([0-9a-f]+)/images/0$", src)
    assert m, src
    return m.group(1)


def test_german_prompt_preview_progress_image_and_record(web_server, new_page):
    page = new_page(locale="de-DE")
    open_generate(page, web_server.url)
    page.locator("#gen-prompt").press_sequentially("ein roter Apfel auf einem Tisch")
    # The prompt steps as the server would record them: German, read by the multilingual model as is.
    preview = page.locator(".gen-preview")
    expect(preview.locator("li[data-step=language]")).to_contain_text("de")
    expect(preview.locator("li[data-step=translate]")).to_contain_text("übersprungen")
    expect(preview.locator(".gen-final-prompt")).to_have_text("ein roter Apfel auf einem Tisch")
    expect(page.get_by_role("slider", name=re.compile("Schritte"))).to_have_attribute("aria-valuetext", "automatisch")
    set_steps(page, 4)

    page.evaluate(WATCH_PROGRESS)
    page.get_by_role("button", name="Erzeugen", exact=True).click()
    image = page.locator(".gen-result img").first
    expect(image).to_be_visible(timeout=30_000)
    expect(page.locator("#gen-phase")).to_have_text("Fertig")
    seen = page.evaluate("() => window.seen")
    phases = [s["phase"] for s in seen]
    assert "denoise" in phases and phases[-1] == "succeeded", seen
    assert any(re.fullmatch(r"Entrauschen · Schritt [1-4] von 4", s["text"]) for s in seen), seen

    # The image shown is the PNG the server has.
    assert page.evaluate("(img) => img.complete && img.naturalWidth", image.element_handle()) > 0
    png = page.request.get(web_server.url + image.get_attribute("src"))
    assert png.ok and png.body().startswith(PNG)
    job = httpx.get(f"{web_server.url}/api/v1/jobs/{job_id_of(page)}").json()
    assert job["status"] == "succeeded"
    # Moved fields are sent, untouched ones stay unset (the model's defaults).
    assert job["request"]["steps"] == 4 and job["request"]["guidance"] is None and job["request"]["width"] is None
    record = page.locator(".gen-record")
    expect(record).to_contain_text(str(job["record"]["seeds"][0]))
    expect(record.locator("li[data-step=translate]")).to_contain_text("the model reads this language itself")
    link = page.locator(".gen-result a", has_text="Dieses variieren")
    expect(link).to_have_attribute("href", f"#/vary/{job['id']}/0")
    download = page.locator(".gen-result a[download]").first
    expect(download).to_have_attribute("href", f"/api/v1/jobs/{job['id']}/images/0")
    page.locator(".gen-more summary").click()
    assert not serious_violations(page)


def test_cancel_a_long_job(web_server, new_page):
    page = new_page(locale="en-US")
    open_generate(page, web_server.url)
    page.locator("#gen-prompt").fill("a lighthouse in a storm, oil painting")
    page.get_by_label("Number of images").select_option("4")
    slider = page.locator(".gen-slider input[type=range]").first
    slider.focus()
    page.keyboard.press("End")
    expect(slider).to_have_value("50")
    page.locator("#gen-prompt").press("Control+Enter")  # the shortcut submits too
    expect(page.locator("#gen-phase")).to_have_attribute("data-phase", "denoise", timeout=30_000)
    # While it denoises, the server's previews show the picture as it forms.
    live = page.locator("img.gen-live")
    expect(live).to_be_visible(timeout=30_000)
    assert live.get_attribute("src").startswith("data:image/jpeg;base64,")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#gen-phase")).to_have_text("Cancelled", timeout=30_000)
    expect(page.get_by_role("button", name="Generate", exact=True)).to_be_enabled()
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    job = httpx.get(f"{web_server.url}/api/v1/jobs/{page.locator('.gen-output').get_attribute('data-job')}").json()
    assert job["status"] == "cancelled" and job["request"]["num_images"] == 4 and job["request"]["steps"] == 50
    expect(page.locator(".gen-result")).to_have_count(0)
    expect(page.locator(".gen-record")).to_contain_text("Cancelled")


def test_a_refused_request_is_one_line_near_the_button(web_server, browser):
    # Its own context: the 400 is meant, and Chromium logs every failed load as a console error.
    ctx = browser.new_context(locale="en-US", viewport={"width": 768, "height": 1024})
    try:
        page = ctx.new_page()
        errors = watch_console(page)
        open_generate(page, web_server.url)
        page.locator("#gen-prompt").fill("a small boat")
        page.locator(".gen-more summary").click()
        page.get_by_label("Size").select_option("custom")
        page.get_by_label("Width (px)").fill("100")
        page.get_by_role("button", name="Generate", exact=True).click()
        line = page.locator(".gen-error")
        expect(line).to_contain_text("multiple of 8")
        expect(line).to_contain_text("Could not start:")
        assert line.get_attribute("aria-live") == "assertive"
        expect(page.get_by_role("button", name="Generate", exact=True)).to_be_enabled()
        assert all("400" in e for e in errors), errors
    finally:
        ctx.close()


def test_the_form_by_keyboard_only(web_server, new_page):
    page = new_page(locale="fr-FR")
    open_generate(page, web_server.url)
    page.locator("body").focus()

    def tab_to(test: str, limit: int = 30) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate(test):
                return
        raise AssertionError(f"Tab never reached {test}")

    tab_to("() => document.activeElement.id === 'gen-prompt'")
    page.keyboard.type("un chat noir sur un toit")
    tab_to("() => document.activeElement.type === 'range'")
    page.keyboard.press("Home")
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    tab_to("() => document.activeElement.classList.contains('gen-go')")
    page.keyboard.press("Enter")
    expect(page.locator(".gen-result img").first).to_be_visible(timeout=30_000)
    job = httpx.get(f"{web_server.url}/api/v1/jobs/{job_id_of(page)}").json()
    assert job["request"]["prompt"] == "un chat noir sur un toit" and job["request"]["steps"] == 5
    expect(page.locator(".gen-preview li[data-step=language]")).to_contain_text("fr")

    # A language switch relabels the form and the record without losing what was typed.
    page.select_option("#lang", "ko")
    expect(page.get_by_role("button", name="생성", exact=True)).to_be_visible()
    expect(page.locator("#gen-prompt")).to_have_value("un chat noir sur un toit")
    expect(page.locator(".gen-record dl")).to_contain_text("시드")
    # Away to the gallery and back: the job this tab made is shown again.
    page.locator("#tab-gallery").click()
    expect(page.locator(f".gal-card[data-job='{job['id']}']")).to_be_visible()
    page.locator("#tab-generate").click()
    expect(page.locator(".gen-result img").first).to_have_attribute("src", f"/api/v1/jobs/{job['id']}/images/0")
