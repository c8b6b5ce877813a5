"""Backbone features computed once per image and cached on disk.

Head training on cached features takes seconds instead of minutes, and a rebuild after adding photos only
computes the new ones. A cache entry is keyed by everything that changes the numbers: backbone, alpha, input
size, weights (file hash), preprocessing and the image file's own hash.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import BackboneSpec
from ..core.console import native_output, progress_bar
from ..core.files import file_sha256, write_atomic
from ..core.preprocessing import Preprocessing
from ..core.tf_runtime import load_tensorflow
from ..data.photos import Photos
from . import litert_backbone

CACHE_FORMAT = "1"
BATCH = 32  # photos per backbone call: the fastest of 16/32/64 on 2 cores
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


@dataclass
class Features:
    values: np.ndarray  # float32 (N, D), in the order of the photos given
    computed: int  # how many were not in the cache
    engine: str  # what computed them: "tensorflow graph", "litert (xnnpack)" or "cache"
    conversion_seconds: float = 0.0  # converting the backbone for LiteRT, when it was not cached


def cached_features(extractor, photos: Photos, folder: Path, preprocessing: Preprocessing) -> Features:
    """Features of every photo, in order, reading what is cached and computing the rest. Only the photos whose
    features are missing are decoded, a chunk at a time while the previous chunk runs through the backbone."""
    folder.mkdir(parents=True, exist_ok=True)
    features: list[np.ndarray | None] = [_read(folder, h) for h in photos.hashes]
    missing = [i for i, f in enumerate(features) if f is None]
    log.debug(f"features: {len(photos) - len(missing)} cached, {len(missing)} to compute")
    engine, conversion = "cache", 0.0
    if missing:
        if litert_backbone.wanted(folder, len(missing)):
            with native_output("converting the backbone for LiteRT"):
                run, conversion = litert_backbone.litert_backbone(extractor, folder)
            engine = "litert (xnnpack)"
        else:
            run, engine = compiled(extractor), "tensorflow graph"
        with progress_bar("features", len(missing)) as advance:
            for indices, pixels in photos.chunks(missing):
                for start in range(0, len(indices), BATCH):
                    out = run(preprocessing.normalize(pixels[start : start + BATCH]))
                    for i, feat in zip(indices[start : start + BATCH], out):
                        features[i] = feat
                        _write(folder, photos.hashes[i], feat)
                    advance(len(out))
    values = (
        np.stack(features).astype(np.float32) if features else np.zeros((0, extractor.output_shape[-1]), np.float32)
    )
    return Features(values, len(missing), engine, conversion)


def compiled(extractor):
    """The backbone as one traced graph with a fixed batch shape, the last batch padded: 6.1 ms per 224 px photo
    instead of 11.6 ms for Keras' eager call on 2 cores (V2-0.5, measured side by side; batches of 16 and 64 were
    no faster). XLA (`jit_compile`) was 20x slower on this CPU, so it is not used."""
    tf, _ = load_tensorflow()
    size = extractor.input_shape[1]
    graph = tf.function(
        lambda x: extractor(x, training=False),
        input_signature=[tf.TensorSpec([BATCH, size, size, 3], tf.float32)],
    )

    def run(batch: np.ndarray) -> np.ndarray:
        count = len(batch)
        if count < BATCH:
            batch = np.concatenate([batch, np.zeros((BATCH - count, *batch.shape[1:]), batch.dtype)])
        return graph(batch).numpy()[:count]

    return run


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
