"""MIL ops that only move data (transpose, reshape, squeeze, expand_dims, concat): exact in any precision.

The program is declared for a batch of one; these ops must leave axis 0 alone for a batched graph to compute the
same thing per image, so each one checks that instead of assuming it.
"""

from __future__ import annotations

from .onnx_context import OpContext
from .registry import translator


@translator("transpose", commutes=True)
def transpose(ctx: OpContext) -> None:
    perm = [int(p) for p in ctx.const("perm")]
    if perm[0] % len(perm) != 0:
        raise ctx.error("moves the batch axis, which a batched run cannot reproduce")
    ctx.done(ctx.emit("Transpose", [ctx.tensor("x")], perm=[p % len(perm) for p in perm]))


@translator("reshape", commutes=True)
def reshape(ctx: OpContext) -> None:
    """Reshape to the declared output shape, copying the batch dimension (ONNX 0) from the input."""
    source, target = ctx.shape("x"), ctx.out_shape
    if None in target or not source or source[0] != 1 or not target or target[0] != 1:
        raise ctx.error(f"reshape {source} -> {target} does not keep a leading batch axis of 1")
    ctx.done(ctx.emit("Reshape", [ctx.tensor("x"), ctx.int_list([0, *target[1:]])]))


@translator("squeeze", commutes=True)
def squeeze(ctx: OpContext) -> None:
    shape = ctx.shape("x")
    default = [i for i, d in enumerate(shape) if d == 1]
    axes = ctx.keep_batch(ctx.const("axes", default), len(shape))
    ctx.done(ctx.emit("Squeeze", [ctx.tensor("x"), ctx.int_list(axes)]))


@translator("expand_dims", commutes=True)
def expand_dims(ctx: OpContext) -> None:
    out_rank = len(ctx.out_shape)
    axes = ctx.keep_batch(ctx.const("axes"), out_rank)
    ctx.done(ctx.emit("Unsqueeze", [ctx.tensor("x"), ctx.int_list(axes)]))


@translator("concat", commutes=True)
def concat(ctx: OpContext) -> None:
    if bool(ctx.const("interleave", False)):
        raise ctx.error("interleaved concat is not supported")
    (axis,) = ctx.keep_batch(ctx.const("axis"), len(ctx.out_shape))
    values = [ctx.tensor("values", i) for i in range(ctx.count("values"))]
    ctx.done(ctx.emit("Concat", values, axis=axis))
