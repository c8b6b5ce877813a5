"""onnxruntime static quantization of an fp32 ONNX graph: QDQ, per-channel int8 weights, uint8 activations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...pipeline.core.errors import ExportError, first_line
from ...pipeline.core.preprocessing import INPUT_NAME, Preprocessing
from ..base import ExportContext

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


def quantize_in_workdir(model, images: np.ndarray, ctx: ExportContext):
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


def drop_unused_opsets(model) -> None:
    """quant_pre_process declares every domain ORT knows (com.microsoft.nchwc, org.pytorch.aten ...); a reader of
    the file would take them for requirements."""
    used = {node.domain for node in model.graph.node} | {""}
    kept = [opset for opset in model.opset_import if opset.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
