"""MIL convolution, pooling, padding, reductions, matrix products and layout ops as ONNX nodes.

Padding is computed from the declared shapes rather than delegated to ONNX auto_pad, and the resulting output
size is checked against the shape the program declares: a disagreement means the translation misread the op.
"""

from __future__ import annotations

import numpy as np

from .onnx_context import OpContext
from .ops_elementwise import fp16_exact
from .registry import translator


def _explicit_pads(ctx: OpContext, kernel, strides, dilations) -> list[int]:
    """ONNX pads [begins..., ends...] for MIL pad_type valid / same / same_lower / custom."""
    pad_type = str(ctx.const("pad_type", "valid"))
    spatial = ctx.shape("x")[2:]
    if pad_type == "custom":
        pad = [int(p) for p in ctx.const("pad")]
        begins, ends = pad[0::2], pad[1::2]
    elif pad_type == "valid":
        begins = ends = [0] * len(spatial)
    elif pad_type in ("same", "same_lower"):
        totals = [
            max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            for n, k, s, d in zip(spatial, kernel, strides, dilations)
        ]
        small = [t // 2 for t in totals]
        begins = small if pad_type == "same" else [t - b for t, b in zip(totals, small)]
        ends = [t - b for t, b in zip(totals, begins)]
    else:
        raise ctx.error(f"pad_type {pad_type} is not supported")
    return [*begins, *ends]


def _check_spatial(ctx: OpContext, kernel, strides, dilations, pads, ceil_mode=False) -> None:
    spatial, rank = ctx.shape("x")[2:], len(kernel)
    for i, (n, k, s, d) in enumerate(zip(spatial, kernel, strides, dilations)):
        span = n + pads[i] + pads[i + rank] - ((k - 1) * d + 1)
        size = (-(-span // s) if ceil_mode else span // s) + 1
        if size != ctx.out_shape[2 + i]:
            raise ctx.error(f"computed output size {size} on spatial axis {i}, program declares {ctx.out_shape[2 + i]}")


@translator("conv")
def conv(ctx: OpContext) -> None:
    weight_shape = ctx.shape("weight")
    rank = len(weight_shape) - 2
    kernel = list(weight_shape[2:])
    strides = [int(s) for s in ctx.const("strides", [1] * rank)]
    dilations = [int(d) for d in ctx.const("dilations", [1] * rank)]
    pads = _explicit_pads(ctx, kernel, strides, dilations)
    _check_spatial(ctx, kernel, strides, dilations, pads)
    inputs = [ctx.tensor("x"), ctx.tensor("weight")] + ([ctx.tensor("bias")] if ctx.has("bias") else [])
    ctx.done(
        ctx.emit(
            "Conv",
            inputs,
            strides=strides,
            dilations=dilations,
            pads=pads,
            group=int(ctx.const("groups", 1)),
            kernel_shape=kernel,
        )
    )


@translator("avg_pool", "max_pool", commutes=lambda program, op: op.type == "max_pool")
def pool(ctx: OpContext) -> None:
    kernel = [int(k) for k in ctx.const("kernel_sizes")]
    strides = [int(s) for s in ctx.const("strides", [1] * len(kernel))]
    ceil_mode = bool(ctx.const("ceil_mode", False))
    pads = _explicit_pads(ctx, kernel, strides, [1] * len(kernel))
    _check_spatial(ctx, kernel, strides, [1] * len(kernel), pads, ceil_mode)
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads, "ceil_mode": int(ceil_mode)}
    if ctx.op.type == "avg_pool":
        attrs["count_include_pad"] = int(not bool(ctx.const("exclude_padding_from_average", False)))
    ctx.done(ctx.emit("AveragePool" if ctx.op.type == "avg_pool" else "MaxPool", [ctx.tensor("x")], **attrs))


def _pad_commutes(program, op) -> bool:
    mode_args = op.inputs.get("mode")
    mode = str(program.constant(mode_args[0])) if mode_args else "constant"
    return mode != "constant" or not op.inputs.get("constant_val") or fp16_exact(program, op, "constant_val")


@translator("pad", commutes=_pad_commutes)
def pad(ctx: OpContext) -> None:
    """MIL pads the last len(pad)/2 axes with [begin, end] pairs; ONNX wants begins then ends for every axis."""
    rank = len(ctx.shape("x"))
    pairs = np.asarray(ctx.const("pad"), dtype=np.int64).reshape(-1, 2)
    full = np.zeros((rank, 2), dtype=np.int64)
    full[rank - len(pairs) :] = pairs
    if full[0].any():
        raise ctx.error("pads the batch axis, which a batched run cannot reproduce")
    mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}.get(str(ctx.const("mode", "constant")))
    if mode is None:
        raise ctx.error(f"pad mode {ctx.const('mode')} is not supported")
    inputs = [ctx.tensor("x"), ctx.int_list(np.concatenate([full[:, 0], full[:, 1]]))]
    if mode == "constant":
        inputs.append(ctx.float_scalar(float(ctx.const("constant_val", 0.0))))
    ctx.done(ctx.emit("Pad", inputs, mode=mode))


@translator("reduce_mean")
def reduce_mean(ctx: OpContext) -> None:
    rank = len(ctx.shape("x"))
    axes = ctx.keep_batch(ctx.const("axes", list(range(rank))), rank)
    keep = int(bool(ctx.const("keep_dims", False)))
    ctx.done(ctx.emit("ReduceMean", [ctx.tensor("x")], axes=axes, keepdims=keep))


@translator("linear")
def linear(ctx: OpContext) -> None:
    """y = x @ weight.T + bias with weight (out, in)."""
    weight = np.asarray(ctx.const("weight"), dtype=np.float32)
    bias = np.asarray(ctx.const("bias", np.zeros(weight.shape[0])), dtype=np.float32)
    x = ctx.tensor("x")
    w = ctx.builder.initializer(weight, f"{ctx.op.name}_weight")
    b = ctx.builder.initializer(bias, f"{ctx.op.name}_bias")
    if len(ctx.shape("x")) == 2:
        ctx.done(ctx.emit("Gemm", [x, w, b], transB=1))
    else:
        ctx.done(ctx.emit("Add", [ctx.emit("MatMul", [x, ctx.emit("Transpose", [w], perm=[1, 0])]), b]))


@translator("matmul")
def matmul(ctx: OpContext) -> None:
    def operand(param: str, flag: str) -> str:
        name, rank = ctx.tensor(param), len(ctx.shape(param))
        if not bool(ctx.const(flag, False)):
            return name
        if rank < 2 or (rank == 2 and ctx.is_runtime(param)):
            raise ctx.error(f"{flag} on a rank-{rank} runtime tensor would move the batch axis")
        perm = list(range(rank - 2)) + [rank - 1, rank - 2]
        return ctx.emit("Transpose", [name], perm=perm)

    ctx.done(ctx.emit("MatMul", [operand("x", "transpose_x"), operand("y", "transpose_y")]))


@translator("softmax")
def softmax(ctx: OpContext) -> None:
    rank = len(ctx.shape("x"))
    (axis,) = ctx.keep_batch(ctx.const("axis", -1), rank)
    ctx.done(ctx.emit("Softmax", [ctx.tensor("x")], axis=axis))


@translator("batch_norm")
def batch_norm(ctx: OpContext) -> None:
    channels = ctx.shape("mean")[0]
    gamma = ctx.tensor("gamma") if ctx.has("gamma") else ctx.builder.initializer(np.ones(channels, np.float32), "one")
    beta = ctx.tensor("beta") if ctx.has("beta") else ctx.builder.initializer(np.zeros(channels, np.float32), "zero")
    inputs = [ctx.tensor("x"), gamma, beta, ctx.tensor("mean"), ctx.tensor("variance")]
    ctx.done(ctx.emit("BatchNormalization", inputs, epsilon=float(ctx.const("epsilon", 1e-5))))
