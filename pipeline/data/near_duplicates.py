"""Near-duplicate photos: a crop, a resize or a re-encoding of the same shot, or a burst of it.

Two signals, either one enough (measured on 20 photos each with an 80-90% crop and a resized, re-encoded copy,
and on the shared flowers and pets sets, which have no real duplicates):
- a 64-bit perceptual hash (DCT of a 32x32 grey image) within Hamming distance 10 catches every resize and
  re-encoding and half the crops, and flagged no real pair (the closest distinct photos were at 14);
- cosine similarity of the backbone's features of at least 0.90 catches every crop (not every re-encoding).
A difference hash (dHash) was rejected: it flagged 48 false pairs, dark or flat images.
Near-duplicates become one group, so they always land in the same split and a test photo's crop cannot sit in
train.
"""

from __future__ import annotations

import numpy as np

HASH_DISTANCE = 10
COSINE = 0.90
BLOCK = 2048  # rows compared at a time: bounded memory on large datasets


def perceptual_hash(grey32: np.ndarray) -> int:
    """pHash of a 32x32 grey image: the signs of the 8x8 lowest DCT frequencies (but the DC term) against
    their median."""
    n = 32
    basis = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * np.arange(n)[:, None] / (2 * n))
    dct = basis @ grey32.astype(np.float64) @ basis.T
    low = dct[:8, :8].ravel()[1:]
    bits = low > np.median(low)
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def near_duplicate_pairs(hashes: np.ndarray, features: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Index pairs (i < j) within HASH_DISTANCE of each other's hash, or with feature cosine >= COSINE."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    pairs: set[tuple[int, int]] = set()
    unit = None
    if features is not None and len(features):
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        unit = (features / np.maximum(norms, 1e-12)).astype(np.float32)
    for start in range(0, len(hashes), BLOCK):
        block = slice(start, start + BLOCK)
        distance = np.bitwise_count(hashes[block, None] ^ hashes[None, :])
        close = distance <= HASH_DISTANCE
        if unit is not None:
            close |= (unit[block] @ unit.T) >= COSINE
        rows, cols = np.nonzero(close)
        pairs.update((start + r, c) for r, c in zip(rows.tolist(), cols.tolist()) if start + r < c)
    return sorted(pairs)


def groups_of(count: int, pairs: list[tuple[int, int]]) -> list[int]:
    """Union-find: the group (its smallest member's index) of each of `count` items linked by `pairs`."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [root(i) for i in range(count)]
