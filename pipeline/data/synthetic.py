"""The embedded default dataset: procedurally drawn textures, generated deterministically.

It lets a new user with no photos and no network watch the whole pipeline work, and gives the tests real
image files (of varied sizes and formats) to scan, train on and verify.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

CLASSES = ("checker", "dots", "rings", "stripes")


def generate_dataset(root: Path, per_class: int = 80, seed: int = 0, min_size: int = 80, max_size: int = 140) -> Path:
    """Write `root/<class>/<class>_NNN.png` (a few as .jpg) and return `root`. Same seed, same bytes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
            pixels = draw(name, w, h, rng)
            suffix = ".jpg" if i % 4 == 3 else ".png"
            path = root / name / f"{name}_{i:03d}{suffix}"
            Image.fromarray(pixels).save(path, quality=92) if suffix == ".jpg" else Image.fromarray(pixels).save(path)
    return root


def draw(name: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """One (h, w, 3) uint8 image of class `name` on a noisy gradient background with random colours."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    background = _background(w, h, yy, xx, rng)
    fg = rng.integers(0, 256, 3).astype(np.float32)
    while np.abs(fg - background.mean(axis=(0, 1))).sum() < 200:  # keep the shape visible against the ground
        fg = rng.integers(0, 256, 3).astype(np.float32)
    mask = _mask(name, w, h, yy, xx, rng)
    img = np.where(mask[..., None], fg, background) + rng.normal(0, 10, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _background(w, h, yy, xx, rng) -> np.ndarray:
    c0, c1 = rng.integers(0, 256, (2, 3)).astype(np.float32) * 0.6
    angle = rng.uniform(0, 2 * math.pi)
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
    return c0 + (c1 - c0) * t[..., None]


def _mask(name, w, h, yy, xx, rng) -> np.ndarray:
    """Texture classes: local patterns a small convolutional net learns from scratch in a few epochs, with
    random scale, orientation, phase and colours so memorising pixels does not work."""
    size = min(w, h)
    period = rng.uniform(0.16, 0.30) * size
    a = rng.uniform(0, math.pi)
    u = (xx * math.cos(a) + yy * math.sin(a)) / period + rng.uniform(0, 1)
    v = (-xx * math.sin(a) + yy * math.cos(a)) / period + rng.uniform(0, 1)
    if name == "stripes":
        return (u % 1.0) < 0.5
    if name == "checker":
        return ((np.floor(u) + np.floor(v)) % 2) == 0
    if name == "dots":
        return (u % 1.0 - 0.5) ** 2 + (v % 1.0 - 0.5) ** 2 < rng.uniform(0.04, 0.09)
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    return (np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / period) % 1.0 < 0.5


EMBEDDED_VERSION = "textures-v1"
EMBEDDED_PER_CLASS = 100


def embedded_dataset(cache_root: Path) -> Path:
    """The embedded dataset under the imgpipe cache (`cache_root/datasets/`), generated on first use (it is
    deterministic)."""
    import shutil
    import tempfile

    root = Path(cache_root) / "datasets" / EMBEDDED_VERSION
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".generating-"))
    try:
        generate_dataset(tmp, per_class=EMBEDDED_PER_CLASS)
        tmp.rename(root)
    except OSError:
        if not root.is_dir():  # a full disk, not another build that generated it at the same time
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-generated dataset is left in the cache
    return root
