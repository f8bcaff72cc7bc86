"""Train the default model's UNet from a prepared file within a time budget (GPU machine).

A short probe measures the speed of this model and batch on this machine; the recipe's UNet
stage then runs for as many steps as fit in ``--minutes``, its cosine schedule spread over
them. The finished model (UNet in fp16, the VAE it was prepared with, bildwerk.json) lands in
``--out``/model, with ``run.json`` saying what ran. Works on a CPU too, for a dry run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
START = time.monotonic()

from bildwerk.train.recipe import UNET_RECIPE_GPU as GPU  # noqa: E402  (after the path is set)


class OutOfTime(Exception):
    """The hard stop came before the planned steps: the last checkpoint is the result."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "var/gpu/prepared.safetensors")
    ap.add_argument("--vae", type=Path, default=ROOT / "src/bildwerk/data/models/default/vae")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=6.0, help="Training time budget (the probe excluded).")
    ap.add_argument("--steps", type=int, default=None, help="Run exactly this many steps instead.")
    ap.add_argument("--batch-size", type=int, default=GPU["batch_size"])
    ap.add_argument("--lr", type=float, default=GPU["learning_rate"])
    ap.add_argument("--warmup", type=int, default=GPU["warmup_steps"])
    ap.add_argument("--ema", type=float, default=GPU["ema_decay"])
    ap.add_argument("--channels", default=",".join(map(str, GPU["unet"]["block_out_channels"])),
                    help="UNet block_out_channels.")
    ap.add_argument("--prediction-type", default="epsilon", choices=["epsilon", "v_prediction"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--probe-steps", type=int, default=100)
    ap.add_argument("--stop-after", type=float, default=None,
                    help="Hard stop, seconds after this script started: if the steps have not all run "
                         "by then (a slower machine than the probe said), the last checkpoint is kept.")
    a = ap.parse_args()

    import torch

    from bildwerk.train.recipe import unet_config, unet_to_half
    from bildwerk.train.unet import train_unet

    unet = {"block_out_channels": tuple(int(c) for c in a.channels.split(","))}
    common = dict(batch_size=a.batch_size, learning_rate=a.lr, warmup_steps=a.warmup, ema_decay=a.ema,
                  prediction_type=a.prediction_type, device=a.device, sample_every=0, unet=unet)
    steps = a.steps
    probe = None
    if steps is None:
        stamps: list[float] = []
        cfg = unet_config(a.data, a.out / "probe", a.vae, recipe="gpu", steps=a.probe_steps,
                          checkpoint_every=a.probe_steps, **common)
        train_unet(cfg, show_progress=False, callback=lambda e: stamps.append(time.perf_counter()))
        # Steady speed over the second half of the probe: the first steps load and tune kernels,
        # and on a GPU they can take longer than all the others together.
        mid = len(stamps) // 2
        it_s = (len(stamps) - 1 - mid) / max(stamps[-1] - stamps[mid], 1e-9)
        probe = {"steps": a.probe_steps, "it_s": round(it_s, 2)}
        steps = max(a.probe_steps, int(it_s * a.minutes * 60 * 0.93))  # exports and checkpoints take the rest
        shutil.rmtree(a.out / "probe", ignore_errors=True)
    print(f"training {steps} steps (batch {a.batch_size}) on {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}",
          flush=True)
    cfg = unet_config(a.data, a.out, a.vae, recipe="gpu", steps=steps, checkpoint_every=max(steps // 4, 1), **common)
    t0 = time.perf_counter()
    last: list[dict] = []

    def keep(event: dict) -> None:
        last[:] = [event]
        if a.stop_after is not None and time.monotonic() - START > a.stop_after:
            raise OutOfTime

    stopped_at = None
    try:
        model = train_unet(cfg, show_progress=False, callback=keep)
    except OutOfTime:
        from bildwerk.train.checkpoints import checkpoint_step, latest_checkpoint

        ckpt = latest_checkpoint(a.out / "unet-run")
        if ckpt is None:
            raise SystemExit("stopped before the first checkpoint: nothing to keep") from None
        model, stopped_at = ckpt / "model", checkpoint_step(ckpt)
        print(f"hard stop: keeping the checkpoint of step {stopped_at} of {steps}", flush=True)
    wall = time.perf_counter() - t0

    final = a.out / "model"
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(model, final)
    unet_to_half(final)
    # Every step's line would make the log a file of its own on the way back: keep ~1,000.
    lines = (a.out / "unet-run" / "train_log.jsonl").read_text().splitlines()
    (final / "train_log.jsonl").write_text("".join(f"{x}\n" for x in lines[:: max(1, len(lines) // 1000)]))
    run = {"steps": steps, "batch_size": a.batch_size, "lr": a.lr, "warmup": a.warmup, "ema": a.ema,
           "channels": unet["block_out_channels"], "prediction_type": a.prediction_type, "probe": probe,
           "train_wall_s": round(wall, 1), "stopped_at": stopped_at, "last": last[-1] if last else None,
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
           "torch": torch.__version__, "data": str(a.data)}
    (final / "run.json").write_text(json.dumps(run, indent=2))
    print(json.dumps(run), flush=True)


if __name__ == "__main__":
    main()
