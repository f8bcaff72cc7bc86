"""The screenshots of docs/ui.md: each screen of the web interface in use, on a real server
with the embedded default model, in Debian's Chromium.

    .venv/bin/python tools/ui/screenshots.py            # writes docs/ui/*.png (about 2 minutes)

It drives the page as a user would (the same selectors as tests/web), so a screen that no
longer works shows up here too. Korean needs a CJK font (Debian: fonts-noto-cjk).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the test harness: a server subprocess, Chromium's flags

from harness.browser import launch  # noqa: E402
from harness.server import ServerProcess, wait_job  # noqa: E402

OUT = ROOT / "docs" / "ui"


def satellite_map(path: Path) -> Path:
    """A made-up satellite picture: fields, a road, a river (no real map ships offline)."""
    w, h = 256, 192
    im = Image.new("RGB", (w, h), (92, 128, 64))
    d = ImageDraw.Draw(im)
    for i, colour in enumerate([(120, 150, 70), (160, 150, 90), (70, 110, 50), (140, 170, 90)] * 2):
        d.rectangle([i * 32, 0, i * 32 + 30, 88], fill=colour)
        d.rectangle([i * 32 + 6, 104, i * 32 + 28, 188], fill=colour[::-1])
    d.line([(0, 96), (w, 80)], fill=(150, 150, 150), width=6)
    d.line([(128 + 30 * math.sin(y / 18), y) for y in range(h)], fill=(50, 90, 170), width=8)
    im.save(path)
    return path


def shot(page, name: str) -> None:
    page.wait_for_timeout(300)  # let the last paint settle
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
    print("wrote", OUT / f"{name}.png")


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=90_000)

    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bildwerk-shots-"))
    srv = ServerProcess(tmp, None).start()
    keyed = ServerProcess(tmp / "keyed", None, api_key="kiosk", warmup=False)
    (tmp / "keyed").mkdir()
    keyed.start()
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            for prompt, seed in (("ein Leuchtturm am Meer", 3), ("a red apple on a table", 5),
                                 ("un chat sur un canapé", 8), ("푸른 하늘 아래 집", 13), ("зимний лес", 21)):
                wait_job(c, c.post("/api/v1/jobs", json={"prompt": prompt, "seed": seed, "steps": 20}).json()["id"])
        with sync_playwright() as p:
            browser = launch(p)

            def page_for(locale: str, size=(1024, 900)):
                ctx = browser.new_context(locale=locale, viewport={"width": size[0], "height": size[1]},
                                          device_scale_factor=1)
                ctx.set_default_timeout(60_000)
                return ctx.new_page()

            # Generate, in German: the prompt steps while typing, then the result and its record.
            page = page_for("de-DE")
            page.goto(srv.url + "/#/generate")
            page.locator("#gen-prompt").press_sequentially("ein Leuchtturm am Meer bei Sonnenuntergang")
            expect(page.locator(".gen-preview li[data-step=language]")).to_contain_text("de")
            page.get_by_role("button", name="Erzeugen", exact=True).click()
            expect(page.locator("#gen-phase")).to_have_text("Fertig")
            shot(page, "generate")

            # The same screen in Korean.
            page = page_for("ko-KR")
            page.goto(srv.url + "/#/generate")
            page.locator("#gen-prompt").press_sequentially("바닷가의 등대")
            expect(page.locator(".gen-preview li[data-step=language]")).to_contain_text("ko")
            shot(page, "generate-ko")

            # Vary, in French: a picture, "en aquarelle", the description, two variations.
            page = page_for("fr-FR")
            page.goto(srv.url + "/#/vary")
            page.locator(".dropzone input[type=file]").set_input_files(str(satellite_map(tmp / "carte.png")))
            page.get_by_label("Consigne de modification").press_sequentially("en aquarelle")
            page.get_by_role("button", name="Décrire l’image").click()
            expect(page.locator("output.vary-merged")).not_to_be_empty()
            page.get_by_label("Variations", exact=True).fill("2")
            page.get_by_role("button", name="Créer les variations").click()
            expect(page.locator(".vary-item")).to_have_count(3)  # the original and two variations
            shot(page, "vary")

            # Inpaint on a tablet in portrait, in German: the museum's flow.
            page = page_for("de-DE", (768, 1024))
            page.goto(srv.url + "/#/inpaint")
            page.locator(".view-inpaint .dropzone input[type=file]").set_input_files(str(tmp / "carte.png"))
            box = page.locator(".me-image").bounding_box()
            page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.35 * box["height"])
            page.mouse.down()
            for i in range(12):
                page.mouse.move(box["x"] + (0.3 + 0.03 * i) * box["width"],
                                box["y"] + (0.35 + 0.02 * math.sin(i)) * box["height"], steps=3)
            page.mouse.up()
            page.get_by_label("Was soll in der markierten Fläche entstehen?").fill("ein See")
            shot(page, "inpaint-mask")
            page.get_by_role("button", name="Jetzt übermalen").click()
            expect(page.locator(".inp-result img.inp-after")).to_be_visible()
            expect(page.locator(".inp-progress [role=status]")).to_have_text("Fertig")
            page.locator(".inp-result").scroll_into_view_if_needed()
            shot(page, "inpaint-result")

            with httpx.Client(base_url=srv.url, timeout=120) as c:  # a pool fills while we look around
                pool = c.post("/api/v1/pools", json={"topic": "Medizin und Gesundheit", "images": 6, "offline": True,
                                                     "mix": "interiors=50,exteriors=50",
                                                     "settings": {"steps": 8}}).json()
                c.post(f"/api/v1/pools/{pool['id']}/start")
                done_pool = pool["id"]

            # The gallery, in English.
            page = page_for("en-US")
            page.goto(srv.url + "/#/gallery")
            page.wait_for_selector(".view-gallery img")
            shot(page, "gallery")

            # Pools, in German: a pool filled from a topic.
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                deadline = time.monotonic() + 300
                while c.get(f"/api/v1/pools/{done_pool}").json()["status"] != "done" and time.monotonic() < deadline:
                    time.sleep(1)
            page = page_for("de-DE")
            page.goto(srv.url + f"/#/pools/{done_pool}")
            page.wait_for_selector(".view-pools img")
            shot(page, "pools")

            # A key-protected server asks for the key once.
            page = page_for("de-DE", (768, 600))
            page.goto(keyed.url + "/")
            expect(page.locator("#login")).to_be_visible()
            shot(page, "login")
            browser.close()
    finally:
        srv.stop()
        keyed.stop()


if __name__ == "__main__":
    main()
