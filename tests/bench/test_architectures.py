"""bench/architectures.py: the full-size configs give the published models' parameter counts
(built on the meta device: no memory, no time), so the GPU bench's FLOPs and memory are theirs."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def architectures(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import architectures

    return architectures


@pytest.mark.parametrize("name", ["sd15", "sd2", "sdxl"])
def test_full_size_parameter_counts(architectures, name):
    arch = architectures.BY_NAME[name]
    counts = architectures.meta_parameter_counts(arch)
    assert set(counts) == set(arch.expected_m)
    for net, expected in arch.expected_m.items():
        assert counts[net] / 1e6 == pytest.approx(expected, abs=0.05), (name, net, counts[net])


def test_the_three_differ_where_the_published_models_do(architectures):
    sd15, sd2, sdxl = (architectures.BY_NAME[n] for n in ("sd15", "sd2", "sdxl"))
    assert (sd15.size, sd2.size, sdxl.size) == (512, 768, 1024)
    assert sd2.scheduler["prediction_type"] == "v_prediction" and sd15.scheduler["prediction_type"] == "epsilon"
    assert sdxl.unet["addition_embed_type"] == "text_time" and len(sdxl.text) == 2
    assert sd2.text[0][0]["num_hidden_layers"] == 23  # OpenCLIP-H without its last layer
