"""Backbone features computed once per image and cached on disk.

Head training on cached features takes seconds instead of minutes, and a rebuild after adding photos only
computes the new ones. A cache entry is keyed by everything that changes the numbers: backbone, alpha, input
size, weights (file hash), preprocessing and the image file's own hash.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from imgpipe.model import BackboneSpec
from imgpipe.preprocessing import Preprocessing

CACHE_FORMAT = "1"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imgpipe" / "bottlenecks"


def model_key(spec: BackboneSpec, preprocessing: Preprocessing) -> str:
    parts = [
        CACHE_FORMAT,
        spec.arch,
        f"{spec.alpha:g}",
        str(spec.image_size),
        spec.weights_fingerprint(),
        ",".join(f"{v:g}" for v in preprocessing.mean + preprocessing.std),
        preprocessing.resize,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def cached_features(
    extractor,
    images: np.ndarray,
    image_hashes: list[str],
    cache_root: Path,
    key: str,
    preprocessing: Preprocessing,
    batch_size: int = 32,
    progress=print,
) -> tuple[np.ndarray, int]:
    """Features for `images` (uint8), reading what is cached and computing the rest. Returns (features, computed)."""
    folder = Path(cache_root) / key
    folder.mkdir(parents=True, exist_ok=True)
    features: list[np.ndarray | None] = [_read(folder, h) for h in image_hashes]
    missing = [i for i, f in enumerate(features) if f is None]
    progress(f"bottlenecks: {len(images) - len(missing)} cached, computing {len(missing)} ...")
    for start in range(0, len(missing), batch_size):
        batch = missing[start : start + batch_size]
        out = extractor(preprocessing.normalize(images[batch]), training=False).numpy()
        for i, feat in zip(batch, out):
            features[i] = feat
            _write(folder, image_hashes[i], feat)
        done = min(start + batch_size, len(missing))
        if done == len(missing) or (start // batch_size) % 10 == 9:
            progress(f"bottlenecks: {done}/{len(missing)} computed")
    return np.stack(features).astype(np.float32), len(missing)


def _path(folder: Path, image_hash: str) -> Path:
    return folder / image_hash[:2] / f"{image_hash}.npy"


def _read(folder: Path, image_hash: str) -> np.ndarray | None:
    path = _path(folder, image_hash)
    try:
        return np.load(path)
    except (OSError, ValueError):  # absent, or truncated by an interrupted write elsewhere: recompute
        return None


def _write(folder: Path, image_hash: str, feat: np.ndarray) -> None:
    path = _path(folder, image_hash)
    path.parent.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, feat)
    os.replace(tmp, path)
