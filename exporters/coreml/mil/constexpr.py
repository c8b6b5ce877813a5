"""Expand compressed weights (`constexpr_*` ops) into dense arrays once, at load time, as Core ML does.

The rules are written from the op definitions in coremltools' MIL op documentation (iOS16 and iOS18 opsets) rather
than by calling pyMIL's `materialized_val_inference`: they are a few lines of NumPy each, and an executor meant
to check Core ML artifacts should not depend on the same private code that wrote them. Tests compare both.
iOS16 and iOS18 reuse op names (`constexpr_lut_to_dense`, `constexpr_sparse_to_dense`); the iOS16 forms carry a
flat packed `shape`-d layout, the iOS18 forms carry shaped sub-byte tensors, so the presence of `shape` decides.
Arithmetic runs in float64 and is rounded once to the declared output type.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .dtypes import unpack_bits

Params = dict[str, np.ndarray]


def _float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _broadcast_on_axis(param: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """iOS16 quantization params are a scalar or a vector along `axis`."""
    if param.ndim == 0:
        return param
    shape = [1] * rank
    shape[axis] = param.size
    return param.reshape(shape)


def _expand_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """iOS18 block-wise params have the data's rank; each entry covers data.shape[i] / param.shape[i] elements."""
    if param.ndim != len(shape) or any(s % p for s, p in zip(shape, param.shape)):
        raise ValueError(f"parameter of shape {param.shape} does not tile data of shape {shape}")
    for axis, (s, p) in enumerate(zip(shape, param.shape)):
        if s != p:
            param = np.repeat(param, s // p, axis=axis)
    return param


def affine_dequantize(p: Params) -> tuple[np.ndarray, ...]:
    """iOS16: scale * (quantized_data - zero_point), scale/zero_point scalar or per-`axis` vector."""
    q = p["quantized_data"]
    axis = int(p["axis"]) % q.ndim
    zero = _broadcast_on_axis(_float(p["zero_point"]), q.ndim, axis)
    scale = _broadcast_on_axis(_float(p["scale"]), q.ndim, axis)
    return ((_float(q) - zero) * scale,)


def cast(p: Params) -> tuple[np.ndarray, ...]:
    return (p["source_val"],)


def lut_to_dense(p: Params) -> tuple[np.ndarray, ...]:
    if "shape" in p:  # iOS16: packed uint8 indices into a 1-D lut of 2**nbits entries
        lut = p["lut"]
        nbits = int(np.log2(lut.size))
        if 2**nbits != lut.size:
            raise ValueError(f"lut has {lut.size} entries, not a power of two")
        shape = tuple(int(s) for s in p["shape"])
        indices = unpack_bits(p["indices"], nbits, int(np.prod(shape)))
        return (lut[indices].reshape(shape),)
    return (_lut_lookup(p["indices"], p["lut"], p.get("vector_axis")),)


def _lut_lookup(indices: np.ndarray, lut: np.ndarray, vector_axis) -> np.ndarray:
    """iOS18: lut is (groups along each index axis..., palette, vector); a vector fills `vector_axis`."""
    rank = indices.ndim
    if lut.ndim != rank + 2:
        raise ValueError(f"lut rank {lut.ndim} does not match indices rank {rank} + 2")
    if int(indices.max(initial=0)) >= lut.shape[-2]:
        raise ValueError("an index points past the end of the lut")
    blocks = [s // g for s, g in zip(indices.shape, lut.shape[:rank])]
    grids = np.ogrid[tuple(slice(0, s) for s in indices.shape)]
    coords = tuple(grid // block for grid, block in zip(grids, blocks))
    values = lut[(*coords, indices.astype(np.intp))]  # indices.shape + (vector,)
    vector = lut.shape[-1]
    if vector == 1:
        return values[..., 0]
    if vector_axis is None:
        raise ValueError("vector palettization without vector_axis")
    axis = int(vector_axis) % rank
    out_shape = list(indices.shape)
    out_shape[axis] *= vector
    return np.moveaxis(values, -1, axis + 1).reshape(out_shape)


def sparse_to_dense(p: Params) -> tuple[np.ndarray, ...]:
    data = p["nonzero_data"]
    if "shape" in p:  # iOS16: mask is packed bits of a flat, row-major tensor
        shape = tuple(int(s) for s in p["shape"])
        bits = np.unpackbits(p["mask"], bitorder="little")[: int(np.prod(shape))].reshape(shape)
        return (_scatter(bits, data),)
    return (_scatter(p["mask"], data),)


def _scatter(mask: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Nonzero values fill the set mask positions in row-major order."""
    where = mask != 0
    if int(where.sum()) != data.size:
        raise ValueError(f"mask has {int(where.sum())} set bits for {data.size} nonzero values")
    out = np.zeros(mask.shape, dtype=data.dtype)
    out[where] = data.reshape(-1)
    return out


def blockwise_shift_scale(p: Params) -> tuple[np.ndarray, ...]:
    """iOS18: scale * (data - offset), scale/offset tiled block-wise over data."""
    data = p["data"]
    scale = _expand_blocks(_float(p["scale"]), data.shape)
    offset = _expand_blocks(_float(p["offset"]), data.shape) if "offset" in p else 0.0
    return ((_float(data) - offset) * scale,)


def lut_to_sparse(p: Params) -> tuple[np.ndarray, ...]:
    """iOS18: palettize only the nonzero entries; a vector lut widens the mask along `vector_axis`."""
    mask = p["indices_mask"]
    indices = _scatter(mask, p["indices_nonzero_data"])
    dense = _lut_lookup(indices, p["lut"], p.get("vector_axis"))
    if p["lut"].shape[-1] > 1:
        mask = np.repeat(mask, p["lut"].shape[-1], axis=int(p["vector_axis"]) % mask.ndim)
    return mask, dense[mask != 0]


def sparse_blockwise_shift_scale(p: Params) -> tuple[np.ndarray, ...]:
    """iOS18: dequantize only the nonzero entries, with the scale block of their dense position."""
    mask = p["data_mask"]
    dense = _scatter(mask, p["nonzero_data"])
    (values,) = blockwise_shift_scale({**p, "data": dense})
    return mask, values[mask != 0]


DECOMPRESSORS: dict[str, Callable[[Params], tuple[np.ndarray, ...]]] = {
    "constexpr_affine_dequantize": affine_dequantize,
    "constexpr_blockwise_shift_scale": blockwise_shift_scale,
    "constexpr_cast": cast,
    "constexpr_lut_to_dense": lut_to_dense,
    "constexpr_lut_to_sparse": lut_to_sparse,
    "constexpr_sparse_blockwise_shift_scale": sparse_blockwise_shift_scale,
    "constexpr_sparse_to_dense": sparse_to_dense,
}
