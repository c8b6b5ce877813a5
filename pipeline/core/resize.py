"""The resize MediaPipe Tasks' ImageClassifier applies on CPU, reproduced bit for bit in NumPy: imgpipe's resize.

imgpipe trains and verifies on exactly the pixels the Android client computes, so the accuracy a bundle reports
is what the app gets (Pillow's antialiased bilinear resize disagreed with MediaPipe on 2-12% of photos' top-1).

MediaPipe's ImageToTensorCalculator (its OpenCV converter: the CPU path of the Python wheel and of the default
Android build) stretches the whole image to the model's input size with cv::warpPerspective (INTER_LINEAR,
BORDER_REPLICATE) on the 8-bit pixels, and only afterwards converts to the model's input type. OpenCV's warp:

- maps output pixel (x, y) to the source point (x * W / size, y * H / size): pixel indices with no half-pixel
  offset, so the picture is shifted by about half a source pixel compared with a centre-aligned resize;
- rounds that point to 1/32 pixel (half to even), takes the 2x2 neighbours with integer weights (32 - f, f)
  per axis and rounds the weighted sum to the nearest integer;
- does no antialiasing: each output pixel reads 4 source pixels however much the image shrinks;
- repeats the last row/column for neighbours past the edge (upscaling).

The 3x3 matrix OpenCV solves for (from the image corners) carries rounding noise of about 1e-16. It decides
the rounding of source points that fall exactly halfway between two 1/32 steps, which happens only when `size`
is a multiple of 64 (128, 192, ...). `_source_positions` repeats OpenCV's arithmetic so that those cases match
too; for other sizes it equals simply `rint(arange(size) * W / size * 32)`.

For a uint8-input model the result is MediaPipe's input tensor. For a float model MediaPipe feeds
pixel * (2 / 255) - 1 (from the metadata's mean = std = 127.5), which is (pixel - 127.5) / 127.5 to within
one float32 rounding.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_STEPS = 32  # OpenCV's INTER_TAB_SIZE: source points are kept to 1/32 pixel
_BLOCK_WIDTH = 64  # warpPerspective computes the source points in blocks of 64 output columns


def resize_like_mediapipe(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) uint8 -> (size, size, C) uint8: the whole image stretched to size x size as MediaPipe does."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3:
        raise ValueError(f"expected an (H, W, C) uint8 array, got {rgb.dtype} {rgb.shape}")
    height, width, channels = rgb.shape
    separable = _separable_taps(height, width, size)
    if separable is not None:
        return _resize_separable(rgb, *separable)
    indices, weights = _taps(height, width, size)
    src = rgb.reshape(-1, channels)
    total = sum(src[indices[k]].astype(np.int32) * weights[k] for k in range(4))  # the weights add up to 1024
    return ((total + 512) >> 10).astype(np.uint8).reshape(size, size, channels)


def _resize_separable(rgb, col0, col1, fx, used, row0, row1, fy) -> np.ndarray:
    """The same integer sum, taken a row pass then a column pass: sum_ij p_ij wx_i wy_j is
    sum_j wy_j (sum_i wx_i p_ij), exactly, in integers. Three times faster than gathering four taps per pixel."""
    wx1 = fx[None, :, None]
    wx0 = _STEPS - wx1
    rows = rgb if len(used) == len(rgb) else rgb[used]  # only the rows some output row reads (large photos)
    across = rows[:, col0] * wx0 + rows[:, col1] * wx1  # at most 255 * 32: uint16 holds it
    wy1 = fy[:, None, None]
    total = across[row0].astype(np.uint32) * (_STEPS - wy1) + across[row1] * wy1
    return ((total + 512) >> 10).astype(np.uint8)


@lru_cache(maxsize=256)
def _separable_taps(height: int, width: int, size: int):
    """(col0, col1, fx, used rows, row0, row1 as indices into them, fy) when every output row reads the same
    source columns and every output column the same source rows (a plain stretch: almost always), else None and
    the general path is taken."""
    xs, ys = _source_positions(height, width, size)
    if not ((xs == xs[:1]).all() and (ys == ys[:, :1]).all()):
        return None
    x, y = xs[0], ys[:, 0]
    col0, col1 = np.clip(x // _STEPS, 0, width - 1), np.clip(x // _STEPS + 1, 0, width - 1)
    row0, row1 = np.clip(y // _STEPS, 0, height - 1), np.clip(y // _STEPS + 1, 0, height - 1)
    used, local = np.unique(np.concatenate([row0, row1]), return_inverse=True)
    fx, fy = (x % _STEPS).astype(np.uint16), (y % _STEPS).astype(np.uint32)
    return col0, col1, fx, used, local[:size], local[size:], fy


@lru_cache(maxsize=64)
def _taps(height: int, width: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For every output pixel, the flat indices of its 4 source neighbours and their integer weights
    (32 - fx)(32 - fy), fx(32 - fy), (32 - fx)fy, fx fy: OpenCV's two-pass arithmetic in one sum, which integer
    arithmetic makes exact. Cached: a dataset's photos come in a handful of sizes."""
    xs, ys = _source_positions(height, width, size)
    x0, y0 = (xs // _STEPS).ravel(), (ys // _STEPS).ravel()
    fx, fy = (xs % _STEPS).ravel(), (ys % _STEPS).ravel()
    col0, col1 = np.clip(x0, 0, width - 1), np.clip(x0 + 1, 0, width - 1)
    row0, row1 = np.clip(y0, 0, height - 1), np.clip(y0 + 1, 0, height - 1)
    indices = np.stack([row0 * width + col0, row0 * width + col1, row1 * width + col0, row1 * width + col1])
    weights = np.stack([(_STEPS - fx) * (_STEPS - fy), fx * (_STEPS - fy), (_STEPS - fx) * fy, fx * fy])
    return indices, weights.astype(np.int32)[:, :, None]


def _source_positions(height: int, width: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Source x and y, in 1/32 pixel, of every output pixel: two (size, size) int64 arrays."""
    m = _invert3(_corner_matrix(height, width, size))
    y = np.arange(size, dtype=np.float64)[:, None]
    x = np.arange(size, dtype=np.float64)[None, :]
    block = x - x % _BLOCK_WIDTH  # each block starts from its first column, then adds the offset in it
    offset = x - block
    x0 = (m[0] * block + m[1] * y) + m[2]
    y0 = (m[3] * block + m[4] * y) + m[5]
    w = ((m[6] * block + m[7] * y) + m[8]) + m[6] * offset
    scale = np.divide(_STEPS, w, out=np.zeros_like(w), where=w != 0)
    return np.rint((x0 + m[0] * offset) * scale).astype(np.int64), np.rint((y0 + m[3] * offset) * scale).astype(
        np.int64
    )


def _corner_matrix(height: int, width: int, size: int) -> list[float]:
    """The 3x3 perspective matrix taking the image corners to the tensor corners, solved as OpenCV does
    (8x8 system, Gaussian elimination with partial pivoting, in float64)."""
    f32 = np.float32
    src = [(0, height), (0, 0), (width, 0), (width, height)]  # the corners in MediaPipe's order
    dst = [(0, size), (0, 0), (size, 0), (size, size)]
    a = [[0.0] * 8 for _ in range(8)]
    b = [0.0] * 8
    for i, ((sx, sy), (dx, dy)) in enumerate(zip(src, dst)):
        a[i][0:3] = a[i + 4][3:6] = [float(sx), float(sy), 1.0]
        a[i][6:8] = [float(-f32(sx) * f32(dx)), float(-f32(sy) * f32(dx))]  # float32 products, as in OpenCV
        a[i + 4][6:8] = [float(-f32(sx) * f32(dy)), float(-f32(sy) * f32(dy))]
        b[i], b[i + 4] = float(dx), float(dy)
    for col in range(8):
        pivot = col
        for row in range(col + 1, 8):
            if abs(a[row][col]) > abs(a[pivot][col]):
                pivot = row
        a[col], a[pivot] = a[pivot], a[col]
        b[col], b[pivot] = b[pivot], b[col]
        d = -1.0 / a[col][col]
        for row in range(col + 1, 8):
            alpha = a[row][col] * d
            for k in range(col + 1, 8):
                a[row][k] += alpha * a[col][k]
            b[row] += alpha * b[col]
    for row in range(7, -1, -1):
        s = b[row]
        for k in range(row + 1, 8):
            s -= a[row][k] * b[k]
        b[row] = s / a[row][row]
    return b + [1.0]


def _invert3(m: list[float]) -> list[float]:
    """Inverse of a row-major 3x3 matrix by cofactors over the determinant, in OpenCV's order of operations."""
    a, b, c, d, e, f, g, h, i = m
    inv_det = 1.0 / (a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g))
    return [
        (e * i - f * h) * inv_det,
        (c * h - b * i) * inv_det,
        (b * f - c * e) * inv_det,
        (f * g - d * i) * inv_det,
        (a * i - c * g) * inv_det,
        (c * d - a * f) * inv_det,
        (d * h - e * g) * inv_det,
        (b * g - a * h) * inv_det,
        (a * e - b * d) * inv_det,
    ]
