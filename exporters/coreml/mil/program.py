"""The main function of the package's ML Program as plain data: inputs, runtime ops, constants, outputs.

Read straight from the Model protobuf (`coremltools.proto`, the public generated schema) instead of through pyMIL's
milproto loader: pyMIL re-runs type inference and value inference while building its graph, so what it hands back
is already an interpretation of the package. Here every op keeps the arguments and declared output types that
Core ML itself receives, `const` ops become arrays and `constexpr_*` ops are expanded once into dense arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ....pipeline.core.errors import first_line
from .constexpr import DECOMPRESSORS
from .dtypes import BY_PROTO_NAME
from .errors import UnsupportedOpError
from .package import Package
from .values import decode_value, tensor_type

Arg = str | np.ndarray  # a variable name, or an inline value
NUMPY_TYPES = {t.name: t.numpy for t in BY_PROTO_NAME.values()}


@dataclass(frozen=True)
class Var:
    name: str
    dtype: str | None  # MIL element type ("fp16"), None for non-tensor values (classify's dictionary)
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class Op:
    type: str
    inputs: dict[str, list[Arg]]
    outputs: list[Var]

    @property
    def name(self) -> str:
        return self.outputs[0].name if self.outputs else self.type


@dataclass
class Program:
    opset: str
    inputs: list[Var]
    ops: list[Op]  # runtime ops, in program order
    constants: dict[str, np.ndarray]  # `const` values and expanded `constexpr_*` outputs, by variable name
    outputs: list[str]
    op_types: list[str]  # every op type in the function, constants included

    def constant(self, arg: Arg) -> np.ndarray | None:
        """The value of an argument known at load time, None for a runtime tensor."""
        if isinstance(arg, np.ndarray):
            return arg
        return self.constants.get(arg)


def load_program(package: Package, runtime_ops: set[str] | None) -> Program:
    """Parse `main`; any op outside `runtime_ops`, const and the constexpr family is refused before decoding.
    With `runtime_ops` None every op is read (to inspect a package whose ops the executor cannot run)."""
    function = package.model.mlProgram.functions.get("main")
    if function is None:
        raise package.error("the ML Program has no main function")
    block = function.block_specializations.get(function.opset)
    if block is None:
        raise package.error(f"the main function has no block for its opset {function.opset}")
    known = sorted((runtime_ops or {op.type for op in block.operations}) | {"const"} | set(DECOMPRESSORS))
    for op in block.operations:
        if op.type not in known or len(op.blocks):
            raise UnsupportedOpError(package.path, op.type, known)
    program = Program(
        opset=function.opset,
        inputs=[_declared(package, v) for v in function.inputs],
        ops=[],
        constants={},
        outputs=list(block.outputs),
        op_types=sorted({op.type for op in block.operations}),
    )
    for op in block.operations:
        _add_op(package, program, op)
    return program


def _add_op(package: Package, program: Program, op_spec) -> None:
    outputs = [_declared(package, v) for v in op_spec.outputs]
    if op_spec.type == "const":
        program.constants[outputs[0].name] = _checked(
            package, outputs[0], decode_value(package, op_spec.attributes["val"])
        )
        return
    inputs = {name: [_binding(package, b) for b in arg.arguments] for name, arg in op_spec.inputs.items()}
    if op_spec.type in DECOMPRESSORS:
        _expand(package, program, op_spec.type, inputs, op_spec.attributes, outputs)
    else:
        program.ops.append(Op(op_spec.type, inputs, outputs))


def _expand(package: Package, program: Program, op_type: str, inputs, attributes, outputs: list[Var]) -> None:
    """iOS16 constexpr ops take their parameters as attributes, iOS18 ones as inputs; both end up in `params`."""
    params = {name: decode_value(package, value) for name, value in attributes.items() if name != "name"}
    for name, args in inputs.items():
        value = program.constant(args[0]) if len(args) == 1 else None
        if value is None:
            raise package.error(f"{op_type} {outputs[0].name}: input {name} is not a constant")
        params[name] = value
    try:
        results = DECOMPRESSORS[op_type](params)
    except (ValueError, KeyError, IndexError) as e:
        raise package.error(f"{op_type} {outputs[0].name} cannot be expanded ({first_line(e)})") from None
    if len(results) != len(outputs):
        raise package.error(
            f"{op_type} {outputs[0].name} declares {len(outputs)} outputs, expansion gave {len(results)}"
        )
    for var, value in zip(outputs, results):
        program.constants[var.name] = _checked(package, var, value)


def _checked(package: Package, var: Var, value: np.ndarray) -> np.ndarray:
    """Round once to the declared type and insist on the declared shape: Core ML would reject a mismatch."""
    value = np.asarray(value)
    if var.dtype is None:
        return value
    value = value.astype(NUMPY_TYPES[var.dtype], copy=False)
    if tuple(value.shape) != tuple(var.shape):
        raise package.error(f"{var.name} has shape {tuple(value.shape)}, the program declares {tuple(var.shape)}")
    return value


def _binding(package: Package, binding) -> Arg:
    if binding.WhichOneof("binding") == "name":
        return binding.name
    return decode_value(package, binding.value)


def _declared(package: Package, named) -> Var:
    if named.type.WhichOneof("type") != "tensorType":
        return Var(named.name, None, ())
    try:
        mil_type, shape = tensor_type(named.type)
    except ValueError as e:
        raise package.error(f"{named.name}: {first_line(e)}") from None
    return Var(named.name, mil_type.name, shape)
