"""Debian's Chromium driven by Playwright (its own browser download is not available here).

``launch`` starts headless Chromium with the flags a closed network needs (no background
connections that would be refused at every start); ``watch_console`` records console errors
and uncaught page errors, which every browser test asserts are none.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
         "--metrics-recording-only", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    env = os.environ.get("BILDWERK_CHROMIUM")
    if env:
        return env
    for path in CHROMIUM_CANDIDATES:
        if os.path.exists(path):
            return path
    return shutil.which("chromium")


def launch(playwright: Any) -> Any:
    path = chromium_path()
    if path is None:
        raise RuntimeError("no Chromium: install Debian's (apt-get install chromium) or set BILDWERK_CHROMIUM")
    return playwright.chromium.launch(executable_path=path, headless=True, args=FLAGS)


def watch_console(page: Any) -> list[str]:
    """Console errors and uncaught exceptions of a page, as they happen."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    return errors


def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical accessibility violations on the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]


# The RGBA pixels of a loaded <img>, drawn into a canvas in the page.
_IMG_PIXELS = """(el) => {
    const c = document.createElement("canvas");
    c.width = el.naturalWidth; c.height = el.naturalHeight;
    const g = c.getContext("2d");
    g.drawImage(el, 0, 0);
    return [c.width, c.height, Array.from(g.getImageData(0, 0, c.width, c.height).data)];
}"""


def image_pixels(img: Any) -> Any:
    """What an <img> locator shows, as an (h, w, 4) uint8 array (wait until it is complete)."""
    import numpy as np

    w, h, data = img.evaluate(_IMG_PIXELS)
    return np.array(data, dtype=np.uint8).reshape(h, w, 4)
