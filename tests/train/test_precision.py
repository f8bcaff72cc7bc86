"""Mixed-precision choice: what "auto" picks, what is refused, and that a scaled fp16 step
and a bf16 step both train."""

from __future__ import annotations

import pytest
import torch

from bildwerk.core.errors import InvalidRequestError
from bildwerk.train import precision as prec
from bildwerk.train.precision import MixedPrecision, resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cpu_follows_the_hardware(monkeypatch, native):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"  # asked for: allowed, if slower


def test_auto_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("auto", torch.device("cuda"), auto_fp16=False) == "fp32"  # the VAE's
    assert resolve_precision("fp16", torch.device("cuda"), auto_fp16=False) == "fp16"  # asked for
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"


@pytest.mark.parametrize(("name", "device", "message"), [
    ("fp16", CPU, "not supported on the CPU"),
    ("bf16", torch.device("mps"), "not supported on MPS"),
    ("half", CPU, "unknown precision"),
])
def test_impossible_choices_are_refused(name, device, message):
    with pytest.raises(InvalidRequestError, match=message):
        resolve_precision(name, device)


def test_cpu_flags_are_read_from_proc(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    real = prec.Path

    monkeypatch.setattr(prec, "Path", lambda p: info if p == "/proc/cpuinfo" else real(p))
    prec.cpu_has_native_bf16.cache_clear()
    try:
        assert prec.cpu_has_native_bf16() is True
        info.write_text("flags : fpu sse avx2\n")
        prec.cpu_has_native_bf16.cache_clear()
        assert prec.cpu_has_native_bf16() is False
    finally:
        prec.cpu_has_native_bf16.cache_clear()


def _one_step(amp: MixedPrecision) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 8)
    with amp.autocast():
        y = model(x)
    loss = torch.nn.functional.mse_loss(y.float(), x)
    amp.backward(loss)
    amp.step(opt, list(model.parameters()), clip=1.0)
    assert all(p.grad is None for p in model.parameters())  # cleared for the next step
    return model, torch.stack([(a - b.detach()).abs().sum() for a, b in zip(before, model.parameters(), strict=True)])


def test_bf16_step_computes_in_bf16_and_keeps_fp32_weights():
    amp = MixedPrecision.choose("bf16", CPU)
    with amp.autocast():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16
    model, moved = _one_step(amp)
    assert (moved > 0).all()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert amp.state_dict() is None


def test_fp16_step_is_scaled_and_the_scaler_state_round_trips():
    # The CUDA path, exercised on the CPU (torch's scaler and fp16 autocast run there too).
    amp = MixedPrecision("fp16", CPU, torch.amp.GradScaler("cpu", init_scale=1024.0))
    model, moved = _one_step(amp)
    assert (moved > 0).all()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    state = amp.state_dict()
    assert state["scale"] == 1024.0  # no overflow: the scale stays until growth_interval steps
    other = MixedPrecision("fp16", CPU, torch.amp.GradScaler("cpu"))
    other.load_state_dict(state)
    assert other.scaler.get_scale() == 1024.0


def test_accumulated_halves_give_the_full_batch_gradient():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    amp = MixedPrecision.choose("fp32", CPU)
    amp.backward(torch.nn.functional.mse_loss(model(x), y))
    full = model.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    for half in (slice(0, 4), slice(4, 8)):
        amp.backward(torch.nn.functional.mse_loss(model(x[half]), y[half]) / 2)
    assert torch.allclose(model.weight.grad, full, atol=1e-6)
