"""The multilingual text side of bildwerk's own models."""

from __future__ import annotations

import torch

from bildwerk.models.sentence_encoder import SentenceEncoder, split_phrases


def test_token_layout_and_empty_prompt():
    enc = SentenceEncoder()
    t = enc.encode(["ein roter Apfel", ""])
    assert t.shape == (2, 8, 512)
    assert torch.count_nonzero(t[1]) == 0  # the empty prompt is CFG's unconditional input
    whole, apfel = t[0, 0], t[0, 3]
    assert not torch.equal(whole, apfel)
    assert torch.equal(t[0, 4], whole)  # padding repeats the whole-prompt vector


def test_translations_land_closer_than_other_subjects():
    enc = SentenceEncoder()
    v = torch.nn.functional.normalize(enc.encode(["a red apple", "ein roter Apfel", "빨간 사과", "a fast car"])[:, 0], dim=-1)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 3] + 0.2 and sim[0, 2] > sim[0, 3] + 0.2


def test_split_phrases():
    assert split_phrases("A red, red apple!", 7) == ["red", "apple"]
    assert split_phrases("빨간 사과 한 개", 2) == ["빨간", "사과"]


def test_scale_is_applied_and_recorded_by_training_config():
    from bildwerk.models.sentence_encoder import SentenceEncoderConfig

    raw = SentenceEncoder().encode(["a lake"])
    scaled = SentenceEncoder(SentenceEncoderConfig(scale=512**0.5)).encode(["a lake"])
    torch.testing.assert_close(scaled, raw * 512**0.5)
    assert abs(float(raw[0, 0].norm()) - 1.0) < 1e-3  # USE vectors are unit length


def test_the_encoder_asks_for_no_more_blas_threads_than_there_are_cores():
    """USE's package asks for 4; on 2 cores that made one prompt 0.18 s instead of 2 ms."""
    from bildwerk.core.threads import usable_cpus

    threads = SentenceEncoder()._model().threads
    assert 1 <= threads <= min(4, usable_cpus())
