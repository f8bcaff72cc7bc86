"""The vary view: a picture and an edit prompt in French, the server's description shown and
corrected, two variations next to the original, each a PNG the server has; a job's result
opened by its address; an image-to-image job re-run with changes from the gallery."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from harness.browser import image_pixels, serious_violations
from harness.images import png_bytes
from harness.server import wait_job
from PIL import Image, ImageDraw
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def picture() -> bytes:
    img = Image.new("RGB", (64, 64), (200, 60, 40))
    ImageDraw.Draw(img).ellipse((12, 12, 52, 52), fill=(30, 120, 200))
    return png_bytes(img)




def test_describe_correct_and_vary_in_french(web_server, new_page):
    page = new_page(locale="fr-FR")
    page.goto(web_server.url + "/#/vary")
    page.locator(".dropzone input[type=file]").set_input_files(
        {"name": "affiche.png", "mimeType": "image/png", "buffer": picture()})
    expect(page.locator("img.vary-input")).to_be_visible()
    page.get_by_label("Consigne de modification").press_sequentially("en aquarelle")
    assert not serious_violations(page)

    page.get_by_role("button", name="Décrire l’image").click()
    description = page.get_by_label("Ce que montre l’image")
    merged = page.locator("output.vary-merged")
    expect(description).to_have_value(re.compile(r"\w{3}"))
    # The rules merge reads the French edit: "en aquarelle" becomes "as a watercolor".
    expect(merged).to_have_text(re.compile(r", as a watercolor$"))
    described = description.input_value()
    assert described in merged.inner_text()

    description.fill("un chat rouge sur un fond bleu")
    # The user's French words stay as written: the default model reads French.
    expect(merged).to_have_text("un chat rouge sur un fond bleu, as a watercolor")

    page.get_by_label("Variations", exact=True).fill("2")
    page.get_by_role("spinbutton", name="Étapes").fill("4")
    page.get_by_role("button", name="Créer les variations").click()
    figures = page.locator(".vary-item")
    expect(figures).to_have_count(3, timeout=30_000)
    expect(page.locator("[id^=vary-progress]")).to_have_text("Terminé")

    # Side by side at 768 px: the original and the first variation share a row.
    boxes = [figures.nth(i).bounding_box() for i in range(3)]
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 2 and boxes[1]["x"] > boxes[0]["x"] + boxes[0]["width"] - 1
    assert boxes[2]["y"] > boxes[0]["y"] + boxes[0]["height"] - 1
    seeds = []
    for i in range(3):
        img = figures.nth(i).locator("img")
        expect(img).to_have_js_property("complete", True)
        assert img.evaluate("(el) => el.naturalWidth") > 0
        body = page.request.get(web_server.url + img.get_attribute("src")).body()
        assert body.startswith(PNG_MAGIC)
        if i:
            seeds.append(int(figures.nth(i).get_attribute("data-seed")))
            assert f"Graine {seeds[-1]}" in figures.nth(i).inner_text()
            download = figures.nth(i).get_by_role("link", name="Télécharger")
            assert download.get_attribute("download") and download.get_attribute("href") == img.get_attribute("src")

    job_id = figures.nth(1).get_by_role("link", name="Varier celle-ci").get_attribute("href").split("/")[2]
    with web_server.client() as c:
        job = c.get(f"/api/v1/jobs/{job_id}").json()
    assert job["mode"] == job["request"]["mode"] == "image-to-image"
    assert job["request"]["num_images"] == 2 and job["request"]["steps"] == 4
    assert [r["seed"] for r in job["results"]] == seeds
    assert job["options"] == {"describe": "local", "description": "un chat rouge sur un fond bleu"}
    steps = {s["step"]: s for s in job["record"]["request"]["prompt_record"]["steps"]}
    assert steps["describe"]["output"] == "un chat rouge sur un fond bleu" and steps["describe"]["backend"] == "user"
    assert job["prompt"].startswith("un chat rouge sur un fond bleu")
    record = page.locator(".vary-record")
    expect(record).to_contain_text("Image vers image")  # the mode, named in the page's language (record.js)
    expect(record).to_contain_text("un chat rouge sur un fond bleu")
    assert not serious_violations(page)

    # A language switch relabels the form and keeps what was typed.
    page.select_option("#lang", "en")
    expect(page.get_by_label("Edit prompt")).to_have_value("en aquarelle")
    expect(page.get_by_label("What the picture shows")).to_have_value("un chat rouge sur un fond bleu")


def test_a_jobs_result_opens_as_the_picture_to_vary(web_server, new_page):
    with web_server.client() as c:
        job = c.post("/api/v1/jobs", json={"prompt": "a red apple", "steps": 4, "num_images": 2}).json()
        from harness.server import wait_job

        assert wait_job(c, job["id"])["status"] == "succeeded"
        expected = c.get(f"/api/v1/jobs/{job['id']}/images/1").content
    page = new_page(locale="en-US")
    page.goto(f"{web_server.url}/#/vary/{job['id']}/1")
    original = page.locator("img.vary-input")
    expect(original).to_be_visible()
    expect(page.locator(".vary-file")).to_have_text(f"{job['id'][:8]}-1.png")
    # The picture shown is the job's second result: the same pixels (summed in a canvas).
    expect(original).to_have_js_property("complete", True)
    img = np.asarray(Image.open(io.BytesIO(expected)).convert("RGBA"))
    assert np.array_equal(image_pixels(original), img)
    expect(page.get_by_role("button", name="Make variations")).to_be_enabled()
    assert not serious_violations(page)

    # A big photo: the description preview sends it at most 512 px wide; the job gets it whole.
    big = Image.new("RGB", (1200, 800), (40, 140, 60))
    page.locator(".dropzone input[type=file]").set_input_files(
        {"name": "big.png", "mimeType": "image/png", "buffer": png_bytes(big)})
    with page.expect_request("**/api/v1/prompt") as sent:
        page.get_by_role("button", name="Describe the picture").click()
    data_url = sent.value.post_data_json["image"]
    assert data_url.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).size == (512, 341)
    expect(page.get_by_label("What the picture shows")).to_have_value(re.compile(r"\w{3}"))


def test_an_image_to_image_job_rerun_from_the_gallery_fills_vary(web_server, new_page):
    pic = picture()
    asked = {"prompt": "en aquarelle", "mode": "image-to-image", "num_images": 2, "strength": 0.55, "seed": 77,
             "steps": 4, "prompt_options": {"describe": "local", "description": "un chat rouge sur un fond bleu",
                                            "style": "watercolor"}}
    with web_server.client() as c:
        r = c.post("/api/v1/uploads", data={"request": json.dumps(asked)},
                   files={"image": ("affiche.png", pic, "image/png")})
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["id"])
        assert job["status"] == "succeeded"

    page = new_page(locale="fr-FR")
    page.goto(f"{web_server.url}/#/gallery/{job['id']}")
    page.get_by_role("dialog").get_by_role("button", name="Relancer avec des modifications").click()
    expect(page).to_have_url(re.compile(r"#/vary$"))

    # The job's input picture, loaded as if picked: the same pixels.
    original = page.locator("img.vary-input")
    expect(original).to_be_visible()
    expect(original).to_have_js_property("complete", True)
    want = np.asarray(Image.open(io.BytesIO(pic)).convert("RGBA"))
    assert np.array_equal(image_pixels(original), want)

    # The fields, and the corrected description with the preview of the merge made from it.
    expect(page.get_by_label("Consigne de modification")).to_have_value("en aquarelle")
    expect(page.locator("input[name=strength]")).to_have_value("0.55")
    expect(page.locator("input[name=num_images]")).to_have_value("2")
    expect(page.locator("input[name=seed]")).to_have_value("77")
    expect(page.locator("input[name=steps]")).to_have_value("4")
    expect(page.get_by_label("Style")).to_have_value("watercolor")
    expect(page.get_by_label("Modèle")).to_have_value("")
    expect(page.get_by_label("Ce que montre l’image")).to_have_value("un chat rouge sur un fond bleu")
    expect(page.locator("output.vary-merged")).to_contain_text("un chat rouge sur un fond bleu")
    expect(page.locator(".vary-steps li[data-step=describe]")).to_have_count(1)

    # Changed and started again: the same picture, the change, the rest as before.
    page.locator("input[name=num_images]").fill("1")
    page.get_by_role("button", name="Créer les variations").click()
    expect(page.locator(".vary-item")).to_have_count(2, timeout=30_000)
    new_id = page.locator(".vary-item a.vary-link[href^='#/vary/']").first.get_attribute("href").split("/")[2]
    with web_server.client() as c:
        again = c.get(f"/api/v1/jobs/{new_id}").json()
    assert new_id != job["id"] and again["status"] == "succeeded"
    assert again["inputs"]["image"]["sha256"] == job["inputs"]["image"]["sha256"]
    keys = ("prompt", "mode", "strength", "seed", "steps")
    assert {k: again["request"][k] for k in keys} == {k: job["request"][k] for k in keys}
    assert again["request"]["num_images"] == 1
    assert again["options"] == job["options"]
