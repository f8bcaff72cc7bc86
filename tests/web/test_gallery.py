"""The gallery end to end: jobs made through the REST API found by a word of their prompt,
opened, deleted (gone from the API), re-run in the generate view, opened by address, exported
for training, an open job followed while it runs; axe-core on the grid and the detail."""

from __future__ import annotations

import io
import re
import uuid
import zipfile

import httpx
import pytest
from harness.browser import serious_violations
from harness.server import wait_job
from playwright.sync_api import expect

pytestmark = pytest.mark.browser




@pytest.fixture(scope="module")
def made(web_server):
    """Finished jobs with a made-up word each, so a search finds exactly one; queued together."""
    tag = uuid.uuid4().hex[:6]
    words = {"zebra": f"zebra{tag}", "giraffe": f"giraffe{tag}", "lighthouse": f"Leuchtturm{tag}"}
    with web_server.client() as c:
        ids = {}
        for name, word in words.items():
            r = c.post("/api/v1/jobs", json={"prompt": f"eine {word} auf der Wiese", "steps": 4, "seed": 1234})
            assert r.status_code == 202, r.text
            ids[name] = r.json()["id"]
        for job_id in ids.values():
            assert wait_job(c, job_id)["status"] == "succeeded"
    return {name: (words[name], ids[name]) for name in words}


def search(page, word: str) -> None:
    box = page.get_by_label("Words of the prompt")
    box.fill(word)
    box.press("Enter")


def test_search_open_delete(web_server, new_page, made):
    word, job_id = made["zebra"]
    page = new_page(locale="en-US")
    page.goto(web_server.url + "/#/gallery")
    expect(page.locator(".gal-card").first).to_be_visible()
    assert not serious_violations(page)
    search(page, word)
    cards = page.locator(".gal-card")
    expect(cards).to_have_count(1)
    expect(cards.first).to_have_attribute("data-job", job_id)
    # The address keeps the search: a reload shows the same.
    assert word in page.url
    page.reload()
    expect(page.get_by_label("Words of the prompt")).to_have_value(word)
    expect(page.locator(".gal-card")).to_have_count(1)

    page.locator(".gal-card .gal-open").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator(".record")).to_contain_text(f"eine {word} auf der Wiese")
    expect(dialog.locator(".record")).to_contain_text("1234")
    img = dialog.locator(".gal-image img")
    expect(img).to_have_attribute("src", f"/api/v1/jobs/{job_id}/images/0")
    assert page.evaluate("(i) => i.complete && i.naturalWidth", img.element_handle()) > 0
    expect(dialog.get_by_role("link", name="Download for training (zip)")).to_have_attribute(
        "href", f"/api/v1/export?ids={job_id}")
    assert not serious_violations(page)

    dialog.get_by_role("button", name="Delete", exact=True).click()
    expect(dialog).to_contain_text("cannot be undone")
    assert httpx.get(f"{web_server.url}/api/v1/jobs/{job_id}").status_code == 200  # not before the confirm
    dialog.get_by_role("button", name="Yes, delete").click()
    expect(dialog).to_be_hidden()
    expect(page.locator(".gal-card")).to_have_count(0)
    expect(page.locator("#status")).to_have_text("The job was deleted.")
    assert httpx.get(f"{web_server.url}/api/v1/jobs/{job_id}").status_code == 404


def test_address_opens_a_job_and_rerun_fills_generate(web_server, new_page, made):
    word, job_id = made["giraffe"]
    page = new_page(locale="de-DE")
    page.goto(f"{web_server.url}/#/gallery/{job_id}")
    dialog = page.get_by_role("dialog")
    expect(dialog.locator(".record")).to_contain_text(word)
    dialog.get_by_role("button", name="Mit Änderungen neu erzeugen").click()
    expect(page).to_have_url(re.compile(r"#/generate$"))
    expect(page.locator("#gen-prompt")).to_have_value(f"eine {word} auf der Wiese")
    expect(page.get_by_label("Seed", exact=True)).to_have_value("1234")
    expect(page.locator(".gen-slider input[type=range]").first).to_have_value("4")
    # The form was filled, so the prompt steps are shown for it.
    expect(page.locator(".gen-preview li[data-step=language]")).to_be_visible()
    # Taken once: coming back to generate starts empty.
    page.goto(web_server.url + "/#/gallery")
    page.goto(web_server.url + "/#/generate")
    expect(page.locator("#gen-prompt")).to_have_value("")


def test_select_by_keyboard_and_export_for_training(web_server, new_page, made):
    _, job_id = made["giraffe"]
    _, other = made["lighthouse"]
    page = new_page(locale="en-US")
    page.goto(web_server.url + "/#/gallery")
    for jid in (job_id, other):
        box = page.locator(f".gal-card[data-job='{jid}'] input[type=checkbox]")
        box.focus()
        page.keyboard.press("Space")
        expect(box).to_be_checked()
    expect(page.locator(".gal-toolbar")).to_contain_text("2 selected")
    with page.expect_download() as dl:
        page.get_by_role("button", name="Export selected for training").click()
    data = open(dl.value.path(), "rb").read()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "metadata.csv" in names and len([n for n in names if n.endswith(".png")]) == 2, names
    # Enter on a card opens it; Escape closes it and gives the focus back.
    opener = page.locator(f".gal-card[data-job='{job_id}'] .gal-open")
    opener.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page).to_have_url(re.compile(f"#/gallery/{job_id}$"))
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(opener).to_be_focused()
    expect(page).to_have_url(re.compile(r"#/gallery$"))


def test_an_open_job_still_running_is_followed_to_its_end(web_server, new_page):
    word = f"Nachtzug{uuid.uuid4().hex[:6]}"
    page = new_page(locale="en-US")
    page.goto(web_server.url + "/#/gallery")
    expect(page.locator(".view-gallery > p[role=status]")).to_have_text(re.compile(r"shown|No job matches"))
    with web_server.client() as c:
        r = c.post("/api/v1/jobs", json={"prompt": f"ein {word}", "steps": 10, "seed": 7})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
    # Opened at once (a hash change, no page load): the job is still queued or running.
    page.evaluate("(id) => { location.hash = `#/gallery/${id}`; }", job_id)
    dialog = page.get_by_role("dialog")
    body = dialog.locator(".gal-detail-body")
    expect(body).to_have_attribute("data-status", re.compile("^(queued|running)$"))
    expect(dialog.locator(".gal-progress")).to_have_text(re.compile(r"Waiting in the queue|Running"))
    expect(dialog.get_by_role("button", name="Cancel")).to_be_visible()
    assert dialog.locator(".gal-image").count() == 0
    assert not serious_violations(page)
    # It ends while the dialog is open: the detail shows the finished job, no reload.
    expect(body).to_have_attribute("data-status", "succeeded", timeout=30_000)
    img = dialog.locator(".gal-image img")
    expect(img).to_have_attribute("src", f"/api/v1/jobs/{job_id}/images/0")
    expect(img).to_have_js_property("complete", True)
    assert img.evaluate("(i) => i.naturalWidth") > 0
    expect(dialog.locator(".gal-progress")).to_have_count(0)
    expect(dialog.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(dialog.locator(".record")).to_contain_text("Done")
    expect(page.locator(f".gal-card[data-job='{job_id}']")).to_have_attribute("data-status", "succeeded")
    with web_server.client() as c:
        assert c.get(f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded"
