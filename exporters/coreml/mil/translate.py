"""Translate a classifier ML Program into one ONNX graph: image in, classify's probabilities out.

The program must look like what Core ML accepts for an image classifier: one image input, runtime ops, and a
final `classify` that names the labels. Everything in between goes through the op translators; nothing is
skipped, so an op the executor cannot reproduce stops the translation instead of being left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from . import ops_elementwise, ops_layout, ops_tensor  # noqa: F401  (they fill the registry)
from .errors import ProgramError, UnsupportedOpError
from .onnx_context import OpContext
from .onnx_graph import GraphBuilder
from .program import Program
from .registry import TRANSLATORS

PROBABILITIES = "probabilities"
RUNTIME_OPS = frozenset(TRANSLATORS) | {"classify"}


@dataclass(frozen=True)
class Translation:
    model: onnx.ModelProto
    input_name: str
    labels: list[str]


def translate(program: Program, package_path: Path, emulate_fp16: bool, expose: bool = False) -> Translation:
    """`expose` also outputs every runtime variable (settled to its declared precision) under its MIL name, so
    tests can check each op on its own."""
    image = _image_input(program, package_path)
    builder = GraphBuilder(emulate_fp16)
    builder.add_input(image.name, image.shape)
    classify = None
    for op in program.ops:
        if classify is not None:
            raise ProgramError(package_path, f"{op.type} {op.name} follows classify; classify must come last")
        if op.type == "classify":
            classify = op
            continue
        entry = TRANSLATORS.get(op.type)
        if entry is None:
            raise UnsupportedOpError(package_path, op.type, sorted(RUNTIME_OPS | {"const"}))
        entry.translate(OpContext(builder, program, op, package_path, entry.commutes(program, op)))
    labels = _classify_output(program, package_path, builder, classify)
    if expose:
        for var in (v for op in program.ops if op is not classify for v in op.outputs):
            builder.add_output(var.name, var.name)
    return Translation(builder.model("mil_program"), builder.inputs[0].name, labels)


def _image_input(program: Program, package_path: Path):
    if len(program.inputs) != 1:
        raise ProgramError(package_path, f"the program has {len(program.inputs)} inputs; an image classifier has one")
    image = program.inputs[0]
    if image.dtype != "fp32" or len(image.shape) != 4 or image.shape[0] != 1 or None in image.shape:
        raise ProgramError(package_path, f"input {image.name} is {image.dtype} {image.shape}, not a fixed-size image")
    return image


def _classify_output(program: Program, package_path: Path, builder: GraphBuilder, classify) -> list[str]:
    if classify is None:
        raise ProgramError(package_path, "the program has no classify op (imgpipe runs image classifiers only)")
    (probabilities,) = classify.inputs["probabilities"]
    classes = program.constant(classify.inputs["classes"][0])
    if not isinstance(probabilities, str) or classes is None:
        raise ProgramError(package_path, "classify's inputs are not a runtime tensor and constant labels")
    shape = builder.tensors[probabilities].shape
    if shape != (1, len(classes)):
        raise ProgramError(package_path, f"classify gets probabilities {shape} for {len(classes)} labels")
    if set(program.outputs) != {v.name for v in classify.outputs}:
        raise ProgramError(package_path, "the program's outputs are not classify's label and probabilities")
    builder.add_output(probabilities, PROBABILITIES)
    return [str(c) for c in classes.tolist()]
