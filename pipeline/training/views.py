"""Augmented views of a training photo, for head training on cached features.

The head trains on the backbone's features, which are cached; augmentation in the image pipeline would mean
running the backbone again every epoch (fine-tuning's cost). Instead each training photo gets a few fixed views,
whose features are cached like the photo's own: the model sees crops, mirror images and colour shifts at the
price of one extra backbone pass per view, once. A view is decided by the photo's file hash and its number, so
it is the same in every build and its cache entry stays valid.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

VIEWS_VERSION = "1"  # part of every view's cache name: change it when a view's recipe changes


def augmented_view(pixels: np.ndarray, photo_hash: str, view: int) -> np.ndarray:
    """View `view` (>= 1) of a square uint8 photo: a crop of 70-100% of its area at a slightly changed aspect,
    resized back, mirrored half the time, brightness, contrast and saturation within 15-20%."""
    rng = np.random.default_rng([int(photo_hash[:16], 16), view])
    size = pixels.shape[0]
    area, aspect = rng.uniform(0.7, 1.0), rng.uniform(0.85, 1.18)
    w = min(size, max(1, round(size * math.sqrt(area * aspect))))
    h = min(size, max(1, round(size * math.sqrt(area / aspect))))
    x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    image = Image.fromarray(pixels).crop((x, y, x + w, y + h)).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.85, 1.15))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.8, 1.2))
    return np.asarray(image, dtype=np.uint8)


def cache_name(photo_hash: str, view: int) -> str:
    return photo_hash if view == 0 else f"{photo_hash}.view{VIEWS_VERSION}-{view}"
