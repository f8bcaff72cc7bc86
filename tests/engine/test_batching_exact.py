"""Cross-request batching keeps seeds exact: every picture is bit-identical whether its
request ran alone or shared UNet calls with others (joining late, leaving early)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bildwerk.app.batching import ContinuousBatcher
from bildwerk.app.generate import Generator
from bildwerk.core.prompt import PromptOptions
from bildwerk.core.spec import JobSpec

OFF = PromptOptions(wildcards=False, translate="off")


@pytest.fixture(scope="module")
def generator(engine):
    return Generator(models=engine.models)


def _picture(size: int) -> Image.Image:
    im = Image.new("RGB", (size, size), (200, 180, 120))
    ImageDraw.Draw(im).rectangle((size // 4, size // 4, size // 2, size // 2), fill=(20, 60, 200))
    return im


def _mask(size: int) -> Image.Image:
    m = Image.new("L", (size, size), 0)
    ImageDraw.Draw(m).ellipse((size // 8, size // 8, size // 2, size // 2), fill=255)
    return m


def _specs(model: str | None, size: int) -> list[JobSpec]:
    base = dict(model=model, options=OFF, origin="python")
    return [
        JobSpec.build(prompt="ein See", seed=1, steps=6, **base),
        JobSpec.build(prompt="a red car", seed=2, steps=4, num_images=2, scheduler="Euler a", **base),
        JobSpec.build(prompt="une maison", seed=3, steps=5, guidance=1.0, **base),  # no guidance: 1 row
        JobSpec.build(mode="image-to-image", prompt="watercolor", image=_picture(size), seed=4, steps=6,
                      strength=0.7, **base),
        JobSpec.build(mode="inpaint", prompt="a lake", image=_picture(size), mask=_mask(size), seed=5,
                      steps=5, **base),
    ]


def _pixels(result) -> list[np.ndarray]:
    return [np.asarray(im) for im in result.images]


def _batched(generator: Generator, specs: list[JobSpec], join_every: int) -> dict[int, list[np.ndarray]]:
    """Run specs through one batcher; a new one joins every ``join_every`` steps."""
    batcher = ContinuousBatcher(max_rows=64)
    pending = list(enumerate(specs))
    out: dict[int, list[np.ndarray]] = {}
    steps = 0
    calls = []
    while pending or len(batcher):
        if pending and steps % join_every == 0:
            i, spec = pending.pop(0)
            task = generator.start(spec)
            if task.batched:
                batcher.add(str(i), task)
            else:
                out[i] = _pixels(task.finish())
        calls.append(len(batcher))
        for o in batcher.step():
            assert o.error is None, o.error
            out[int(o.key)] = _pixels(o.result)
        steps += 1
    assert max(calls) >= 3  # requests really shared calls
    return out


@pytest.mark.parametrize("kind", ["sd", "sdxl", "sd-inpaint"])
def test_tiny_models_batched_equals_alone(generator, tiny_models, kind):
    specs = _specs(str(tiny_models[kind]), 64)
    alone = {i: _pixels(generator.run(s)) for i, s in enumerate(specs)}
    together = _batched(generator, specs, join_every=1)
    for i in alone:
        for a, b in zip(alone[i], together[i], strict=True):
            assert np.array_equal(a, b), f"request {i} differs when batched"


def test_default_model_batched_equals_alone(generator):
    specs = _specs(None, 64)
    alone = {i: _pixels(generator.run(s)) for i, s in enumerate(specs)}
    together = _batched(generator, specs, join_every=2)
    for i in alone:
        for a, b in zip(alone[i], together[i], strict=True):
            assert np.array_equal(a, b), f"request {i} differs when batched"


def test_mixed_shapes_take_turns_and_bounds_hold(generator, tiny_models):
    ref = str(tiny_models["sd"])
    small = [JobSpec.build(prompt=f"p{i}", seed=i, steps=3, model=ref, options=OFF) for i in range(3)]
    wide = JobSpec.build(prompt="wide", seed=9, steps=3, width=96, height=64, model=ref, options=OFF)
    batcher = ContinuousBatcher(max_rows=4)  # two guided images per call
    for i, s in enumerate([*small, wide]):
        batcher.add(str(i), generator.start(s))
    seen_rows = []
    done = []
    while len(batcher):
        before = {k: generator for k in batcher.keys()}
        outcomes = batcher.step()
        seen_rows.append(len(before))
        done += [o.key for o in outcomes]
        assert all(o.error is None for o in outcomes)
    assert sorted(done) == ["0", "1", "2", "3"]
    alone = generator.run(wide)
    assert alone.images[0].size == (96, 64)
