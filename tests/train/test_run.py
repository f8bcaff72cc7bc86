"""The run skeleton the UNet and VAE trainers share (train/run.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bildwerk.train.checkpoints import latest_checkpoint
from bildwerk.train.precision import MixedPrecision
from bildwerk.train.progress import read_log
from bildwerk.train.run import LOG_NAME, RunState, open_progress, run_steps, warmup_cosine


@pytest.mark.parametrize("step", [0, 1, 7, 99, 100, 250, 499])
def test_warmup_cosine_is_the_trainers_former_schedules(step):
    total, base = 500, 3e-4
    # train/unet.py's and train/vae.py's own formulas before they shared this one.
    unet_warm = min(1.0, (step + 1) / max(1, 20))
    unet = base * unet_warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / total)))
    vae_warm = min(1.0, (step + 1) / 100)
    vae = base * vae_warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total)))
    assert warmup_cosine(step, base=base, total=total, warmup=20, floor=0.05) == unet
    assert warmup_cosine(step, base=base, total=total, warmup=100, floor=0.1) == vae


def _parts():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    return model, opt, torch.Generator().manual_seed(0), MixedPrecision.choose("fp32", torch.device("cpu"))


def test_steps_log_checkpoint_and_resume(tmp_path):
    model, opt, gen, amp = _parts()
    run = RunState(tmp_path, opt, gen, amp)
    seen: list[tuple[int, bool]] = []

    def train_step(step):
        loss = model(torch.randn(4, 2, generator=gen)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item(), {"extra": step}

    def checkpoint(done, loss, last):
        seen.append((done, last))
        run.save(done, loss, {"mine": done}, keep=2)

    progress = open_progress(tmp_path, 5, 0, description="t", show=False)
    run_steps(start=0, total=5, optimizer=opt, lr_at=lambda s: 0.01 * (s + 1), train_step=train_step,
              progress=progress, checkpoint_every=2, checkpoint=checkpoint)
    assert seen == [(2, False), (4, False), (5, True)]  # every 2 steps and the last
    log = read_log(tmp_path / LOG_NAME)
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5]
    assert list(log[0]) == ["step", "loss", "loss_smooth", "it_s", "eta_s", "extra", "lr"]
    assert log[4]["lr"] == pytest.approx(0.05)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "step-5"
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["step-4", "step-5"]  # pruned to 2
    assert json.loads((ckpt / "meta.json").read_text())["step"] == 5
    expected_draw = torch.randn(3, generator=gen)

    _, opt2, gen2, amp2 = _parts()
    state, start = RunState(tmp_path, opt2, gen2, amp2).restore(ckpt)
    assert start == 5 and state["mine"] == 5
    assert torch.equal(torch.randn(3, generator=gen2), expected_draw)  # the data RNG continues
    assert opt2.state_dict()["state"].keys() == opt.state_dict()["state"].keys()


def test_progress_is_closed_when_a_step_fails(tmp_path):
    _, opt, _, _ = _parts()
    progress = open_progress(tmp_path, 3, 0, description="t", show=False)
    closed = []
    progress.close = lambda: closed.append(True)

    def boom(step):
        raise RuntimeError("step failed")

    with pytest.raises(RuntimeError):
        run_steps(start=0, total=3, optimizer=opt, lr_at=lambda s: 0.1, train_step=boom,
                  progress=progress, checkpoint_every=1, checkpoint=lambda *a: None)
    assert closed == [True]


@pytest.mark.parametrize(("steps", "warmup"), [(30, 3), (5, 1), (1000, 100), (50_000, 200)])
def test_the_default_warm_up_is_a_tenth_of_the_run_capped(tmp_path, steps, warmup):
    from bildwerk.train.config import TrainConfig

    cfg = TrainConfig(data=tmp_path, out=tmp_path, steps=steps)
    assert cfg.warmup == warmup
    # The point of it: a short LoRA run reaches its learning rate (a fixed 200 gave 4% of it).
    peak = max(warmup_cosine(s, base=1e-4, total=steps, warmup=cfg.warmup, floor=0.05) for s in range(steps))
    assert peak >= 0.95e-4
    assert TrainConfig(data=tmp_path, out=tmp_path, steps=steps, warmup_steps=7).warmup == 7  # --warmup wins
