"""Backbone features computed once per image and cached on disk.

Head training on cached features takes seconds instead of minutes, and a rebuild after adding photos only
computes the new ones. A cache entry is keyed by everything that changes the numbers: backbone, alpha, input
size, weights (file hash), preprocessing and the image file's own hash.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
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
from .views import augmented_view, cache_name

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


def cached_features(
    extractor,
    photos: Photos,
    folder: Path,
    preprocessing: Preprocessing,
    engine_given=None,
    views: int = 0,
    views_of: np.ndarray | None = None,
) -> Features:
    """Features of every photo, in order, reading what is cached and computing the rest. Only the photos whose
    features are missing are decoded, a chunk at a time while the previous chunk runs through the backbone.
    With `views`, also the features of that many augmented views of each photo (`views.augmented_view`), from the
    same decoded pixels: the values are then view-major, the photos themselves first. `views_of` (a mask over the
    photos) limits the views computed to those photos; the other photos' view rows hold what the cache has, else NaN.
    `engine_given` (run, name) replaces the choice between LiteRT and the compiled graph (a distributed predict)."""
    folder.mkdir(parents=True, exist_ok=True)
    count = len(photos)
    names = [[cache_name(h, v) for h in photos.hashes] for v in range(views + 1)]
    # One array filled in place (row view * count + photo), made when the first feature gives its length: 100,000
    # photos' features are 512 MB, held once.
    values: np.ndarray | None = None
    have = np.zeros((views + 1) * count, bool)

    def put(row: int, feature: np.ndarray) -> None:
        nonlocal values
        if values is None:
            values = np.empty((len(have), len(feature)), np.float32)
        values[row], have[row] = feature, True

    for view, row in enumerate(names):
        for i, name in enumerate(row):
            cached = _read(folder, name)
            if cached is not None:
                put(view * count + i, cached)
    wanted = np.ones_like(have)
    if views_of is not None:
        wanted[count:] = np.tile(np.asarray(views_of, bool), views)
    todo = int((wanted & ~have).sum())
    log.debug(f"features: {len(have) - todo} cached, {todo} to compute")
    engine, conversion = "cache", 0.0
    if todo:
        if engine_given is not None:
            run, engine = engine_given
        elif litert_backbone.wanted(folder, todo):
            with native_output("converting the backbone for LiteRT"):
                run, conversion = litert_backbone.litert_backbone(extractor, folder)
            engine = "litert (xnnpack)"
        else:
            run, engine = compiled(extractor), "tensorflow graph"
        missing = [i for i in range(count) if (wanted[i::count] & ~have[i::count]).any()]
        # One thread writes the cache files (0.6 ms per photo here) and one makes a chunk's augmented views (0.7 ms
        # per view) while the backbone runs.
        with (
            progress_bar("features", todo) as advance,
            ThreadPoolExecutor(max_workers=1) as writer,
            ThreadPoolExecutor(max_workers=1) as augmenter,
        ):
            written = []
            for indices, pixels in photos.chunks(missing):
                jobs = {}
                for view in range(views + 1):
                    rows = view * count + np.asarray(indices)
                    need = [j for j, r in enumerate(rows) if wanted[r] and not have[r]]
                    if need:
                        made = augmenter.submit(_views, pixels, need, indices, photos.hashes, view) if view else None
                        jobs[view] = rows, need, made
                for view, (rows, need, made) in jobs.items():
                    chosen = pixels[need] if made is None else made.result()
                    for start in range(0, len(need), BATCH):
                        out = run(preprocessing.normalize(chosen[start : start + BATCH]))
                        for j, feat in zip(need[start : start + BATCH], out):
                            put(rows[j], feat)
                            written.append(writer.submit(_write, folder, names[view][indices[j]], values[rows[j]]))
                        advance(len(out))
            for done in written:
                done.result()  # a write that failed (a full disk) fails the build here
    if values is None:  # no photos at all
        values = np.zeros((0, extractor.output_shape[-1]), np.float32)
    elif not have.all():
        values[~have] = np.nan  # views not asked for
    return Features(values, todo, engine, conversion)


def _views(pixels: np.ndarray, need: list[int], indices, hashes: list[str], view: int) -> np.ndarray:
    return np.stack([augmented_view(pixels[j], hashes[indices[j]], view) for j in need])


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


def _path(folder: Path, name: str) -> Path:
    return folder / name[:2] / f"{name}.npy"


def _read(folder: Path, name: str) -> np.ndarray | None:
    try:
        return np.load(_path(folder, name))
    except (OSError, ValueError):  # absent, or truncated by an interrupted write elsewhere: recompute
        return None


def _write(folder: Path, name: str, feat: np.ndarray) -> None:
    path = _path(folder, name)
    path.parent.mkdir(exist_ok=True)
    write_atomic(path, lambda f: np.save(f, feat), durable=False)
