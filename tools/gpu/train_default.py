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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "var/gpu/prepared.safetensors")
    ap.add_argument("--vae", type=Path, default=ROOT / "src/bildwerk/data/models/default/vae")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=6.0, help="Training time budget (the probe excluded).")
    ap.add_argument("--steps", type=int, default=None, help="Run exactly this many steps instead.")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--ema", type=float, default=0.9995)
    ap.add_argument("--channels", default="64,128,192", help="UNet block_out_channels.")
    ap.add_argument("--prediction-type", default="epsilon", choices=["epsilon", "v_prediction"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--probe-steps", type=int, default=40)
    a = ap.parse_args()

    import torch

    from bildwerk.train.recipe import unet_config
    from bildwerk.train.unet import train_unet

    unet = {"block_out_channels": tuple(int(c) for c in a.channels.split(","))}
    common = dict(batch_size=a.batch_size, learning_rate=a.lr, warmup_steps=a.warmup, ema_decay=a.ema,
                  prediction_type=a.prediction_type, device=a.device, sample_every=0, unet=unet)
    steps = a.steps
    probe = None
    if steps is None:
        seen: list[dict] = []
        cfg = unet_config(a.data, a.out / "probe", a.vae, steps=a.probe_steps,
                          checkpoint_every=a.probe_steps, **common)
        train_unet(cfg, show_progress=False, callback=seen.append)
        # Steady speed: the second half of the probe (the first steps warm up kernels).
        half = seen[len(seen) // 2 :]
        it_s = len(half) / sum(1 / max(e["it_s"], 1e-9) for e in half) if half else seen[-1]["it_s"]
        probe = {"steps": a.probe_steps, "it_s": it_s}
        steps = max(a.probe_steps, int(it_s * a.minutes * 60 * 0.93))  # exports and checkpoints take the rest
        shutil.rmtree(a.out / "probe", ignore_errors=True)
    print(f"training {steps} steps (batch {a.batch_size}) on {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}",
          flush=True)
    cfg = unet_config(a.data, a.out, a.vae, steps=steps, checkpoint_every=max(steps // 4, 1), **common)
    t0 = time.perf_counter()
    last: list[dict] = []

    def keep(event: dict) -> None:
        last[:] = [event]

    model = train_unet(cfg, show_progress=False, callback=keep)
    wall = time.perf_counter() - t0

    from diffusers import UNet2DConditionModel

    final = a.out / "model"
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(model, final)
    u = UNet2DConditionModel.from_pretrained(final / "unet")
    shutil.rmtree(final / "unet")
    u.to(torch.float16).save_pretrained(final / "unet", safe_serialization=True)
    shutil.copy(a.out / "unet-run" / "train_log.jsonl", final / "train_log.jsonl")
    run = {"steps": steps, "batch_size": a.batch_size, "lr": a.lr, "warmup": a.warmup, "ema": a.ema,
           "channels": unet["block_out_channels"], "prediction_type": a.prediction_type, "probe": probe,
           "train_wall_s": round(wall, 1), "last": last[-1] if last else None,
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
           "torch": torch.__version__, "data": str(a.data)}
    (final / "run.json").write_text(json.dumps(run, indent=2))
    print(json.dumps(run), flush=True)


if __name__ == "__main__":
    main()
