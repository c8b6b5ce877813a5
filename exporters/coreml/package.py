"""Reading a saved `.mlpackage` on any OS: its spec, its ML Program (through coremltools' milproto loader, which
reads the weight files), the labels and preprocessing embedded in it, and the classifier head's weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...pipeline.core.errors import ArtifactError, first_line
from ...pipeline.core.preprocessing import INPUT_NAME, Preprocessing
from ...pipeline.core.tf_runtime import load_tensorflow
from ..base import EmbeddedInfo

LABEL_OUTPUT = "classLabel"
PROBS_OUTPUT = "classLabelProbs"
PREVIEW_TYPE_KEY = "com.apple.coreml.model.preview.type"


def coremltools():
    """coremltools imports TensorFlow, and only converts tf_keras models if the legacy switch was set first."""
    load_tensorflow()
    import coremltools

    return coremltools


def read_embedded(path: Path) -> EmbeddedInfo:
    ct = coremltools()
    mlmodel = load_spec_only(ct, Path(path))
    return embedded_info(mlmodel.get_spec(), lambda: classify_labels(load_program(mlmodel)))


def final_dense_weights(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The classifier head's kernel (features, classes) and bias as stored in the package, decompressed to float.

    Comparing them with the Keras Dense layer proves on Linux that the trained weights (and not, say, a fresh
    initialization or a transposed matrix) made it into the artifact.
    """
    ct = coremltools()
    classify = find_classify(load_program(load_spec_only(ct, Path(path))))
    if classify is None:
        raise ArtifactError(f"{path}: no classify op, so this is not an image classifier")
    var = classify.probabilities
    while var.op is not None and var.op.op_type in ("cast", "softmax"):
        var = var.op.x
    op = var.op
    if op is None or op.op_type not in ("linear", "matmul"):
        raise ArtifactError(f"{path}: the probabilities do not come from a linear layer")
    if op.op_type == "linear":
        kernel = _const_value(op.weight).T
        bias = _const_value(op.bias) if op.bias is not None else np.zeros(kernel.shape[1])
    else:  # a zero bias is folded away and the Dense layer stays a plain matmul
        kernel = _const_value(op.y)
        kernel = kernel.T if op.transpose_y.val else kernel
        bias = np.zeros(kernel.shape[1])
    return kernel.astype(np.float32), np.asarray(bias, dtype=np.float32)


def _const_value(var) -> np.ndarray:
    """Compressed weights are constexpr ops (palette, affine, sparse) that Core ML expands at load time."""
    if var.val is not None:
        return np.asarray(var.val)
    return np.asarray(var.op.materialized_val_inference())


def load_mlmodel(ct, path: Path, skip_model_load: bool):
    try:
        return ct.models.MLModel(str(path), skip_model_load=skip_model_load)
    except Exception as e:  # coremltools raises bare Exceptions and protobuf errors for broken packages
        raise ArtifactError(f"{path}: not a loadable Core ML model ({first_line(e)})") from None


def load_spec_only(ct, path: Path):
    mlmodel = load_mlmodel(ct, path, skip_model_load=True)
    if mlmodel.get_spec().WhichOneof("Type") != "mlProgram":
        raise ArtifactError(f"{path}: not an ML Program (imgpipe exports .mlpackage ML Programs only)")
    return mlmodel


def load_program(mlmodel):
    """Reload the package into pyMIL: the spec alone keeps scale, bias and labels inside the op list.

    milproto.load is what coremltools' own compression utilities use to read a saved package.
    """
    from coremltools.converters.mil.frontend.milproto.load import load

    spec = mlmodel.get_spec()
    try:
        return load(spec, spec.specificationVersion, mlmodel.weights_dir)
    except Exception as e:  # a truncated weight.bin surfaces as a bare ValueError("index out of bounds")
        raise ArtifactError(f"{mlmodel.package_path}: the ML Program cannot be read ({first_line(e)})") from None


def embedded_info(spec, labels_from_program) -> EmbeddedInfo:
    """Labels and preprocessing from imgpipe's metadata; a package from elsewhere still has the classify labels."""
    user = spec.description.metadata.userDefined
    labels = json.loads(user["labels"]) if "labels" in user else [str(c) for c in labels_from_program()]
    preprocessing = Preprocessing.from_dict(json.loads(user["preprocessing"])) if "preprocessing" in user else None
    return EmbeddedInfo(labels=labels, preprocessing=preprocessing)


def find_classify(program):
    ops = program.functions["main"].operations
    return next((op for op in ops if op.op_type == "classify"), None)


def classify_labels(program) -> list:
    classify = find_classify(program)
    return list(classify.classes.val) if classify is not None else []


def input_scale_bias(program) -> tuple[float, list[float]]:
    """The ImageType scale and bias become a `mul` and an `add` right after the input; coremltools leaves out
    either when it is the identity (scale 1, bias 0)."""
    scale, bias = 1.0, [0.0, 0.0, 0.0]
    var = program.functions["main"].inputs[INPUT_NAME]
    consumers = var.child_ops
    if len(consumers) == 1 and consumers[0].op_type == "mul":
        scale = float(np.asarray(consumers[0].y.val).reshape(-1)[0])
        var = consumers[0].outputs[0]
        consumers = var.child_ops
    if len(consumers) == 1 and consumers[0].op_type == "add":
        bias = [float(b) for b in np.asarray(consumers[0].y.val).reshape(-1)]
    return scale, bias
