"""Near-duplicate photos: a crop, a resize or a re-encoding of the same shot, or a burst of it.

Two signals, either one enough (measured on 20 photos each with an 80-90% crop and a resized, re-encoded copy,
and on the shared flowers and pets sets, which have no real duplicates):
- a 64-bit perceptual hash (DCT of a 32x32 grey image) within Hamming distance 10 catches every resize and
  re-encoding and half the crops, and flagged no real pair (the closest distinct photos were at 14);
- cosine similarity of the backbone's features of at least 0.90 catches the closer crops. Measured with the
  MobileNetV2-0.5 ImageNet backbone on flowers: distinct photos of one class score a median of 0.39-0.45 and at
  most 0.87; an 80% centre crop scores 0.81-0.97 against its photo (median 0.91).
  The bar rises with a class's median similarity (`cosine_bar`): a backbone that finds every photo of a class
  alike (X-rays, parts on a belt, weights not trained on photos) would otherwise chain a whole class into one
  group and leave it no test photos.
A difference hash (dHash) was rejected: it flagged 48 false pairs, dark or flat images.
Near-duplicates become one group, so they always land in the same split and a test photo's crop cannot sit in
train.
"""

from __future__ import annotations

import numpy as np

HASH_DISTANCE = 10
COSINE = 0.90
SPREAD = 0.2  # the bar keeps this fraction of the gap between the class's median similarity and 1
# Comparisons made at a time (a block of rows against every item): 128 MB of uint64 for the hashes whatever the
# dataset's size. Rows of 2,048 made 1.6 GB blocks at 100,000 photos.
BLOCK_ELEMENTS = 1 << 24
FEATURE_LIMIT = 10_000  # photos of one class compared by features (10,000: about 5 s on 2 cores)


def perceptual_hash(grey32: np.ndarray) -> int:
    """pHash of a 32x32 grey image: the signs of the 8x8 lowest DCT frequencies (but the DC term) against
    their median."""
    n = 32
    basis = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * np.arange(n)[:, None] / (2 * n))
    dct = basis @ grey32.astype(np.float64) @ basis.T
    low = dct[:8, :8].ravel()[1:]
    bits = low > np.median(low)
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def hash_pairs(hashes: np.ndarray) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose perceptual hashes are within HASH_DISTANCE."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    return _pairs(len(hashes), lambda rows: np.bitwise_count(hashes[rows, None] ^ hashes[None, :]) <= HASH_DISTANCE)


def feature_pairs(features: np.ndarray, labels: np.ndarray, limit: int = FEATURE_LIMIT) -> tuple[list, list[int]]:
    """(index pairs (i < j) of one class with feature cosine >= COSINE, classes left out for having more than
    `limit` photos). Comparing every pair costs N^2 dot products, so it is done within each class, where a crop of
    a photo lives; the perceptual hash still compares across classes."""
    unit = (features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    pairs, skipped = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) > limit:
            skipped.append(int(label))
            continue
        vectors = unit[members]
        bar = cosine_bar(vectors)
        found = _pairs(len(members), lambda rows: (vectors[rows] @ vectors.T) >= bar)  # noqa: B023
        pairs.extend((int(members[a]), int(members[b])) for a, b in found)
    return sorted(pairs), skipped


def cosine_bar(vectors: np.ndarray, sample: int = 500) -> float:
    """The similarity two photos of one class must reach to count as one shot: COSINE, or higher where the
    class's photos are alike to the backbone (median similarity of up to `sample` evenly spread photos)."""
    chosen = vectors[np.linspace(0, len(vectors) - 1, min(sample, len(vectors))).astype(int)]
    if len(chosen) < 2:
        return COSINE
    similarities = (chosen @ chosen.T)[np.triu_indices(len(chosen), 1)]
    return max(COSINE, 1.0 - (1.0 - float(np.median(similarities))) * SPREAD)


def _pairs(count: int, close_rows) -> list[tuple[int, int]]:
    """Pairs (i < j) where `close_rows(slice)` (a boolean block: those rows against every item) is true."""
    pairs = []
    block = max(1, BLOCK_ELEMENTS // max(count, 1))
    for start in range(0, count, block):
        rows, cols = np.nonzero(close_rows(slice(start, start + block)))
        pairs.extend((start + r, c) for r, c in zip(rows.tolist(), cols.tolist()) if start + r < c)
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
