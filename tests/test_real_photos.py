"""Integration on real photos and genuine ImageNet weights from ../shared (IMGPIPE_SHARED overrides the path).

Generated textures cannot show what quantization does to a pretrained backbone: per-tensor int8 collapses
MobileNetV2 with ImageNet weights, and only real weights and photos reveal it. CI has ../shared; elsewhere these
tests are skipped with a reason naming the missing folder.
"""

from __future__ import annotations

import pytest
from conftest import FLOWERS, needs_shared

pytestmark = [pytest.mark.slow, needs_shared]


def _by_variant(manifest: dict) -> dict:
    return {(a["format"], a["variant"]): a["metrics"] for a in manifest["artifacts"] + manifest["rejected"]}


def test_pretrained_transfer_learning_is_accurate(flowers_build):
    manifest, _ = flowers_build
    assert manifest["reference"]["metrics"]["accuracy"] >= 0.8


def test_core_ml_is_measured_on_linux_and_within_parity(flowers_build):
    """The iOS artifact gets accuracy like the others, run by imgpipe's executor from the package's bytes."""
    from imgpipe.exporters.registry import FORMATS

    manifest, _ = flowers_build
    coreml = next(a for a in manifest["artifacts"] if a["format"] == "coreml")
    parity = FORMATS["coreml"].variant("fp16").parity
    assert coreml["runtime"] == "imgpipe-mil (fp16 compute emulated)"
    assert coreml["metrics"]["agreement"] >= parity.min_agreement
    assert coreml["metrics"]["max_abs_prob_diff"] <= parity.max_abs_prob_diff
    assert coreml["metrics"]["latency_ms_p50"] is None and "Apple device" in coreml["latency_unavailable_reason"]


def test_chosen_int8_settings_keep_accuracy(flowers_build):
    metrics = _by_variant(flowers_build[0])
    for fmt in ("tflite", "onnx"):
        assert metrics[(fmt, "int8")]["accuracy_drop"] <= 0.04, fmt
        assert metrics[(fmt, "int8")]["agreement"] >= 0.9, fmt


def test_per_tensor_onnx_quantization_would_have_collapsed(flowers_build, tmp_path):
    """Why the exporter uses per-channel scales: the same calibration with one scale per tensor loses the model."""
    from imgpipe.exporters import onnx as onnx_exporter
    from imgpipe.exporters.onnx.quantize import quantize
    from imgpipe.pipeline.core.preprocessing import Preprocessing
    from imgpipe.pipeline.data.dataset import scan_dataset
    from imgpipe.pipeline.verify.verify import predict_batched

    manifest, root = flowers_build
    pre = Preprocessing.from_dict(manifest["preprocessing"])
    index = scan_dataset(FLOWERS)
    calibration = index.photos("train", pre.image_size).sample(100)
    test = index.photos("test", pre.image_size, tmp_path)
    per_tensor = tmp_path / "per_tensor.onnx"
    quantize(root / "out" / "bundle" / "onnx" / "model.onnx", per_tensor, calibration, pre, per_channel=False)
    probs = predict_batched(onnx_exporter.open_runner(per_tensor, pre), test)
    accuracy = float((probs.argmax(1) == test.labels).mean())
    per_channel = _by_variant(manifest)[("onnx", "int8")]["accuracy"]
    assert per_channel - accuracy >= 0.2, f"per-channel {per_channel:.2f} vs per-tensor {accuracy:.2f}"
