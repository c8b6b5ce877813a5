"""What an op translator sees: its MIL op's arguments as ONNX tensor names or NumPy constants, and its outputs.

Translators never guess: a parameter that must be known at load time and is not, or an axis that would mix the
batch dimension (the program is declared for one image, the graph runs N), raises a ProgramError naming the op.
"""

from __future__ import annotations

import numpy as np

from .errors import ProgramError
from .onnx_graph import GraphBuilder
from .program import Op, Program

_MISSING = object()


class OpContext:
    def __init__(self, builder: GraphBuilder, program: Program, op: Op, package_path, commutes: bool):
        self.builder = builder
        self.program = program
        self.op = op
        self.package_path = package_path
        self.commutes = commutes  # the op's result rounded to fp16 equals the op applied to rounded inputs
        self.passed_debt = False

    def error(self, reason: str) -> ProgramError:
        return ProgramError(self.package_path, f"{self.op.type} {self.op.name}: {reason}")

    def has(self, param: str) -> bool:
        return bool(self.op.inputs.get(param))

    def count(self, param: str) -> int:
        return len(self.op.inputs.get(param, []))

    def const(self, param: str, default=_MISSING) -> np.ndarray:
        if not self.has(param):
            if default is _MISSING:
                raise self.error(f"missing input {param}")
            return np.asarray(default)
        value = self.program.constant(self.op.inputs[param][0])
        if value is None:
            raise self.error(f"input {param} must be known at load time")
        return value

    def tensor(self, param: str, index: int = 0) -> str:
        """A runtime tensor (rounded to fp16 first unless the op commutes with rounding) or an initializer."""
        if not self.has(param):
            raise self.error(f"missing input {param}")
        arg = self.op.inputs[param][index]
        value = self.program.constant(arg)
        if value is not None:
            return self.builder.initializer(value, f"{self.op.name}_{param}")
        name, owes = self.builder.use(arg, raw_ok=self.commutes)
        self.passed_debt |= owes
        return name

    def is_runtime(self, param: str) -> bool:
        return self.has(param) and self.program.constant(self.op.inputs[param][0]) is None

    def shape(self, param: str, index: int = 0) -> tuple[int | None, ...]:
        arg = self.op.inputs[param][index]
        value = self.program.constant(arg)
        return tuple(value.shape) if value is not None else self.builder.tensors[arg].shape

    def dtype(self, param: str) -> str | None:
        arg = self.op.inputs[param][0]
        value = self.program.constant(arg)
        if value is None:
            return self.builder.tensors[arg].dtype
        return {"float16": "fp16", "float32": "fp32"}.get(str(value.dtype), str(value.dtype))

    @property
    def out_shape(self) -> tuple[int | None, ...]:
        return self.op.outputs[0].shape

    def emit(self, op_type: str, inputs: list[str], **attrs) -> str:
        return self.builder.node(op_type, inputs, self.op.name, **attrs)[0]

    def int_list(self, values) -> str:
        return self.builder.initializer(np.asarray(values, dtype=np.int64), f"{self.op.name}_ints")

    def float_scalar(self, value: float) -> str:
        return self.builder.initializer(np.asarray(value, dtype=np.float32), f"{self.op.name}_f")

    def keep_batch(self, axes, rank: int) -> list[int]:
        """Normalize axes; the leading (batch) axis must stay where it is."""
        normalized = [int(a) % rank for a in np.atleast_1d(axes)]
        if 0 in normalized:
            raise self.error("operates on the batch axis, which a batched run cannot reproduce")
        return normalized

    def done(self, *onnx_names: str, owes: bool | None = None) -> None:
        """Bind the op's outputs; a commuting op owes rounding only if it was handed an unrounded input."""
        if owes is None:
            owes = self.passed_debt if self.commutes else True
        for var, name in zip(self.op.outputs, onnx_names):
            self.builder.bind(var.name, name, var.shape, var.dtype, owes)
