"""Exact and near-duplicate detection over normalised images.

Exact duplicates share the SHA-256 of their normalised pixels. Near duplicates (the
same picture at another size, re-exported, redrawn by another package) need both:

1. a difference hash and an average hash (64 bits each, from a 16x16 greyscale
   thumbnail) within ``max_distance`` bits of each other: the cheap candidate test;
2. 32x32 colour thumbnails that agree everywhere, allowing each pixel to match any
   pixel of its 3x3 neighbourhood in the other picture (so edges that moved by a
   sub-pixel amount after trimming and resizing do not count): no pixel further off
   than ``max_pixel_diff`` and, over the drawn (non-white) part, on average no more
   than ``max_mean_diff``.

The second test matters on clip art. Measured on the real sources, hashes alone (even
with a coarse colour check) chained 1,345 unrelated tall or thin pictures into one group
and merged clocks showing different times, playing cards of different ranks and hazard
signs with different pictograms; with it, the merged pairs are the same drawings (Tux
Paint stamps taken from openclipart, icons filed under two themes, emoji drawn alike).
It errs on the side of keeping two pictures apart: small-detail variants (five of hearts
and five of diamonds, two flags that differ in their emblem) stay separate.
All pairs are compared with numpy in blocks: ~1 s for 10k images.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .imaging import ImageFingerprint

DEFAULT_MAX_DISTANCE = 8
# Largest per-channel difference (0-255) between 32x32 thumbnails, with 3x3 tolerance.
DEFAULT_MAX_PIXEL_DIFF = 24
# ... and the largest mean of that difference over the drawn (non-white) part: the same
# drawing from two packages measures 0-2, a white heart against a pink one ~40.
DEFAULT_MAX_MEAN_DIFF = 4.0
_DRAWN_BELOW = 235
_BLOCK = 512
_PAIR_CHUNK = 4096


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        # The smaller index stays root, so results do not depend on merge order.
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return True

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.parent)):
            out[self.find(i)].append(i)
        return sorted(out.values(), key=lambda g: g[0])


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount64(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _POPCOUNT8[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1)


def _neighbourhood_range(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel and channel, the min and max over its 3x3 neighbourhood."""
    side = thumbs.shape[1]
    padded = np.pad(thumbs, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    shifted = [padded[:, dy : dy + side, dx : dx + side] for dy in range(3) for dx in range(3)]
    return np.min(shifted, axis=0), np.max(shifted, axis=0)


def _outside(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """How far each pixel lies outside the other picture's local range (worst channel)."""
    return np.maximum(np.maximum(values - high, low - values), 0).max(axis=-1)


@dataclass(frozen=True)
class DedupeResult:
    clusters: list[list[int]]  # indices into the input, each sorted, in order of first index
    exact_links: int  # merges made by identical pixels
    near_links: int  # merges made by perceptual similarity


def find_duplicates(
    prints: Sequence[ImageFingerprint],
    *,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    max_pixel_diff: int = DEFAULT_MAX_PIXEL_DIFF,
    max_mean_diff: float = DEFAULT_MAX_MEAN_DIFF,
) -> DedupeResult:
    """Cluster fingerprints into groups of duplicates (union-find, so transitive)."""
    n = len(prints)
    uf = UnionFind(n)
    exact = near = 0
    first_by_hash: dict[str, int] = {}
    for i, fp in enumerate(prints):
        if (j := first_by_hash.setdefault(fp.sha256, i)) != i and uf.union(j, i):
            exact += 1
    if n < 2 or max_distance < 0:
        return DedupeResult(uf.groups(), exact, near)

    dh = np.array([fp.dhash for fp in prints], dtype=np.uint64)
    ah = np.array([fp.ahash for fp in prints], dtype=np.uint64)
    side = int(round((len(prints[0].thumb) // 3) ** 0.5))
    thumbs = np.stack([np.frombuffer(fp.thumb, dtype=np.uint8) for fp in prints])
    thumbs = thumbs.reshape(n, side, side, 3).astype(np.int16)
    low, high = _neighbourhood_range(thumbs)
    foreground = (thumbs.min(axis=3) < _DRAWN_BELOW).reshape(n, -1)
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        d = _popcount64(dh[start:stop, None] ^ dh[None, :])
        a = _popcount64(ah[start:stop, None] ^ ah[None, :])
        rows, cols = np.nonzero((d <= max_distance) & (a <= max_distance))
        rows = rows + start
        upper = cols > rows  # each unordered pair once
        rows, cols = rows[upper], cols[upper]
        for k in range(0, len(rows), _PAIR_CHUNK):
            r, c = rows[k : k + _PAIR_CHUNK], cols[k : k + _PAIR_CHUNK]
            diff = np.maximum(
                _outside(thumbs[r], low[c], high[c]), _outside(thumbs[c], low[r], high[r])
            ).reshape(len(r), -1)  # (pairs, side * side)
            # Mean over the drawn part only, or white margins would dilute it.
            drawn = (foreground[r] | foreground[c]).astype(np.float32)
            mean_drawn = (diff * drawn).sum(axis=1) / np.maximum(drawn.sum(axis=1), 1.0)
            same = (diff.max(axis=1) <= max_pixel_diff) & (mean_drawn <= max_mean_diff)
            for i, j in zip(r[same].tolist(), c[same].tolist(), strict=True):
                if uf.union(i, j):
                    near += 1
    return DedupeResult(uf.groups(), exact, near)
