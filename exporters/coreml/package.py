"""Reading a saved `.mlpackage` on any OS, through the executor's own reader (`mil.package`, `mil.program`): the
Model protobuf the manifest names, the main function with its weights decoded from the weight files, the labels
and preprocessing imgpipe embeds, and the classifier head's weights.

Structural checks, `read_embedded` and the head-weight comparison read exactly what the executor runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...pipeline.core.errors import ArtifactError
from ...pipeline.core.preprocessing import INPUT_NAME, Preprocessing
from ...pipeline.core.tf_runtime import load_tensorflow
from ..base import EmbeddedInfo
from .mil.package import Package, read_package
from .mil.program import Op, Program, load_program

LABEL_OUTPUT = "classLabel"
PROBS_OUTPUT = "classLabelProbs"
PREVIEW_TYPE_KEY = "com.apple.coreml.model.preview.type"


def coremltools():
    """coremltools imports TensorFlow, and only converts tf_keras models if the legacy switch was set first."""
    load_tensorflow()
    import coremltools

    return coremltools


def open_package(path: Path) -> tuple[Package, Program]:
    """The package's Model protobuf and its main function, weights decoded; one-line errors for broken packages.
    Every op is read, also one the executor cannot run: checking a package's structure does not need to run it."""
    package = read_package(Path(path))
    return package, load_program(package, runtime_ops=None)


def read_embedded(path: Path) -> EmbeddedInfo:
    package, program = open_package(path)
    return embedded_info(package.model, program)


def embedded_info(model, program: Program) -> EmbeddedInfo:
    """Labels and preprocessing from imgpipe's metadata; a package from elsewhere still has the classify labels."""
    user = model.description.metadata.userDefined
    labels = json.loads(user["labels"]) if "labels" in user else classify_labels(program)
    preprocessing = Preprocessing.from_dict(json.loads(user["preprocessing"])) if "preprocessing" in user else None
    return EmbeddedInfo(labels=labels, preprocessing=preprocessing)


def find_classify(program: Program) -> Op | None:
    return next((op for op in program.ops if op.type == "classify"), None)


def classify_labels(program: Program) -> list[str]:
    classify = find_classify(program)
    classes = None if classify is None else program.constant(classify.inputs["classes"][0])
    return [] if classes is None else [str(c) for c in classes.tolist()]


def input_scale_bias(program: Program) -> tuple[float, list[float]]:
    """The ImageType scale and bias become a `mul` and an `add` on the input (after an fp16 `cast` in fp16
    programs); coremltools leaves out either when it is the identity (scale 1, bias 0)."""
    scale, bias = 1.0, [0.0, 0.0, 0.0]
    var = INPUT_NAME
    op = _only_consumer(program, var)
    if op is not None and op.type == "cast":
        op = _only_consumer(program, op.outputs[0].name)
    if op is not None and op.type == "mul":
        scale = float(np.asarray(_other_operand(program, op)).reshape(-1)[0])
        op = _only_consumer(program, op.outputs[0].name)
    if op is not None and op.type == "add":
        bias = [float(b) for b in np.asarray(_other_operand(program, op)).reshape(-1)]
    return scale, bias


def final_dense_weights(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The classifier head's kernel (features, classes) and bias as stored in the package, decompressed to float.

    Comparing them with the Keras Dense layer proves that the trained weights (and not, say, a fresh
    initialization or a transposed matrix) made it into the artifact.
    """
    _, program = open_package(path)
    classify = find_classify(program)
    if classify is None:
        raise ArtifactError(f"{path}: no classify op, so this is not an image classifier")
    op = _producer(program, classify.inputs["probabilities"][0])
    while op is not None and op.type in ("cast", "softmax"):
        op = _producer(program, op.inputs["x"][0])
    if op is None or op.type not in ("linear", "matmul"):
        raise ArtifactError(f"{path}: the probabilities do not come from a linear layer")
    if op.type == "linear":
        kernel = program.constant(op.inputs["weight"][0]).T
        bias = program.constant(op.inputs["bias"][0]) if op.inputs.get("bias") else np.zeros(kernel.shape[1])
    else:  # a zero bias is folded away and the Dense layer stays a plain matmul
        kernel = program.constant(op.inputs["y"][0])
        transposed = op.inputs.get("transpose_y") and bool(program.constant(op.inputs["transpose_y"][0]))
        kernel = kernel.T if transposed else kernel
        bias = np.zeros(kernel.shape[1])
    return np.asarray(kernel, np.float32), np.asarray(bias, np.float32)


def _producer(program: Program, var) -> Op | None:
    return next((op for op in program.ops if any(v.name == var for v in op.outputs)), None)


def _only_consumer(program: Program, var: str) -> Op | None:
    users = [op for op in program.ops if any(isinstance(a, str) and a == var for v in op.inputs.values() for a in v)]
    return users[0] if len(users) == 1 else None


def _other_operand(program: Program, op: Op):
    """The constant operand of a binary op whose other operand is the runtime tensor."""
    for param in ("y", "x"):
        value = program.constant(op.inputs[param][0])
        if value is not None:
            return value
    raise ArtifactError(f"{op.type} {op.name} has no constant operand")
