"""`make run`: one text-to-image, one image-to-image and one inpainting run, end to end.

It uses the default model. Where none is installed yet, it builds a tiny model
with random weights so every mode still runs through the real engine: the
pictures are then noise, and the demo says so.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw
from rich.console import Console

from bildwerk.api import Bildwerk
from bildwerk.core.errors import ModelNotFoundError
from bildwerk.images.metadata import read_png_metadata
from bildwerk.models.loader import resolve_model


def _demo_model(out: Path, model: str | None, console: Console) -> str | None:
    if model is not None:
        return model
    try:
        resolve_model(None)
        return None
    except ModelNotFoundError:
        from bildwerk.models.tiny import save_tiny_model

        folder = out / "tiny-random-model"
        if not (folder / "model_index.json").is_file():
            save_tiny_model(folder, "sd")
        console.print(
            "[yellow]No default model is installed yet, so this demo uses a tiny model with "
            "random weights: the images are noise, but every step below is the real engine.[/]"
        )
        return str(folder)


def run_demo(out: Path, *, model: str | None = None, steps: int = 20, console: Console | None = None) -> list[Path]:
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    bw = Bildwerk(_demo_model(out, model, console))
    paths: list[Path] = []

    t2i = bw.generate("ein roter Apfel auf einem Tisch", seed=1, steps=steps)
    paths += t2i.save(out, "text-to-image")
    base = t2i.images[0]

    i2i = bw.vary(base, "a red apple, watercolor", seed=2, steps=steps, strength=0.6)
    paths += i2i.save(out, "image-to-image")

    mask = Image.new("L", base.size, 0)
    w, h = base.size
    ImageDraw.Draw(mask).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=255)
    paths += bw.inpaint(base, mask, "ein See", seed=3, steps=steps).save(out, "inpaint")

    for p in paths:
        meta = read_png_metadata(p)
        console.print(f"[bold]{p}[/]")
        console.print(f"  {(meta['parameters'] or '').replace(chr(10), ' | ')}")
    return paths
