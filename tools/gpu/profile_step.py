"""Where a training step of the default model's UNet spends its time (run on the GPU machine).

Times, for each of ``--batch-sizes`` on random data: the UNet's forward and backward (bf16
autocast and fp32, cuDNN tuning on), the fused AdamW step, diffusers' EMA step with and without
``foreach``, and copying one batch's conditioning to the device. The whole step of
``train_unet`` is what ``train_default.py``'s probe measures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))


def timed(fn, n: int, sync) -> float:
    for _ in range(5):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", default="256", help="Comma-separated; each is timed in turn.")
    ap.add_argument("--channels", default="64,128,256", help="UNet block_out_channels (the shipped shape).")
    ap.add_argument("--n", type=int, default=30)
    a = ap.parse_args()
    import torch

    from bildwerk.train.unet import build_unet

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.backends.cudnn.benchmark = True
    unet = build_unet(16, 512, {"block_out_channels": tuple(int(c) for c in a.channels.split(","))}).to(dev).train()
    for b in (int(x) for x in a.batch_sizes.split(",")):
        print(f"batch {b}")
        profile(unet, b, dev, sync, a.n)


def profile(unet, b: int, dev, sync, n: int) -> None:
    import torch
    from diffusers.training_utils import EMAModel

    x = torch.randn(b, 4, 16, 16, device=dev)
    t = torch.randint(0, 1000, (b,), device=dev)
    c = torch.randn(b, 8, 512, device=dev)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, fused=dev.type == "cuda")
    rows = {}

    def fwd_bwd():
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = unet(x, t, c).sample.float().square().mean()
        loss.backward()

    rows["forward+backward (bf16)"] = timed(fwd_bwd, n, sync)

    def fwd_bwd32():
        unet(x, t, c).sample.square().mean().backward()

    rows["forward+backward (fp32)"] = timed(fwd_bwd32, n, sync)
    rows["AdamW fused"] = timed(opt.step, n, sync)
    for foreach in (False, True):
        ema = EMAModel(unet.parameters(), decay=0.9995, foreach=foreach)
        ema.to(dev)
        rows[f"EMA step (foreach={foreach})"] = timed(lambda e=ema: e.step(unet.parameters()), n, sync)
    cpu = torch.randn(b, 8, 512)
    rows["4 MB host->device copy"] = timed(lambda: cpu.to(dev), n, sync)
    for k, v in rows.items():
        print(f"{k:32s} {v:8.2f} ms")


if __name__ == "__main__":
    main()
