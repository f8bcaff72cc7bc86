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
from bildwerk.engines.base import image_file_name
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
    """Make the three pictures in ``out``: text-to-image-seed1.png, image-to-image-seed2.png and
    inpaint-seed3.png. The same seeds make the same pictures, so a second run replaces the
    first run's three, and says so; no other file is touched."""
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    bw = Bildwerk(_demo_model(out, model, console))
    results = []

    t2i = bw.generate("ein roter Apfel auf einem Tisch", seed=1, steps=steps)
    results.append((t2i, "text-to-image"))
    base = t2i.images[0]

    results.append((bw.vary(base, "a red apple, watercolor", seed=2, steps=steps, strength=0.6), "image-to-image"))

    mask = Image.new("L", base.size, 0)
    w, h = base.size
    ImageDraw.Draw(mask).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=255)
    results.append((bw.inpaint(base, mask, "ein See", seed=3, steps=steps), "inpaint"))

    paths: list[Path] = []
    for result, stem in results:
        earlier = {s: (out / image_file_name(stem, s)).exists() for s in result.seeds}
        for p, seed in zip(result.save(out, stem, overwrite=True), result.seeds, strict=True):
            meta = read_png_metadata(p)
            again = " [dim](replaced the earlier demo's picture)[/]" if earlier[seed] else ""
            console.print(f"[bold]{p}[/]{again}")
            console.print(f"  {(meta['parameters'] or '').replace(chr(10), ' | ')}")
            paths.append(p)
    return paths
