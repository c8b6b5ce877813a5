"""TFLite export (fp32, fp16, dynamic-range, full int8) and a LiteRT runner.

Conversion traces the tf_keras model into one concrete function and converts that frozen graph. Handing the
converter the Keras model instead (`from_keras_model`, or a concrete function with the model as trackable object)
makes TensorFlow first save and reload a SavedModel: 12-25 s per conversion against about 1 s here on the tiny
test model, with the same tensors, quantization and predictions out.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from imgpipe.errors import ArtifactError, ConfigError, ExportError, first_line
from imgpipe.exporters.base import Artifact, EmbeddedInfo, ExportContext, Runner
from imgpipe.exporters.tflite_metadata import embed_metadata, read_metadata
from imgpipe.preprocessing import Preprocessing

VARIANTS = ("fp32", "fp16", "dynamic", "int8")
IO_TYPES = ("float", "int8", "uint8")
LABELS_FILE = "labels.txt"
MAX_BATCH = 32  # larger batches only grow activation memory; LiteRT gains nothing past this on a phone-sized model


def export(ctx: ExportContext, variant: str, dest: Path) -> Artifact:
    """Convert `ctx.model` to one TFLite variant and write it to exactly `dest`."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown TFLite variant '{variant}'; valid variants: {', '.join(VARIANTS)}")
    if ctx.options.io_type not in IO_TYPES:
        raise ConfigError(f"unknown TFLite io_type '{ctx.options.io_type}'; valid: {', '.join(IO_TYPES)}")
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
    _write_atomically(dest, shorten_tensor_names(flatbuffer))
    inp, out = _io_details(flatbuffer)
    # Android's MediaPipe / Task Library refuse a float model without labels and normalization inside it.
    embed_metadata(
        dest,
        labels=list(ctx.labels),
        preprocessing=ctx.preprocessing,
        metadata=ctx.metadata,
        input_quantization=_quantization(inp),
    )
    return Artifact(
        format="tflite",
        variant=variant,
        path=dest,
        labels=list(ctx.labels),
        preprocessing=ctx.preprocessing,
        source=ctx.source,
        input_quantization=_quantization(inp),
        output_quantization=_quantization(out),
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
    tf = _tensorflow()
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


def _write_atomically(dest: Path, content: bytes) -> None:
    """Readers never see a half-written model: the file appears complete or not at all."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TFLiteRunner(Runner):
    """Runs a .tflite file with LiteRT the way an Android app would: uint8 pixels in, probabilities out."""

    def __init__(self, interpreter, preprocessing: Preprocessing, path: Path):
        self.path = Path(path)
        self.preprocessing = preprocessing
        self._interpreter = interpreter
        self._batch = None

    @property
    def input_details(self) -> dict:
        return self._interpreter.get_input_details()[0]

    @property
    def output_details(self) -> dict:
        return self._interpreter.get_output_details()[0]

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = self.preprocessing.normalize(np.asarray(images))
        if len(x) == 0:
            return np.zeros((0, self.output_details["shape"][-1]), dtype=np.float32)
        return np.concatenate([self._invoke(x[i : i + MAX_BATCH]) for i in range(0, len(x), MAX_BATCH)])

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        self._fit_batch(len(x))
        inp, out = self.input_details, self.output_details
        self._interpreter.set_tensor(inp["index"], _quantize(x, inp))
        self._interpreter.invoke()
        return _dequantize(self._interpreter.get_tensor(out["index"]), out)

    def _fit_batch(self, n: int) -> None:
        """Resize the input only when the batch changes, so repeated single-image calls stay allocation-free."""
        if n == self._batch:
            return
        self._interpreter.resize_tensor_input(self.input_details["index"], [n, *self.input_details["shape"][1:]])
        self._interpreter.allocate_tensors()
        self._batch = n


def open_runner(path: Path, preprocessing: Preprocessing | None = None, num_threads: int = 1) -> TFLiteRunner:
    """A runner for `path`; without `preprocessing`, the one embedded in the file."""
    interpreter = _load_interpreter(path, num_threads)
    if preprocessing is None:
        preprocessing = read_embedded(path).preprocessing
    if preprocessing is None:
        raise ArtifactError(
            f"{path}: no preprocessing embedded in this TFLite file; pass the preprocessing "
            "(mean, std, image size) it was trained with"
        )
    return TFLiteRunner(interpreter, preprocessing, path)


def read_embedded(path: Path) -> EmbeddedInfo:
    """Labels and preprocessing from the file's TFLite metadata when it has some, else labels.txt beside it."""
    path = Path(path)
    _load_interpreter(path, 1)
    metadata = read_metadata(path) or {}  # files from other tools may have none: labels.txt then
    labels = metadata.get("labels") or _labels_beside(path)
    preprocessing = metadata.get("preprocessing")
    return EmbeddedInfo(
        labels=list(labels), preprocessing=Preprocessing.from_dict(preprocessing) if preprocessing else None
    )


def _labels_beside(path: Path) -> list[str]:
    labels_file = path.with_name(LABELS_FILE)
    if not labels_file.is_file():
        return []
    return [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]


def _load_interpreter(path: Path, num_threads: int):
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path}: LiteRT cannot load this file as a TFLite model ({first_line(e)})") from None
    return interpreter


def _io_details(flatbuffer: bytes) -> tuple[dict, dict]:
    """Input and output tensor details as the converter wrote them, the source of truth for quantization."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    return interpreter.get_input_details()[0], interpreter.get_output_details()[0]


def _quantization(details: dict) -> dict | None:
    if np.dtype(details["dtype"]) == np.float32:
        return None
    scale, zero_point = details["quantization"]
    return {"dtype": np.dtype(details["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}


def _quantize(x: np.ndarray, details: dict) -> np.ndarray:
    """Float input -> the tensor's integer type with its own scale and zero point (round, then clip).

    With mean = std = 127.5 calibration yields scale 2/255, which puts every pixel exactly halfway between two
    steps, so the rounding rule decides every value. Halves round up (the 1e-3 absorbs float32 error) so that a
    uint8 input is the raw pixel and an int8 input is pixel - 128: what an app feeds the model.
    """
    dtype = np.dtype(details["dtype"])
    if dtype == np.float32:
        return x
    scale, zero_point = details["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.floor(x / scale + zero_point + 0.5 + 1e-3), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, details: dict) -> np.ndarray:
    if np.dtype(details["dtype"]) == np.float32:
        return y.astype(np.float32, copy=True)
    scale, zero_point = details["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _tensorflow():
    from imgpipe.tf_runtime import load_tensorflow

    return load_tensorflow()[0]
