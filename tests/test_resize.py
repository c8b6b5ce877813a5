"""The MediaPipe resize's fast path (a row pass, then a column pass) gives the general four-tap sum's bytes.
(The four-tap sum itself is compared with MediaPipe's own input tensor in test_mediapipe_client.py.) The
normalization's table gives the arithmetic's floats."""

from __future__ import annotations

import numpy as np
import pytest

from imgpipe.pipeline.core import resize
from imgpipe.pipeline.core.preprocessing import Preprocessing


def _four_taps(rgb: np.ndarray, size: int) -> np.ndarray:
    indices, weights = resize._taps(*rgb.shape[:2], size)
    src = rgb.reshape(-1, rgb.shape[2])
    total = sum(src[indices[k]].astype(np.int32) * weights[k] for k in range(4))
    return ((total + 512) >> 10).astype(np.uint8).reshape(size, size, rgb.shape[2])


@pytest.mark.parametrize(
    "height, width, size",
    [(240, 320, 224), (500, 333, 224), (100, 90, 224), (640, 480, 128), (64, 64, 128), (1000, 750, 96),
     (77, 313, 192), (224, 224, 224), (3, 5, 224), (481, 640, 256), (1, 1, 96), (1800, 2400, 224)],
)  # fmt: skip
def test_the_separable_path_gives_the_four_tap_bytes(height, width, size):
    rgb = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert resize._separable_taps(height, width, size) is not None
    np.testing.assert_array_equal(resize.resize_like_mediapipe(rgb, size), _four_taps(rgb, size))


@pytest.mark.parametrize("mean, std", [((127.5,) * 3, (127.5,) * 3), ((123.7, 116.3, 103.5), (58.4, 57.1, 57.4))])
def test_normalize_by_table_is_the_arithmetic_bit_for_bit(mean, std):
    """The 256-entry table gives exactly (pixel - mean) / std in float32, for one or three channel settings."""
    pixels = np.arange(256, dtype=np.uint8)[None, :, None, None].repeat(3, axis=3)
    preprocessing = Preprocessing(16, mean=mean, std=std)
    expected = (pixels.astype(np.float32) - np.float32(mean)) / np.float32(std)
    normalized = preprocessing.normalize(pixels)
    assert normalized.dtype == np.float32 and np.array_equal(normalized, expected)
    assert np.array_equal(preprocessing.normalize(pixels.astype(np.float32)), expected)  # non-uint8: arithmetic
