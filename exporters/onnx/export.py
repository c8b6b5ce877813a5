"""ONNX export: tf2onnx float graphs, and onnxruntime static-QDQ int8 graphs calibrated on train images.

The graph keeps the Keras interface (input `image`, NHWC float32 normalized, softmax output) so every runtime is
fed the same numbers. Labels and preprocessing travel inside the file as `metadata_props`, because an .onnx file
has no other place an app or `imgpipe predict` could find them.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from ...pipeline.core.errors import ExportError, first_line
from ...pipeline.core.files import write_bytes_atomic
from ...pipeline.core.preprocessing import INPUT_NAME
from ...pipeline.core.tf_runtime import load_tensorflow
from ...pipeline.core.version import __version__
from ..base import Artifact, ExportContext
from ..registry import FORMATS
from .quantize import QUANTIZATION, drop_unused_opsets, quantize_in_workdir

OPSET = 17


def export(ctx: ExportContext, variant: str, dest: Path) -> Artifact:
    """Write the `variant` of ctx.model to exactly `dest`; intermediates stay in ctx.workdir."""
    FORMATS["onnx"].variant(variant)  # raises for an unknown one
    images = ctx.calibration_set("ONNX int8") if variant == "int8" else None  # fail before the slow conversion
    model = convert_keras(ctx.model, ctx.preprocessing.image_size)
    shorten_names(model)  # first here too, so the quantizer starts from the same graph in every process
    details = {"opset": OPSET, "converter": f"tf2onnx {version('tf2onnx')}"}
    if variant == "int8":
        model = quantize_in_workdir(model, images, ctx)
        details["quantization"] = {
            **QUANTIZATION,
            "calibration_images": len(images),
            "quantizer": f"onnxruntime {version('onnxruntime')}",
        }
    drop_unused_opsets(model)
    shorten_names(model)
    embed_metadata(model, ctx, variant)
    _check(model)
    write_bytes_atomic(dest, model.SerializeToString(deterministic=True))
    return Artifact("onnx", variant, dest, list(ctx.labels), ctx.preprocessing, source=ctx.source, details=details)


def convert_keras(keras_model, image_size: int):
    """tf2onnx graph with a dynamic batch so apps can batch and calibration can feed several images per run."""
    import tf2onnx

    tf, _ = load_tensorflow()
    signature = [tf.TensorSpec((None, image_size, image_size, 3), tf.float32, name=INPUT_NAME)]
    try:
        model, _ = tf2onnx.convert.from_keras(keras_model, input_signature=signature, opset=OPSET)
    except Exception as e:  # tf2onnx raises anything from ValueError to its own conversion errors
        raise ExportError(f"tf2onnx could not convert the model to ONNX opset {OPSET}: {first_line(e)}") from e
    return model


def shorten_names(model) -> None:
    """Replace the converters' scope paths ("mobilenet_v2_classifier/block_10_project/Conv2D_weights_fused_bn_
    DequantizeLinear" ...) with short names. They are debug strings only, yet make up over 10% of an int8 file;
    the graph's input and output keep their names, which are the model's interface.

    Names are given in the order the nodes use them and the initializers are sorted by them: tf2onnx names and
    orders its initializers differently in every process (Python's per-process string hashing), and this makes
    the same model give the same bytes."""
    graph = model.graph
    interface = {v.name for v in graph.input} | {v.name for v in graph.output}
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in interface:
            return name
        return renamed.setdefault(name, f"t{len(renamed)}")

    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    for init in graph.initializer:
        init.name = short(init.name)
    ordered = sorted(graph.initializer, key=lambda t: int(t.name[1:]) if t.name.startswith("t") else -1)
    copies = [type(t)() for t in ordered]
    for copy, t in zip(copies, ordered):
        copy.CopyFrom(t)
    del graph.initializer[:]
    graph.initializer.extend(copies)
    for info in graph.value_info:
        info.name = short(info.name)
    symbols: dict[str, str] = {}  # tf2onnx numbers unknown dimensions ("unk__606") with a counter for the process
    for info in [*graph.input, *graph.output, *graph.value_info]:
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param.startswith("unk__"):
                dim.dim_param = symbols.setdefault(dim.dim_param, f"unk__{len(symbols)}")


def embed_metadata(model, ctx: ExportContext, variant: str) -> None:
    """Store labels, preprocessing and provenance in the file, replacing whatever the converters left there."""
    import onnx

    meta = ctx.metadata
    props = {
        "labels": json.dumps(list(ctx.labels)),
        "preprocessing": json.dumps(ctx.preprocessing.to_dict()),
        "producer": f"imgpipe {__version__}",
        "name": meta.name,
        "description": meta.description,
        "version": meta.version,
        "author": meta.author,
        "license": meta.license,
        "variant": variant,
        "source": ctx.source,
    }
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    model.producer_name = "imgpipe"
    model.producer_version = __version__
    model.doc_string = f"{meta.name}: {meta.description} (imgpipe onnx {variant})"


def _check(model) -> None:
    """tf2onnx only logs ops it cannot convert and leaves them in the graph; the checker is what catches them."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(
            f"the converted ONNX graph is invalid, likely an op tf2onnx cannot convert: {first_line(e)}"
        ) from e
