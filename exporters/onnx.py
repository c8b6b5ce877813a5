"""ONNX artifacts: tf2onnx float graphs and onnxruntime static-QDQ int8 graphs, run with onnxruntime.

The graph keeps the Keras interface (input `image`, NHWC float32 normalized, softmax output) so every runtime is
fed the same numbers. Labels and preprocessing travel inside the file as `metadata_props`, because an .onnx file
has no other place an app or `imgpipe predict` could find them.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

import imgpipe
from imgpipe.errors import ArtifactError, ConfigError, ExportError, first_line
from imgpipe.exporters.base import Artifact, EmbeddedInfo, ExportContext, Runner
from imgpipe.model import INPUT_NAME
from imgpipe.preprocessing import Preprocessing

VARIANTS = ("fp32", "int8")
OPSET = 17
CALIBRATION_BATCH = 16  # images per calibration run: fewer session runs, yet only ~10 MB of floats at 224 px

# Per-tensor weight scales collapse MobileNetV2 with ImageNet weights (accuracy .31 vs .80 per-channel): in its
# depthwise layers the largest channel's weights reach 28x the median channel's, so one shared step leaves most
# channels a handful of levels. u8s8 (uint8 activations, int8 weights) ran faster than s8s8 on x86 (0.9 vs 1.2 ms,
# TOOLCHAIN.md). A quantized Softmax would hand apps probabilities in steps of 1/255 that do not sum to 1; kept in
# float it costs nothing measurable.
QUANTIZATION = {
    "format": "QDQ",
    "per_channel": True,
    "activation_type": "uint8",
    "weight_type": "int8",
    "calibration_method": "MinMax",
    "float_ops": ["Softmax"],
}


def export(ctx: ExportContext, variant: str, dest: Path) -> Artifact:
    """Write the `variant` of ctx.model to exactly `dest`; intermediates stay in ctx.workdir."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown ONNX variant '{variant}'; valid variants: {', '.join(VARIANTS)}")
    images = ctx.calibration_set("ONNX int8") if variant == "int8" else None  # fail before the slow conversion
    model = convert_keras(ctx.model, ctx.preprocessing.image_size)
    details = {"opset": OPSET, "converter": f"tf2onnx {version('tf2onnx')}"}
    if variant == "int8":
        model = _quantize_in_workdir(model, images, ctx)
        details["quantization"] = {
            **QUANTIZATION,
            "calibration_images": len(images),
            "quantizer": f"onnxruntime {version('onnxruntime')}",
        }
    _drop_unused_opsets(model)
    shorten_names(model)
    embed_metadata(model, ctx, variant)
    _check(model)
    save_atomic(model, dest)
    return Artifact("onnx", variant, dest, list(ctx.labels), ctx.preprocessing, source=ctx.source, details=details)


def convert_keras(keras_model, image_size: int):
    """tf2onnx graph with a dynamic batch so apps can batch and calibration can feed several images per run."""
    import tf2onnx

    from imgpipe.tf_runtime import load_tensorflow

    tf, _ = load_tensorflow()
    signature = [tf.TensorSpec((None, image_size, image_size, 3), tf.float32, name=INPUT_NAME)]
    try:
        model, _ = tf2onnx.convert.from_keras(keras_model, input_signature=signature, opset=OPSET)
    except Exception as e:  # tf2onnx raises anything from ValueError to its own conversion errors
        raise ExportError(f"tf2onnx could not convert the model to ONNX opset {OPSET}: {first_line(e)}") from e
    return model


def quantize(
    fp32_path: Path, dest: Path, images: np.ndarray, preprocessing: Preprocessing, per_channel: bool = True
) -> None:
    """Static QDQ u8s8 quantization of an fp32 .onnx file, calibrated on uint8 `images`.

    `per_channel` is a parameter only so the accuracy cost of per-tensor scales can be measured; exports always
    use QUANTIZATION.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dest.with_name(dest.stem + ".prepared.onnx")
    try:
        # ORT's recommended first step: it infers every tensor's shape and type, which the quantizer needs to
        # quantize them all, and fuses ops that would otherwise each get their own quantize/dequantize pair.
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(dest),
            _CalibrationReader(images, preprocessing),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=_nodes_of_type(prepared, QUANTIZATION["float_ops"]),
        )
    except Exception as e:  # onnxruntime raises RuntimeError, ValueError or its pybind errors
        raise ExportError(f"onnxruntime could not quantize {fp32_path.name}: {first_line(e)}") from e


def _nodes_of_type(path: Path, op_types: list[str]) -> list[str]:
    """ORT can exclude nodes only by name, and the names are tf2onnx's."""
    import onnx

    return [node.name for node in onnx.load_model(str(path)).graph.node if node.op_type in op_types]


def _quantize_in_workdir(model, images: np.ndarray, ctx: ExportContext):
    """ORT's quantizer works on files, so the fp32 graph goes through ctx.workdir."""
    import onnx

    ctx.workdir.mkdir(parents=True, exist_ok=True)
    fp32_path, int8_path = (ctx.workdir / f"onnx_{ctx.source}_{v}.onnx" for v in ("fp32", "int8"))
    onnx.save_model(model, str(fp32_path))
    quantize(fp32_path, int8_path, images, ctx.preprocessing)
    return onnx.load_model(str(int8_path))


class _CalibrationReader:
    """Feeds normalized batches: the quantizer must see the same input range the runner will feed."""

    def __init__(self, images: np.ndarray, preprocessing: Preprocessing):
        self._batches = (
            preprocessing.normalize(images[i : i + CALIBRATION_BATCH]) for i in range(0, len(images), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def _drop_unused_opsets(model) -> None:
    """quant_pre_process declares every domain ORT knows (com.microsoft.nchwc, org.pytorch.aten ...); a reader of
    the file would take them for requirements."""
    used = {node.domain for node in model.graph.node} | {""}
    kept = [opset for opset in model.opset_import if opset.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def shorten_names(model) -> None:
    """Replace the converters' scope paths ("mobilenet_v2_classifier/block_10_project/Conv2D_weights_fused_bn_
    DequantizeLinear" ...) with short names. They are debug strings only, yet make up over 10% of an int8 file;
    the graph's input and output keep their names, which are the model's interface."""
    graph = model.graph
    interface = {v.name for v in graph.input} | {v.name for v in graph.output}
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in interface:
            return name
        return renamed.setdefault(name, f"t{len(renamed)}")

    for init in graph.initializer:
        init.name = short(init.name)
    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    for info in graph.value_info:
        info.name = short(info.name)


def embed_metadata(model, ctx: ExportContext, variant: str) -> None:
    """Store labels, preprocessing and provenance in the file, replacing whatever the converters left there."""
    import onnx

    meta = ctx.metadata
    props = {
        "labels": json.dumps(list(ctx.labels)),
        "preprocessing": json.dumps(ctx.preprocessing.to_dict()),
        "producer": f"imgpipe {imgpipe.__version__}",
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
    model.producer_version = imgpipe.__version__
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


def save_atomic(model, dest: Path) -> None:
    """Readers of `dest` see the old file or the complete new one, never a half-written model."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class OnnxRunner(Runner):
    """onnxruntime on CPU with a fixed thread count, so latency numbers are comparable across runs."""

    def __init__(self, path: Path, preprocessing: Preprocessing, num_threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises pybind errors (InvalidProtobuf, NoSuchFile, Fail) with no common base
            raise ArtifactError(f"{path}: onnxruntime cannot load it ({first_line(e)}); export it again") from e
        self.preprocessing = preprocessing
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, images: np.ndarray) -> np.ndarray:
        (probs,) = self.session.run(None, {self.input_name: self.preprocessing.normalize(images)})
        return np.asarray(probs, dtype=np.float32)


def open_runner(path: Path, preprocessing: Preprocessing | None = None, num_threads: int = 1) -> OnnxRunner:
    """Runner for an artifact; without `preprocessing`, the one embedded at export is used."""
    if preprocessing is None:
        preprocessing = read_embedded(path).preprocessing
    if preprocessing is None:
        raise ArtifactError(f"{path}: no preprocessing is embedded in this ONNX file; pass it explicitly")
    return OnnxRunner(path, preprocessing, num_threads)


def read_embedded(path: Path) -> EmbeddedInfo:
    """Labels and preprocessing from `metadata_props`; a file imgpipe did not write has no labels and is refused."""
    props = _read_props(Path(path))
    if "labels" not in props:
        raise ArtifactError(f"{path}: no 'labels' in the ONNX metadata_props; it was not exported by imgpipe")
    try:
        labels = [str(label) for label in json.loads(props["labels"])]
        pre = props.get("preprocessing")
        preprocessing = Preprocessing.from_dict(json.loads(pre)) if pre else None
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{path}: unreadable imgpipe metadata in the ONNX file ({first_line(e)})") from e
    return EmbeddedInfo(labels=labels, preprocessing=preprocessing)


def _read_props(path: Path) -> dict[str, str]:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (OSError, DecodeError, ValueError) as e:
        raise ArtifactError(f"{path}: not a loadable ONNX file ({first_line(e)}); export it again") from e
    return {p.key: p.value for p in model.metadata_props}
