"""TFLite export (fp32, fp16, dynamic-range, full int8).

Conversion traces the tf_keras model into one concrete function and converts that frozen graph. Handing the
converter the Keras model instead (`from_keras_model`, or a concrete function with the model as trackable object)
makes TensorFlow first save and reload a SavedModel: 12-25 s per conversion against about 1 s here on the tiny
test model, with the same tensors, quantization and predictions out.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from ...pipeline.core.errors import ConfigError, ExportError, first_line
from ...pipeline.core.files import write_bytes_atomic
from ...pipeline.core.tf_runtime import load_tensorflow
from ..base import Artifact, ExportContext
from ..registry import FORMATS
from .metadata import embed_metadata
from .runner import io_details, quantization


def export(ctx: ExportContext, variant: str, dest: Path) -> Artifact:
    """Convert `ctx.model` to one TFLite variant and write it to exactly `dest`."""
    FORMATS["tflite"].variant(variant)  # raises for an unknown one
    io_types = FORMATS["tflite"].options[0].choices
    if ctx.options.io_type not in io_types:
        raise ConfigError(f"unknown TFLite io_type '{ctx.options.io_type}'; valid: {', '.join(io_types)}")
    io_type = ctx.options.io_type if variant == "int8" else "float"
    calibration = ctx.preprocessing.normalize(ctx.calibration_set("TFLite int8")) if variant == "int8" else None

    started = time.perf_counter()
    converter, settings = _converter(ctx.model, variant, io_type, calibration)
    try:
        with warnings.catch_warnings():
            # Meant for graphs that carry no quantization ranges; post-training calibration supplies them.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
            flatbuffer = converter.convert()
    except Exception as e:  # the converter raises ConverterError, ValueError or RuntimeError with long logs
        raise ExportError(f"TFLite {variant} conversion failed: {first_line(e)}") from None
    convert_seconds = time.perf_counter() - started

    dest = Path(dest)
    write_bytes_atomic(dest, shorten_tensor_names(flatbuffer))
    inp, out = io_details(flatbuffer)
    # Android's MediaPipe / Task Library refuse a float model without labels and normalization inside it.
    embed_metadata(
        dest,
        labels=list(ctx.labels),
        preprocessing=ctx.preprocessing,
        metadata=ctx.metadata,
        input_quantization=quantization(inp),
    )
    return Artifact(
        format="tflite",
        variant=variant,
        path=dest,
        labels=list(ctx.labels),
        preprocessing=ctx.preprocessing,
        source=ctx.source,
        input_quantization=quantization(inp),
        output_quantization=quantization(out),
        details={
            **settings,
            "input_dtype": np.dtype(inp["dtype"]).name,
            "output_dtype": np.dtype(out["dtype"]).name,
            "input_shape": [int(d) for d in inp["shape_signature"]],
            "convert_seconds": round(convert_seconds, 2),
        },
    )


def shorten_tensor_names(flatbuffer: bytes) -> bytes:
    """Replace TensorFlow's scope paths ("model/block_15_expand_relu/Relu6;model/block_15_expand_BN/...") with
    short names. They are debug strings only, yet cost ~20 KB, 2% of an int8 model; the input and output
    tensors keep their names, which apps and signatures use."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    for subgraph in model.subgraphs:
        interface = set(subgraph.inputs) | set(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in interface:
                tensor.name = f"t{index}"
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _converter(model, variant: str, io_type: str, calibration: np.ndarray | None):
    """A configured converter for `variant`, plus the settings worth recording in the manifest."""
    tf, _ = load_tensorflow()
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=model.input_names[0])
    function = tf.function(lambda image: model(image, training=False))
    # A tf.function as trackable object keeps the direct frozen-graph path (see the module docstring).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function(spec)], function)
    settings = {
        "converter": "from_concrete_functions",
        "tensorflow": tf.__version__,
        "weights": {"fp32": "float32", "fp16": "float16", "dynamic": "int8", "int8": "int8"}[variant],
        "activations": "int8" if variant == "int8" else "float32",
    }
    if variant == "fp32":
        return converter, settings
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        # Builtins-int8 only: an op that cannot be quantized fails the export instead of silently staying float.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_dtype = {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io_type]
        converter.inference_input_type = converter.inference_output_type = io_dtype
        settings.update(io_type=io_type, calibration_images=len(calibration))
    return converter, settings
