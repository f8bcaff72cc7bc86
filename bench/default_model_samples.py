"""Render the model card's sample grid: ten prompts (five languages) x four seeds.

    python bench/default_model_samples.py --out docs/default-model-samples.png [--model DIR]

Column i is prompt i; row j uses seed j. 20 steps, the model's recommended guidance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PROMPTS = ["a red apple", "ein roter Apfel", "빨간 사과", "a banana", "Germany flag", "a tree", "ein Haus",
           "a cat", "a blue car", "une fleur"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default=None, help="model folder (default: the embedded default model)")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()

    from PIL import Image

    from bildwerk.core.request import build_request
    from bildwerk.engines.diffusers_engine import DiffusersEngine

    engine = DiffusersEngine()
    rows = []
    for seed in range(args.seeds):
        rows.append([engine.generate(build_request(prompt=prompt, model=args.model, seed=seed,
                                                   steps=args.steps)).images[0] for prompt in PROMPTS])
    w, h = rows[0][0].size
    grid = Image.new("RGB", (w * len(PROMPTS), h * len(rows)), "white")
    for j, row in enumerate(rows):
        for i, im in enumerate(row):
            grid.paste(im, (i * w, j * h))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"{args.out}: {len(PROMPTS)} prompts x {len(rows)} seeds")


if __name__ == "__main__":
    main()
