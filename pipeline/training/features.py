"""Backbone features computed once per image and cached on disk.

Head training on cached features takes seconds instead of minutes, and a rebuild after adding photos only
computes the new ones. A cache entry is keyed by everything that changes the numbers: backbone, alpha, input
size, weights (file hash), preprocessing and the image file's own hash.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from ..config import BackboneSpec
from ..core.console import progress_bar
from ..core.files import file_sha256, write_atomic
from ..core.preprocessing import Preprocessing

CACHE_FORMAT = "1"
log = logging.getLogger(__name__)


def model_key(spec: BackboneSpec, preprocessing: Preprocessing) -> str:
    parts = [
        CACHE_FORMAT,
        spec.arch,
        f"{spec.alpha:g}",
        str(spec.image_size),
        weights_fingerprint(spec),
        ",".join(f"{v:g}" for v in preprocessing.mean + preprocessing.std),
        preprocessing.resize,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def weights_fingerprint(spec: BackboneSpec) -> str:
    """What identifies the backbone's weights in cache keys: the file's hash, or the Keras name."""
    return spec.weights if spec.weights_file is None else file_sha256(spec.weights_file)[:16]


def cached_features(
    extractor,
    images: np.ndarray,
    image_hashes: list[str],
    folder: Path,
    preprocessing: Preprocessing,
    batch_size: int = 32,
) -> tuple[np.ndarray, int]:
    """Features for `images` (uint8), reading what is cached and computing the rest. Returns (features, computed)."""
    folder.mkdir(parents=True, exist_ok=True)
    features: list[np.ndarray | None] = [_read(folder, h) for h in image_hashes]
    missing = [i for i, f in enumerate(features) if f is None]
    log.debug(f"features: {len(images) - len(missing)} cached, {len(missing)} to compute")
    with progress_bar("features", len(missing)) as advance:
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            out = extractor(preprocessing.normalize(images[batch]), training=False).numpy()
            for i, feat in zip(batch, out):
                features[i] = feat
                _write(folder, image_hashes[i], feat)
            advance(len(batch))
    return np.stack(features).astype(np.float32), len(missing)


def _path(folder: Path, image_hash: str) -> Path:
    return folder / image_hash[:2] / f"{image_hash}.npy"


def _read(folder: Path, image_hash: str) -> np.ndarray | None:
    try:
        return np.load(_path(folder, image_hash))
    except (OSError, ValueError):  # absent, or truncated by an interrupted write elsewhere: recompute
        return None


def _write(folder: Path, image_hash: str, feat: np.ndarray) -> None:
    path = _path(folder, image_hash)
    path.parent.mkdir(exist_ok=True)
    write_atomic(path, lambda f: np.save(f, feat), durable=False)
