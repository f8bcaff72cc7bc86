"""The quality gates a pool picture passes before it is accepted.

In order, each only when the plan turns it on (:class:`~bildwerk.pool.plan.PoolGates`):

1. **nsfw** -- Yahoo's Open-NSFW score (:mod:`bildwerk.models.nsfw`); a picture scoring at
   or above ``nsfw_threshold`` is refused. A refused picture is not embedded.
2. **dedupe** -- near-duplicates within a kind, the SemDeDup idea on image embeddings
   (efficientnet-lite0's pooled features, :meth:`Judge.embed`): a picture whose cosine with
   one of its kind's accepted pictures is at or above ``dedupe_threshold`` is refused,
   naming that picture. Pictures of different kinds are never compared.

An accepted picture is remembered, so later ones compare with it; on resume,
:meth:`Gates.restore` gives a kind its accepted pictures so far (the folder keeps their
embeddings). With dedupe off the embedding is still computed when an embedder is at hand
(``embed=True``): the report's diversity figures need it, and it costs about as much as
the NSFW score (tens of milliseconds on a CPU core, next to seconds for the picture).

The models load on first use, only those an active gate (or ``embed``) needs;
:meth:`Gates.load` loads them at once, so a missing package fails before anything is
generated. Thread-safety: loading and the compare-and-remember step are locked, so several
threads may call :meth:`Gates.judge`; the model calls themselves run outside the lock (an
ONNX Runtime session and a torch module in eval mode may be run concurrently). Pictures of
one kind judged from two threads at once are decided in the order they reach the lock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from bildwerk.core.errors import ModelNotFoundError
from bildwerk.pool.diversity import COSINE_SLACK
from bildwerk.pool.plan import PoolGates

GATES = ("nsfw", "dedupe")


class Embedder(Protocol):
    def embed(self, images: Sequence[Image.Image]) -> np.ndarray: ...


class NsfwScorer(Protocol):
    def scores(self, images: Sequence[Image.Image]) -> list[float]: ...


@dataclass
class Verdict:
    """What the gates said about one picture: ``reason`` None means accepted."""

    reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    embedding: np.ndarray | None = None
    gate: str | None = None  # the gate that refused it ("nsfw", "dedupe")
    duplicate_of: str | None = None  # the accepted picture it repeats, when known

    @property
    def accepted(self) -> bool:
        return self.reason is None


class _Memory:
    """The unit embeddings of one kind's accepted pictures, in a matrix that grows by doubling."""

    def __init__(self, dim: int, capacity: int = 64) -> None:
        self.dim = dim
        self.vecs = np.zeros((max(1, capacity), dim), dtype=np.float32)
        self.ids: list[str | None] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, vec: np.ndarray, item_id: str | None) -> None:
        n = len(self.ids)
        if n == self.vecs.shape[0]:
            grown = np.zeros((2 * n, self.dim), dtype=np.float32)
            grown[:n] = self.vecs
            self.vecs = grown
        self.vecs[n] = vec
        self.ids.append(item_id)

    def nearest(self, vec: np.ndarray) -> tuple[int, float] | None:
        n = len(self.ids)
        if n == 0:
            return None
        if vec.shape[0] != self.dim:
            raise ValueError(f"this kind's remembered embeddings have {self.dim} dimensions but the embedder "
                             f"gives {vec.shape[0]}: they come from another embedder")
        sims = self.vecs[:n] @ vec
        i = int(np.argmax(sims))
        return i, float(min(1.0, sims[i]))


def _unit(vec: np.ndarray) -> np.ndarray | None:
    v = np.asarray(vec, dtype=np.float32).reshape(-1)
    if not np.isfinite(v).all():
        return None
    norm = float(np.linalg.norm(v))
    return None if norm <= 1e-12 else (v / norm).astype(np.float32)


class _CallableScorer:
    def __init__(self, fn: Callable[[Image.Image], float]) -> None:
        self._fn = fn

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        return [float(self._fn(im)) for im in images]


class _CallableEmbedder:
    def __init__(self, fn: Callable[[Sequence[Image.Image]], np.ndarray]) -> None:
        self._fn = fn

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.asarray(self._fn(images), dtype=np.float32)


_UNAVAILABLE = object()


class Gates:
    """The gates of one pool run (see the module's text)."""

    def __init__(self, settings: PoolGates | None = None, *, embedder: Embedder | Any = None,
                 nsfw: NsfwScorer | Any = None, embed: bool = True) -> None:
        self.settings = settings or PoolGates()
        self.embed = embed
        if nsfw is not None and not hasattr(nsfw, "scores") and callable(nsfw):
            nsfw = _CallableScorer(nsfw)  # a plain ``score(image) -> float``
        if embedder is not None and not hasattr(embedder, "embed") and callable(embedder):
            embedder = _CallableEmbedder(embedder)  # a plain ``embed(images) -> array``
        self._nsfw: Any = nsfw
        self._embedder: Any = embedder
        self._memory: dict[str, _Memory] = {}
        self._missing = ""  # why the default embedder could not load
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ what is on

    @property
    def active(self) -> list[str]:
        """The names of the gates that are on, in the order they run."""
        s = self.settings
        return [name for name, on in (("nsfw", s.nsfw), ("dedupe", s.dedupe)) if on]

    def record(self) -> dict[str, Any]:
        """How pictures were judged, for the run's record and the report."""
        s = self.settings
        out: dict[str, Any] = {"active": self.active}
        if s.nsfw:
            out["nsfw_threshold"] = s.nsfw_threshold
            out["nsfw_model"] = ("yahoo-open-nsfw" if self._nsfw is None
                                 else getattr(self._nsfw, "name", type(self._nsfw).__name__))
        if s.dedupe:
            out["dedupe_threshold"] = s.dedupe_threshold
        if s.dedupe or self.embed:
            emb = self._embedder
            out["embedder"] = (None if emb is _UNAVAILABLE else "efficientnet-lite0" if emb is None
                               else getattr(emb, "name", type(emb).__name__))
        return out

    def load(self) -> None:
        """Load now what the active gates need (a missing package raises here, before any
        picture is made); the embedder for ``embed`` alone is loaded if it can be."""
        if self.settings.nsfw:
            self._scorer()
        if self.settings.dedupe or self.embed:
            self._embedder_or_none(required=self.settings.dedupe)

    def _scorer(self) -> Any:
        with self._load_lock:
            if self._nsfw is None:
                from bildwerk.models.nsfw import NsfwClassifier

                clf = NsfwClassifier()
                clf.load()  # a missing package: NsfwUnavailable, once, here
                self._nsfw = clf
            return self._nsfw

    def _embedder_or_none(self, *, required: bool) -> Any:
        with self._load_lock:
            if self._embedder is None:
                try:
                    from bildwerk.models.imagenet.classifier import Judge

                    self._embedder = Judge()
                except ImportError as exc:  # JudgeUnavailable, or torch itself missing
                    self._embedder = _UNAVAILABLE
                    self._missing = str(exc)
            if self._embedder is _UNAVAILABLE:
                if required:
                    raise ModelNotFoundError(
                        f"the near-duplicate gate needs image embeddings: {self._missing} "
                        "(or turn the gate off: gates: {dedupe: false} in the plan)")
                return None
            return self._embedder

    # ------------------------------------------------------------------ memory

    def restore(self, kind: str, embeddings: np.ndarray | None, ids: list[str] | None = None) -> None:
        """Give ``kind`` its accepted pictures so far (on resume), replacing what it had;
        rows that are zero or not finite are left out."""
        mem = None
        if embeddings is not None and len(embeddings):
            x = np.asarray(embeddings, dtype=np.float32)
            if x.ndim != 2:
                raise ValueError(f"embeddings must be an (n, d) array, got shape {x.shape}")
            if ids is not None and len(ids) != x.shape[0]:
                raise ValueError(f"{x.shape[0]} embeddings but {len(ids)} ids")
            mem = _Memory(x.shape[1], capacity=max(64, 2 * x.shape[0]))
            for i, row in enumerate(x):
                v = _unit(row)
                if v is not None:
                    mem.add(v, None if ids is None else ids[i])
        with self._lock:
            if mem is None:
                self._memory.pop(kind, None)
            else:
                self._memory[kind] = mem

    def remembered(self, kind: str) -> int:
        """How many accepted pictures of ``kind`` later ones are compared with."""
        with self._lock:
            mem = self._memory.get(kind)
            return 0 if mem is None else len(mem)

    # ------------------------------------------------------------------ judging

    def judge(self, kind: str, image: Image.Image, item_id: str) -> Verdict:
        """One picture's verdict; an accepted picture is remembered for its kind."""
        return self.judge_many(kind, [image], [item_id])[0]

    def judge_many(self, kind: str, images: Sequence[Image.Image], item_ids: Sequence[str]) -> list[Verdict]:
        """The verdicts of several pictures of one kind, scored in batches (faster per picture)
        and decided in order, so a later picture is compared with the earlier accepted ones."""
        if len(images) != len(item_ids):
            raise ValueError(f"{len(images)} images but {len(item_ids)} ids")
        s = self.settings
        verdicts = [Verdict() for _ in images]
        if not images:
            return verdicts
        if s.nsfw:
            scores = self._scorer().scores(list(images))
            if len(scores) != len(images):
                raise ValueError(f"the NSFW scorer gave {len(scores)} scores for {len(images)} images")
            for v, score in zip(verdicts, scores, strict=True):
                score = float(score)
                v.scores["nsfw"] = round(score, 4) if math.isfinite(score) else score
                if not math.isfinite(score):
                    v.reason, v.gate = "nsfw score is not a number", "nsfw"
                elif score >= s.nsfw_threshold:
                    v.reason, v.gate = f"nsfw {score:.3f} >= {s.nsfw_threshold:.3f}", "nsfw"
        todo = [i for i, v in enumerate(verdicts) if v.accepted]
        embedder = self._embedder_or_none(required=s.dedupe) if (todo and (s.dedupe or self.embed)) else None
        if embedder is not None:
            vecs = np.asarray(embedder.embed([images[i] for i in todo]), dtype=np.float32)
            if vecs.ndim != 2 or vecs.shape[0] != len(todo):
                raise ValueError(f"the embedder gave shape {vecs.shape} for {len(todo)} images")
            for i, row in zip(todo, vecs, strict=True):
                verdicts[i].embedding = _unit(row)
        with self._lock:
            for i in todo:
                v = verdicts[i]
                if v.embedding is None or not s.dedupe:
                    continue  # no embedder or dedupe off (embedded for the report), or a degenerate vector
                mem = self._memory.get(kind)
                if mem is not None:
                    near = mem.nearest(v.embedding)
                    if near is not None:
                        j, cos = near
                        v.scores["duplicate"] = round(cos, 4)
                        if cos >= s.dedupe_threshold - COSINE_SLACK:
                            other = mem.ids[j]
                            v.reason, v.gate, v.duplicate_of = (
                                f"near-duplicate of {other or 'an earlier picture'} (cosine {cos:.3f})",
                                "dedupe", other)
                            continue
                if mem is None:
                    mem = self._memory[kind] = _Memory(v.embedding.shape[0])
                mem.add(v.embedding, item_ids[i])
        return verdicts
