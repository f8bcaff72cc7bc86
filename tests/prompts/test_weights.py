"""A1111 prompt weighting: parsing, and that a weight really moves the conditioning."""

from __future__ import annotations

import pytest
import torch

from bildwerk.core.weights import Segment, format_weighted, parse_weighted, plain_text
from bildwerk.engines.conditioning import encode_prompts


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a (red:1.3) apple", [("a ", 1.0), ("red", 1.3), (" apple", 1.0)]),
        ("((cat)) on [mat]", [("cat", 1.21), (" on ", 1.0), ("mat", 0.909091)]),
        ("(a (b:2))", [("a ", 1.1), ("b", 2.2)]),
        ("a \\(literal\\) [thing\\]", [("a (literal) ", 1.0), ("thing]", 0.909091)]),
        ("ratio 1:2, x:1.5) y", [("ratio 1:2, x:1.5) y", 1.0)]),  # stray syntax is text
        ("open (to the end", [("open ", 1.0), ("to the end", 1.1)]),  # as A1111 does
        ("", []),
    ],
)
def test_parse(prompt, expected):
    assert [(s.text, s.weight) for s in parse_weighted(prompt)] == expected


def test_plain_text_and_round_trip():
    assert plain_text("a (red:1.3)  [apple]") == "a red apple"
    text = format_weighted([("lake", 1.3), ("city", 1.0), ("a (b)", 0.8)])
    assert text == "(lake:1.30), city, (a \\(b\\):0.80)"
    assert parse_weighted(text) == [Segment("lake", 1.3), Segment(", city, ", 1.0), Segment("a (b)", 0.8)]


def _cond(model, prompt, negative="", **kw):
    return encode_prompts(model, prompt, negative, num_images=1, do_cfg=True, width=64, height=64, **kw)


@pytest.fixture(scope="module")
def sd(tiny_models):
    from bildwerk.models.loader import load_model

    return load_model(str(tiny_models["sd"]), device="cpu")


def test_clip_weight_scales_only_its_tokens(sd):
    plain = _cond(sd, "a cat on a mat").cond
    same = _cond(sd, "a (cat:1.0) on a mat").cond
    up = _cond(sd, "a (cat:1.5) on a mat").cond
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=1e-5)
    changed = (up - plain).abs().amax(dim=-1)[0] > 1e-4
    tok = sd.pipe.tokenizer
    start = 1 + len(tok.tokenize("a"))  # after <bos> and "a"
    cat = list(range(start, start + len(tok.tokenize("cat"))))
    assert changed[cat].all() and int(changed.sum()) == len(cat)  # only the weighted tokens moved
    # Up-weighting pushes those tokens further from the empty prompt's embedding there.
    empty = _cond(sd, "").cond
    assert (up[0, cat] - empty[0, cat]).norm() > (plain[0, cat] - empty[0, cat]).norm()


def test_clip_long_prompt_is_chunked_not_truncated(sd):
    long = " ".join(["cat"] * 40 + ["banana"])
    c = _cond(sd, long, "blurry")
    window = sd.pipe.tokenizer.model_max_length
    assert c.cond.shape[1] % window == 0 and c.cond.shape[1] > window  # 77-token chunks
    assert c.uncond.shape == c.cond.shape  # the negative is padded to the same length
    cut = _cond(sd, " ".join(["cat"] * 40 + ["dog"]), "blurry").cond
    assert not torch.allclose(c.cond, cut)  # the words after token 77 still count


def test_sdxl_weighting_and_pooled(tiny_models):
    from bildwerk.models.loader import load_model

    xl = load_model(str(tiny_models["sdxl"]), device="cpu")
    plain = _cond(xl, "a cat")
    up = _cond(xl, "a (cat:1.4)")
    assert up.cond.shape == plain.cond.shape
    assert not torch.allclose(up.cond, plain.cond)
    torch.testing.assert_close(up.added["text_embeds"], plain.added["text_embeds"])  # pooled from plain text
    assert torch.count_nonzero(up.uncond) == 0  # SDXL's empty negative stays zeros


def test_generation_with_weights_runs_and_differs(engine, tiny_models):
    from bildwerk.core.request import build_request

    model = str(tiny_models["sd"])
    a = engine.generate(build_request(prompt="a cat", model=model, seed=1, steps=2)).images[0]
    b = engine.generate(build_request(prompt="a (cat:1.6)", model=model, seed=1, steps=2)).images[0]
    assert a.tobytes() != b.tobytes()


def test_sentence_encoder_weight_moves_towards_the_phrase():
    from bildwerk.models.sentence_encoder import SentenceEncoder

    enc = SentenceEncoder()
    cat = torch.nn.functional.normalize(enc.encode(["cat"])[0, 0], dim=0)

    def sim(weight: float) -> float:
        v = enc.encode_weighted([("a ", 1.0), ("cat", weight), (" on a red sofa", 1.0)])[0]
        return float(torch.nn.functional.normalize(v, dim=0) @ cat)

    assert sim(0.5) < sim(1.0) < sim(1.5)
    plain = enc.encode(["a cat on a red sofa"])[0]
    torch.testing.assert_close(enc.encode_weighted([("a cat on a red sofa", 1.0)]), plain)
    up = enc.encode_weighted([("a ", 1.0), ("cat", 1.5), (" on a red sofa", 1.0)])
    assert abs(float(up[0].norm()) - float(plain[0].norm())) < 1e-4  # length kept
    words = enc.texts_for("a cat on a red sofa")
    i = words.index("cat")
    torch.testing.assert_close(up[i], plain[i] * 1.5)
