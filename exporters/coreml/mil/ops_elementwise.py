"""MIL activations, element-wise arithmetic and casts as ONNX nodes (iOS15+ definitions).

Binary ops broadcast like NumPy in both MIL and ONNX, so they map one to one. `cast` between fp16 and fp32 is
the one place precision changes hands: in fp32 tensors it is an identity, except that casting to fp16 leaves a
rounding debt the graph settles before the next non-commuting op.
"""

from __future__ import annotations

import numpy as np

from .onnx_context import OpContext
from .program import Op, Program
from .registry import translator

BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "real_div": "Div", "maximum": "Max", "minimum": "Min"}
UNARY = {"sigmoid": "Sigmoid", "tanh": "Tanh", "exp": "Exp", "sqrt": "Sqrt", "abs": "Abs"}


def fp16_exact(program: Program, op: Op, *params: str) -> bool:
    for param in params:
        args = op.inputs.get(param)
        value = program.constant(args[0]) if args else None
        if value is None or not np.all(np.float16(value).astype(np.float64) == np.asarray(value, np.float64)):
            return False
    return True


@translator("relu", commutes=True)
def relu(ctx: OpContext) -> None:
    ctx.done(ctx.emit("Relu", [ctx.tensor("x")]))


@translator("relu6", commutes=True)
def relu6(ctx: OpContext) -> None:
    ctx.done(ctx.emit("Clip", [ctx.tensor("x"), ctx.float_scalar(0.0), ctx.float_scalar(6.0)]))


@translator("clip", commutes=lambda program, op: fp16_exact(program, op, "alpha", "beta"))
def clip(ctx: OpContext) -> None:
    low, high = float(ctx.const("alpha")), float(ctx.const("beta"))
    ctx.done(ctx.emit("Clip", [ctx.tensor("x"), ctx.float_scalar(low), ctx.float_scalar(high)]))


@translator("sigmoid_hard")
def sigmoid_hard(ctx: OpContext) -> None:
    """MIL: min(max(alpha * x + beta, 0), 1), which is ONNX HardSigmoid."""
    alpha, beta = float(ctx.const("alpha", 0.2)), float(ctx.const("beta", 0.5))
    ctx.done(ctx.emit("HardSigmoid", [ctx.tensor("x")], alpha=alpha, beta=beta))


@translator("silu")
def silu(ctx: OpContext) -> None:
    x = ctx.tensor("x")
    ctx.done(ctx.emit("Mul", [x, ctx.emit("Sigmoid", [x])]))


@translator("leaky_relu")
def leaky_relu(ctx: OpContext) -> None:
    ctx.done(ctx.emit("LeakyRelu", [ctx.tensor("x")], alpha=float(ctx.const("alpha", 0.01))))


@translator(*UNARY)
def unary(ctx: OpContext) -> None:
    ctx.done(ctx.emit(UNARY[ctx.op.type], [ctx.tensor("x")]))


@translator("add", "sub", "mul", "real_div")
def binary(ctx: OpContext) -> None:
    ctx.done(ctx.emit(BINARY[ctx.op.type], [ctx.tensor("x"), ctx.tensor("y")]))


@translator("maximum", "minimum", commutes=True)
def extremum(ctx: OpContext) -> None:
    """Rounding is monotone, so max(round(a), round(b)) == round(max(a, b))."""
    ctx.done(ctx.emit(BINARY[ctx.op.type], [ctx.tensor("x"), ctx.tensor("y")]))


@translator("identity", commutes=True)
def identity(ctx: OpContext) -> None:
    ctx.done(ctx.tensor("x"))


def _cast_commutes(program: Program, op: Op) -> bool:
    """Casting to fp16 just rounds, so it may take an unrounded input; casting to fp32 must see rounded values."""
    return str(program.constant(op.inputs["dtype"][0])) == "fp16"


@translator("cast", commutes=_cast_commutes)
def cast(ctx: OpContext) -> None:
    target, source = str(ctx.const("dtype")), ctx.dtype("x")
    if target not in ("fp16", "fp32") or source not in ("fp16", "fp32"):
        raise ctx.error(f"cast from {source} to {target} is not supported (only between fp16 and fp32)")
    x = ctx.tensor("x")
    ctx.done(x, owes=target == "fp16" and (source == "fp32" or ctx.passed_debt))
