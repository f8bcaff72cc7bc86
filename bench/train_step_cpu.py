"""Milliseconds per part of one training step of the default model's UNet (batch 32, bf16
autocast): forward+backward, optimizer (plain vs fused AdamW), EMA (plain vs foreach).

    OMP_NUM_THREADS=2 python bench/train_step_cpu.py

Run it alone: other busy processes distort CPU timings.
"""

import time
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.training_utils import EMAModel


def main() -> None:
    torch.manual_seed(0)
    folder = Path(__file__).resolve().parents[1] / "src/bildwerk/data/models/default/unet"
    base = UNet2DConditionModel.from_pretrained(folder).float()
    x, c = torch.randn(32, 4, 16, 16), torch.randn(32, 8, 512)
    t = torch.randint(0, 1000, (32,))

    def run(fused: bool, foreach_ema: bool, n: int = 8) -> dict[str, float]:
        unet = UNet2DConditionModel.from_config(base.config)
        unet.load_state_dict(base.state_dict())
        unet.train()
        params = list(unet.parameters())
        opt = torch.optim.AdamW(params, lr=1e-5, fused=fused)
        ema = EMAModel(params, decay=0.999, foreach=foreach_ema)
        times = {"fwdbwd": 0.0, "opt": 0.0, "ema": 0.0}
        for i in range(n + 2):  # two warm-up steps
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = unet(x, t, c).sample
            loss = (out.float() - x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            ema.step(params)
            t3 = time.perf_counter()
            if i >= 2:
                times["fwdbwd"] += t1 - t0
                times["opt"] += t2 - t1
                times["ema"] += t3 - t2
        return {k: round(v / n * 1000, 1) for k, v in times.items()}

    for fused in (False, True, False, True):
        print("fused AdamW + foreach EMA" if fused else "plain AdamW + EMA", run(fused, fused), flush=True)


if __name__ == "__main__":
    main()
