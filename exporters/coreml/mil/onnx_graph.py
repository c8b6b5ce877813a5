"""Build the ONNX graph that runs a program, and keep track of where fp16 rounding is still owed.

Core ML on a GPU or the Neural Engine stores every fp16 tensor in fp16. The graph computes in fp32 and rounds an
op's output with Cast(float->float16)->Cast(float16->float) where the program declares it fp16. Rounding is
owed lazily: ops that commute with rounding (relu, clip to fp16-exact bounds, transposes, zero padding, max
pooling...) consume the unrounded tensor and pass the debt on, which is exact (round(relu6(x)) == relu6(round(x)))
and keeps pairs such as Conv->Clip adjacent so onnxruntime can still fuse them. Every other consumer, and every
graph output, gets the rounded tensor; one cast pair per tensor, shared by all its consumers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
BATCH = "N"


@dataclass
class Tensor:
    onnx_name: str
    shape: tuple[int | None, ...]
    dtype: str | None
    owes_rounding: bool = False
    rounded_name: str | None = None  # the cast pair's output, once built


class GraphBuilder:
    def __init__(self, emulate_fp16: bool):
        self.emulate_fp16 = emulate_fp16
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.tensors: dict[str, Tensor] = {}  # by MIL variable name
        self._used: set[str] = set()

    def fresh(self, hint: str) -> str:
        base = "".join(c if c.isalnum() or c in "_." else "_" for c in hint) or "t"
        name, i = base, 0
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def initializer(self, value: np.ndarray, hint: str) -> str:
        """Floats become float32 (fp16 weights convert exactly); integers become int64, as ONNX shape inputs need."""
        value = np.asarray(value)
        if value.dtype.kind == "f":
            value = value.astype(np.float32)
        elif value.dtype.kind in "iu":
            value = value.astype(np.int64)
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op_type: str, inputs: list[str], hint: str, outputs: int = 1, **attrs) -> list[str]:
        names = [self.fresh(f"{hint}_{op_type}") for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=names[0], **attrs))
        return names

    def add_input(self, mil_name: str, shape: tuple[int, ...]) -> None:
        """The program's batch of 1 becomes a dynamic batch dimension."""
        name = self.fresh(mil_name)
        dims = [BATCH, *shape[1:]]
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        self.tensors[mil_name] = Tensor(name, tuple(shape), "fp32")

    def bind(self, mil_name: str, onnx_name: str, shape, dtype: str | None, owes_rounding: bool) -> None:
        owes = owes_rounding and self.emulate_fp16 and dtype == "fp16"
        self.tensors[mil_name] = Tensor(onnx_name, tuple(shape), dtype, owes)

    def use(self, mil_name: str, raw_ok: bool) -> tuple[str, bool]:
        """(onnx name, whether the value handed over still owes rounding)."""
        tensor = self.tensors[mil_name]
        if not tensor.owes_rounding:
            return tensor.onnx_name, False
        if raw_ok:
            return tensor.onnx_name, True
        if tensor.rounded_name is None:
            (half,) = self.node("Cast", [tensor.onnx_name], mil_name, to=TensorProto.FLOAT16)
            (tensor.rounded_name,) = self.node("Cast", [half], mil_name, to=TensorProto.FLOAT)
        return tensor.rounded_name, False

    def add_output(self, mil_name: str, name: str) -> None:
        source, _ = self.use(mil_name, raw_ok=False)
        self.nodes.append(helper.make_node("Identity", [source], [name], name=self.fresh(name)))
        shape = self.tensors[mil_name].shape
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, *shape[1:]]))

    def model(self, graph_name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="imgpipe")
        model.ir_version = IR_VERSION
        return model
