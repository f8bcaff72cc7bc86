"""The inpaint view and its mask editor: painting with a mouse and with touch (real pointer
events), undo/redo/invert/clear, brush size, the soft-edge preview against the server's own
feather, and the museum's flow in German: a map, a painted area, "ein See", the result whose
pixels outside the mask are the input's, bit for bit; a remote model through the loopback
stand-in (and listed disabled when the server has no key); a job re-run from the gallery with
its picture and mask."""

from __future__ import annotations

import io
import json
import math
import re

import httpx
import numpy as np
import pytest
from harness.browser import serious_violations
from harness.server import wait_job
from PIL import Image, ImageDraw, ImageFilter
from playwright.sync_api import expect

from bildwerk.images.masks import feather_mask

pytestmark = pytest.mark.browser

W, H = 128, 96


@pytest.fixture(scope="module")
def map_png(tmp_path_factory):
    """A small "satellite map": fields, a road and a river."""
    im = Image.new("RGB", (W, H), (92, 128, 64))
    d = ImageDraw.Draw(im)
    for i, colour in enumerate([(120, 150, 70), (160, 150, 90), (70, 110, 50), (140, 170, 90)]):
        d.rectangle([i * 32, 0, i * 32 + 30, 44], fill=colour)
        d.rectangle([i * 32 + 6, 52, i * 32 + 28, 94], fill=colour[::-1])
    d.line([(0, 48), (W, 40)], fill=(150, 150, 150), width=4)
    d.line([(64 + 20 * math.sin(y / 12), y) for y in range(H)], fill=(50, 90, 170), width=5)
    path = tmp_path_factory.mktemp("inpaint") / "karte.png"
    im.save(path)
    return path


def open_editor(page, url, png):
    page.goto(url + "/#/inpaint")
    page.locator(".view-inpaint .dropzone input[type=file]").set_input_files(str(png))
    stage = page.locator(".me-stage")
    expect(stage).to_have_attribute("data-image-width", str(W))
    return stage


def pixels(stage) -> int:
    return int(stage.get_attribute("data-mask-pixels"))


def screen(page, fx: float, fy: float) -> tuple[float, float]:
    """A point of the image (fractions of its size) on the screen, wherever the view put it."""
    box = page.locator(".me-image").bounding_box()
    return box["x"] + fx * box["width"], box["y"] + fy * box["height"]


def stroke(page, *points, steps=1):
    page.mouse.move(*screen(page, *points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*screen(page, *p), steps=steps)
    page.mouse.up()


def test_mouse_painting_undo_redo_invert_clear_and_brush_size(web_server, new_page, map_png):
    page = new_page()
    stage = open_editor(page, web_server.url, map_png)
    size = int(page.locator("input[name=brush_size]").input_value())
    stroke(page, (0.2, 0.3), (0.8, 0.3))  # one fast move: the stroke is interpolated, no gaps
    expect(stage).not_to_have_attribute("data-mask-pixels", "0")
    n = pixels(stage)
    assert n >= 0.9 * 0.6 * W * size, (n, size)

    page.keyboard.press("Control+z")
    expect(stage).to_have_attribute("data-mask-pixels", "0")
    page.keyboard.press("Control+Shift+z")
    expect(stage).to_have_attribute("data-mask-pixels", str(n))
    page.get_by_role("button", name="Invert mask").click()
    expect(stage).to_have_attribute("data-mask-pixels", str(W * H - n))
    page.get_by_role("button", name="Undo").click()
    expect(stage).to_have_attribute("data-mask-pixels", str(n))
    page.get_by_role("button", name="Clear mask").click()
    expect(stage).to_have_attribute("data-mask-pixels", "0")
    page.keyboard.press("Control+z")
    expect(stage).to_have_attribute("data-mask-pixels", str(n))
    page.keyboard.press("Control+y")
    expect(stage).to_have_attribute("data-mask-pixels", "0")

    stroke(page, (0.3, 0.7), (0.5, 0.7))
    small = pixels(stage)
    page.keyboard.press("Control+z")
    for _ in range(3):
        page.keyboard.press("]")
    assert int(page.locator("input[name=brush_size]").input_value()) > size
    stroke(page, (0.3, 0.7), (0.5, 0.7))
    big = pixels(stage)
    assert big > small > 0

    # The brush's circle follows the mouse at its size on screen; Ctrl+wheel zooms, the wheel pans.
    page.mouse.move(*screen(page, 0.5, 0.5))
    zoom = float(stage.get_attribute("data-zoom"))
    circle = page.locator(".me-cursor").bounding_box()
    assert abs(circle["width"] - int(page.locator("input[name=brush_size]").input_value()) * zoom) < 1
    page.keyboard.down("Control")
    page.mouse.wheel(0, -300)
    page.keyboard.up("Control")
    expect(stage).not_to_have_attribute("data-zoom", f"{zoom:.3f}")
    assert float(stage.get_attribute("data-zoom")) > zoom
    before, layer = page.locator(".me-image").bounding_box(), page.locator(".me-layer")
    style = layer.get_attribute("style")
    page.mouse.wheel(0, 40)
    expect(layer).not_to_have_attribute("style", style)
    assert page.locator(".me-image").bounding_box()["y"] < before["y"]
    page.get_by_role("button", name="Whole picture").click()
    expect(stage).to_have_attribute("data-zoom", f"{zoom:.3f}")

    eraser = page.get_by_role("button", name="Eraser")
    eraser.click()
    expect(eraser).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("button", name="Brush")).to_have_attribute("aria-pressed", "false")
    stroke(page, (0.4, 0.55), (0.4, 0.85))
    left = pixels(stage)
    assert 0 < left < big

    # A language switch relabels the editor and keeps the mask and the tool.
    page.select_option("#lang", "fr")
    expect(page.get_by_role("button", name="Gomme")).to_have_attribute("aria-pressed", "true")
    expect(page.locator(".me-live")).to_contain_text("Marqué")
    expect(stage).to_have_attribute("data-mask-pixels", str(left))


def test_touch_one_finger_paints_two_fingers_zoom_without_painting(web_server, new_page, map_png):
    page = new_page(touch=True)
    stage = open_editor(page, web_server.url, map_png)
    cdp = page.context.new_cdp_session(page)

    def touch(kind, *points):
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
            {"x": x, "y": y, "id": i, "radiusX": 4, "radiusY": 4} for i, (x, y) in enumerate(points)]})

    a = screen(page, 0.25, 0.5)
    touch("touchStart", a)
    for i in range(1, 6):
        touch("touchMove", (a[0] + 30 * i, a[1]))
    touch("touchEnd")
    expect(stage).not_to_have_attribute("data-mask-pixels", "0")
    painted, zoom = pixels(stage), float(stage.get_attribute("data-zoom"))

    # The first finger lands and moves (it paints), then a second lands: that stroke goes, and
    # the two fingers spread apart: a zoom, with nothing painted.
    p1, p2 = screen(page, 0.4, 0.2), screen(page, 0.6, 0.3)
    touch("touchStart", p1)
    touch("touchMove", (p1[0] + 10, p1[1] + 10))
    touch("touchStart", (p1[0] + 10, p1[1] + 10), p2)
    for i in range(1, 6):
        touch("touchMove", (p1[0] + 10 - 12 * i, p1[1] + 10 - 8 * i), (p2[0] + 12 * i, p2[1] + 8 * i))
    touch("touchEnd")
    expect(stage).to_have_attribute("data-mask-pixels", str(painted))
    assert float(stage.get_attribute("data-zoom")) > 1.5 * zoom
    page.get_by_role("button", name="Whole picture").tap()
    expect(stage).to_have_attribute("data-zoom", f"{zoom:.3f}")
    page.get_by_role("button", name="Undo").tap()
    expect(stage).to_have_attribute("data-mask-pixels", "0")




def get_png(client, url) -> Image.Image:
    r = client.get(httpx.URL(url).path)
    assert r.status_code == 200, r.text
    return Image.open(io.BytesIO(r.content))


def test_museum_flow_in_german_keeps_every_pixel_outside_the_mask(web_server, new_page, map_png):
    page = new_page(locale="de-DE")
    stage = open_editor(page, web_server.url, map_png)
    expect(page.locator(".inp-mask h3")).to_have_text("2. Fläche markieren")
    submit = page.get_by_role("button", name="Jetzt übermalen")
    expect(submit).to_be_disabled()  # nothing marked yet
    stroke(page, (0.35, 0.3), (0.6, 0.45), (0.45, 0.65), steps=4)
    expect(submit).to_be_enabled()
    painted = pixels(stage)
    blur = int(page.locator("input[name=mask_blur]").input_value())
    assert blur > 0
    # The soft-edge preview as drawn on the overlay (its alpha), to compare with the server's.
    shown = np.array(page.locator(".me-mask").evaluate(
        "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((v, i) => i % 4 === 3))"),
        dtype=np.int16).reshape(H, W)

    page.get_by_label("Was soll in der markierten Fläche entstehen?").fill("ein See")
    page.get_by_text("Weitere Einstellungen").click()
    page.get_by_label("Schritte").fill("4")
    assert serious_violations(page) == []
    submit.click()
    after = page.locator(".inp-result img.inp-after")
    expect(after).to_be_visible(timeout=60_000)
    page.wait_for_function("() => { const i = document.querySelector('.inp-result img.inp-after');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    job_id = page.locator(".inp-result").get_attribute("data-job")
    expect(page.locator(".inp-progress [role=status]")).to_have_text("Fertig")
    expect(page.locator(".inp-result .record")).to_contain_text("inpaint")

    with web_server.client() as c:
        job = c.get(f"/api/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded" and job["mode"] == "inpaint"
        req = job["request"]
        assert (req["prompt"], req["steps"], req["only_masked"], req["mask_blur"]) == ("ein See", 4, True, blur)
        assert job["record"]["request"]["prompt_record"]["language"] == "de"
        sent = get_png(c, job["inputs"]["image"]["url"]).convert("RGB")
        mask = get_png(c, job["inputs"]["mask"]["url"]).convert("L")
        result = get_png(c, job["results"][0]["url"]).convert("RGB")
    original = np.asarray(Image.open(map_png).convert("RGB"))
    assert np.array_equal(np.asarray(sent), original)
    m = np.asarray(mask)
    assert mask.size == (W, H) and set(np.unique(m)) <= {0, 255} and int((m == 255).sum()) == painted
    assert np.abs(shown - np.asarray(feather_mask(mask, blur), dtype=np.int16)).max() <= 1

    grown = np.asarray(mask.filter(ImageFilter.MaxFilter(2 * (blur + 2) + 1))) > 0
    out = np.asarray(result)
    assert result.size == (W, H)
    assert np.array_equal(out[~grown], original[~grown]), "a pixel outside the mask changed"
    assert (out[m > 0] != original[m > 0]).any(), "nothing changed inside the mask"
    expect(after).to_have_attribute("src", httpx.URL(job["results"][0]["url"]).path)

    # Before/after by keyboard.
    split = page.get_by_label("Vorher ↔ Nachher")
    split.focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator(".inp-compare")).to_have_attribute("data-split", "51")
    page.keyboard.press("Home")
    expect(page.locator(".inp-compare")).to_have_attribute("data-split", "0")
    assert after.evaluate("el => el.style.clipPath") == "inset(0px 100% 0px 0px)"
    assert serious_violations(page) == []

    # The result opened from its job (#/inpaint/JOBID/INDEX) is the next picture to paint on.
    page.goto(f"{web_server.url}/#/inpaint/{job_id}/0")
    expect(stage).to_have_attribute("data-image-width", str(W))
    expect(stage).to_have_attribute("data-mask-pixels", "0")


def test_a_remote_model_inpaints_through_the_stand_in(web_server, new_page, map_png, fake_openai):
    page = new_page()
    stage = open_editor(page, web_server.url, map_png)
    stroke(page, (0.3, 0.35), (0.6, 0.6))
    expect(stage).not_to_have_attribute("data-mask-pixels", "0")
    # The test server has a key (for the stand-in): remote models can be chosen, no note.
    model = page.get_by_label("Model")
    expect(model.locator("option[value='openai:gpt-image-1']")).to_be_enabled()
    expect(page.locator(".inp-form")).not_to_contain_text("need an OpenAI key")
    model.select_option("openai:gpt-image-1")
    page.get_by_label("What should appear in the marked area?").fill("a lake")
    calls = len(fake_openai.image_calls)
    page.get_by_role("button", name="Paint it in").click()
    expect(page.locator(".inp-result img.inp-after")).to_be_visible(timeout=30_000)
    job_id = page.locator(".inp-result").get_attribute("data-job")
    expect(page.locator(".inp-result .record")).to_contain_text("openai:gpt-image-1")

    with web_server.client() as c:
        job = c.get(f"/api/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded" and job["engine"] == "openai"
        assert job["record"]["model"]["name"] == "openai:gpt-image-1"
        mask = np.asarray(get_png(c, job["inputs"]["mask"]["url"]).convert("L"))
        result = np.asarray(get_png(c, job["results"][0]["url"]).convert("RGB"))
    assert [call.endpoint for call in fake_openai.image_calls[calls:]] == ["edits"]
    original = np.asarray(Image.open(map_png).convert("RGB"))
    assert result.shape == original.shape
    # The stand-in answers the picture inverted (every pixel changed); the server pastes back
    # only the masked part, so outside the mask every pixel is the input's.
    assert np.array_equal(result[mask == 0], original[mask == 0]), "a pixel outside the mask changed"
    assert (result[mask > 0] != original[mask > 0]).any(), "nothing changed inside the mask"


def test_remote_models_without_a_key_are_listed_disabled_with_a_note(web_server, new_page, map_png):
    # The test server has a key; this page is told it has none, as a server without one says.
    def no_key(route):
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "remote_available": False})

    page = new_page(locale="de-DE")
    page.route("**/api/v1/models", no_key)
    page.goto(web_server.url + "/#/inpaint")
    page.locator(".view-inpaint .dropzone input[type=file]").set_input_files(str(map_png))
    model = page.get_by_label("Modell")
    expect(model).to_be_visible()
    remote = model.locator("option[value^='openai:']")
    assert remote.count() >= 1
    for i in range(remote.count()):
        expect(remote.nth(i)).to_be_disabled()
    expect(model.locator("option[value='']")).to_be_enabled()
    note = page.locator(f"#{model.get_attribute('aria-describedby')}")
    expect(note).to_have_text("Entfernte Modelle brauchen einen OpenAI-Schlüssel auf dem Server.")
    assert serious_violations(page) == []

    # Generate and vary list remote models too: disabled there as well, with the same note.
    for route in ("#/generate", "#/vary"):
        page.goto(f"{web_server.url}/{route}")
        sel = page.get_by_label("Modell", exact=True)
        expect(sel.locator("option[value='openai:gpt-image-1']")).to_be_disabled()
        expect(page.locator(f"#{sel.get_attribute('aria-describedby')}")).to_contain_text("OpenAI-Schlüssel")
    page.select_option("#lang", "ko")
    expect(page.locator(f"#{page.get_by_label('모델').get_attribute('aria-describedby')}")).to_have_text(
        "원격 모델을 쓰려면 서버에 OpenAI 키가 있어야 합니다.")


def test_an_inpaint_job_rerun_from_the_gallery_brings_its_picture_and_mask(web_server, new_page, map_png):
    sent_mask = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(sent_mask)
    d.ellipse([30, 20, 70, 60], fill=255)
    d.rectangle([80, 50, 110, 80], fill=255)
    asked = {"prompt": "ein See", "mode": "inpaint", "only_masked": True, "only_masked_padding": 24, "mask_blur": 3,
             "steps": 4, "guidance": 6.5, "seed": 5}
    buf = io.BytesIO()
    sent_mask.save(buf, "PNG")
    with web_server.client() as c:
        r = c.post("/api/v1/uploads", data={"request": json.dumps(asked)},
                   files={"image": ("karte.png", map_png.read_bytes(), "image/png"),
                          "mask": ("maske.png", buf.getvalue(), "image/png")})
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["id"])
        assert job["status"] == "succeeded"
        stored = np.asarray(get_png(c, job["inputs"]["mask"]["url"]).convert("L"))
    white = int((stored == 255).sum())
    assert white > 0

    page = new_page(locale="en-US")
    page.goto(f"{web_server.url}/#/gallery/{job['id']}")
    page.get_by_role("dialog").get_by_role("button", name="Re-run with changes").click()
    expect(page).to_have_url(re.compile(r"#/inpaint$"))
    stage = page.locator(".me-stage")
    expect(stage).to_have_attribute("data-image-width", str(W))
    expect(stage).to_have_attribute("data-mask-pixels", str(white))
    shown = np.array(page.locator(".me-image").evaluate(
        "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"), dtype=np.uint8)
    assert np.array_equal(shown.reshape(H, W, 4)[..., :3], np.asarray(Image.open(map_png).convert("RGB")))

    expect(page.get_by_label("What should appear in the marked area?")).to_have_value("ein See")
    expect(page.locator("input[name=guidance]")).to_have_value("6.5")
    expect(page.locator("input[name=mask_blur]")).to_have_value("3")
    expect(page.locator("input[name=only_masked_padding]")).to_have_value("24")
    expect(page.locator("input[name=seed]")).to_have_value("5")
    expect(page.locator("input[name=steps]")).to_have_value("4")
    expect(page.get_by_label("Model")).to_have_value("")
    expect(page.locator("#status")).to_contain_text("change what you like")
    # The loaded mask is one step of the history.
    page.get_by_role("button", name="Undo").click()
    expect(stage).to_have_attribute("data-mask-pixels", "0")
    page.get_by_role("button", name="Redo").click()
    expect(stage).to_have_attribute("data-mask-pixels", str(white))

    # Started again with a new seed: the same picture and mask go to the server.
    page.locator("input[name=seed]").fill("6")
    page.get_by_role("button", name="Paint it in").click()
    expect(page.locator(".inp-result img.inp-after")).to_be_visible(timeout=30_000)
    new_id = page.locator(".inp-result").get_attribute("data-job")
    with web_server.client() as c:
        again = c.get(f"/api/v1/jobs/{new_id}").json()
        again_mask = np.asarray(get_png(c, again["inputs"]["mask"]["url"]).convert("L"))
    assert new_id != job["id"] and again["status"] == "succeeded"
    assert again["inputs"]["image"]["sha256"] == job["inputs"]["image"]["sha256"]
    assert np.array_equal(again_mask, stored)
    keys = ("prompt", "mode", "only_masked_padding", "mask_blur", "steps", "guidance")
    assert {k: again["request"][k] for k in keys} == {k: job["request"][k] for k in keys}
    assert again["request"]["seed"] == 6
