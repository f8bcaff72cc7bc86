"""How varied a set of pictures is, from their image embeddings (numpy only).

* :func:`vendi_score` -- the Vendi score (Friedman and Dieng, 2023): the exponential of the
  Shannon entropy of the eigenvalues of ``K / n``, with ``K`` the cosine-similarity matrix.
  It reads as an effective number of distinct pictures: 1 when all are the same, ``n`` when
  no two share anything (orthogonal embeddings), ``m`` for ``m`` equal groups of identical
  pictures with orthogonal groups.
* :func:`mean_pairwise_similarity` -- the mean cosine over distinct pairs.
* :func:`near_duplicates` -- the pairs at or above a cosine threshold.

Rows are scaled to unit length here, so any embedding works; a row that is zero or not
finite has no direction and is a ``ValueError`` (:func:`usable` filters such rows first).
Nothing builds an n x n matrix for large n: the nonzero eigenvalues of ``X X^T`` are those
of ``X^T X`` (d x d, summed chunk by chunk), and the mean cosine needs only the sum of the
rows. :func:`near_duplicates` is the one quadratic figure, in blocks of rows.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12
# A cosine is compared with a threshold allowing for float32 rounding, so that a threshold
# of 1.0 means "identical embeddings" rather than never.
COSINE_SLACK = 1e-6
_BLOCK = 1024


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """The rows scaled to unit length, float64, shape (n, d)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :] if x.size else x.reshape(0, 0)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be an (n, d) array, got shape {x.shape}")
    if x.shape[0] == 0:
        return x
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1)
    if (norms <= _EPS).any():
        raise ValueError(f"embedding {int(np.argmin(norms))} is zero and has no direction")
    return x / norms[:, None]


def usable(embeddings: np.ndarray) -> np.ndarray:
    """A boolean mask of the rows of an (n, d) array that are finite and nonzero."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be an (n, d) array, got shape {x.shape}")
    finite = np.isfinite(x).all(axis=1)
    norms = np.linalg.norm(np.where(np.isfinite(x), x, 0.0), axis=1)
    return finite & (norms > _EPS)


def _unit_chunks(embeddings: np.ndarray, size: int = _BLOCK):
    """The rows in unit-length float64 chunks (bounded memory for large n)."""
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be an (n, d) array, got shape {x.shape}")
    for start in range(0, x.shape[0], size):
        chunk = unit_rows(x[start:start + size])
        yield chunk


def vendi_score(embeddings: np.ndarray) -> float:
    """exp(entropy of the eigenvalues of K / n), K the cosine similarities; 0 for no rows,
    1 for one."""
    x = np.asarray(embeddings)
    if x.ndim == 1:
        x = x[None, :] if x.size else x.reshape(0, 0)
    n = x.shape[0]
    if n == 0:
        return 0.0
    if n == 1:
        unit_rows(x)  # still refuse a zero or non-finite row
        return 1.0
    d = x.shape[1]
    if n <= d:
        u = unit_rows(x)
        gram = u @ u.T
    else:  # X^T X has the same nonzero eigenvalues, d x d, summed chunk by chunk
        gram = np.zeros((d, d), dtype=np.float64)
        for u in _unit_chunks(x):
            gram += u.T @ u
    lam = np.linalg.eigvalsh(gram / n)
    lam = lam[lam > _EPS]
    lam = lam / lam.sum()  # trace(K / n) is 1; renormalise away rounding
    return float(np.exp(-(lam * np.log(lam)).sum()))


def mean_pairwise_similarity(embeddings: np.ndarray) -> float | None:
    """The mean cosine over the n(n-1)/2 distinct pairs; None with fewer than two rows."""
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] < 2:
        if x.ndim == 2:
            unit_rows(x)
        return None
    n = x.shape[0]
    s = np.zeros(x.shape[1], dtype=np.float64)
    for u in _unit_chunks(x):
        s += u.sum(axis=0)
    return float((s @ s - n) / (n * (n - 1)))  # the sum of K off its diagonal, without K


def near_duplicates(embeddings: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Every pair ``(i, j, cosine)`` with ``i < j`` and ``cosine >= threshold`` (cosine
    rounded to 6 places), in (i, j) order; computed in blocks of rows (float32), so memory
    stays bounded, but the work is n^2 / 2 cosines."""
    x = unit_rows(embeddings).astype(np.float32)
    n = x.shape[0]
    out: list[tuple[int, int, float]] = []
    for start in range(0, n, _BLOCK):
        block = x[start:start + _BLOCK] @ x[start:].T  # rows start.., columns start..
        rows, cols = np.nonzero(block >= threshold - COSINE_SLACK)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i, j = start + r, start + c
            if i < j:
                out.append((i, j, round(min(1.0, float(block[r, c])), 6)))
    out.sort(key=lambda t: (t[0], t[1]))
    return out


MAX_PAIR_ROWS = 10_000  # beyond this, counting near-duplicate pairs (n^2 / 2 cosines, seconds) is skipped


def summary(embeddings: np.ndarray | None, threshold: float | None = None) -> dict[str, float | int | None]:
    """The diversity figures of one set: how many, Vendi score (and per picture), mean
    pairwise cosine, and (with ``threshold``) how many pairs are at or above it."""
    n = 0 if embeddings is None else len(embeddings)
    out: dict[str, float | int | None] = {"embedded": n, "vendi": None, "vendi_per_image": None,
                                          "mean_cosine": None}
    if threshold is not None:
        out["near_duplicate_pairs"] = None
    if embeddings is None or n == 0:
        if threshold is not None:
            out["near_duplicate_pairs"] = 0
        return out
    v = vendi_score(embeddings)
    out.update(vendi=round(v, 4), vendi_per_image=round(v / n, 4),
               mean_cosine=_round(mean_pairwise_similarity(embeddings)))
    if threshold is not None and n <= MAX_PAIR_ROWS:
        out["near_duplicate_pairs"] = len(near_duplicates(embeddings, threshold))
    return out


def _round(v: float | None, places: int = 4) -> float | None:
    return None if v is None else round(v, places)
