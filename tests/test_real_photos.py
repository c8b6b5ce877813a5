"""Integration on real photos and genuine ImageNet weights from ../shared (IMGPIPE_SHARED overrides the path).

Generated textures cannot show what quantization does to a pretrained backbone: per-tensor int8 collapses
MobileNetV2 with ImageNet weights, and only real weights and photos reveal it. CI has ../shared; elsewhere these
tests are skipped with a reason naming the missing folder.
"""

from __future__ import annotations

import pytest
from conftest import SHARED

from imgpipe.pipeline.build import run_build
from imgpipe.pipeline.config import BackboneSpec, BuildConfig, TrainConfig

FLOWERS = SHARED / "datasets" / "flowers"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (FLOWERS.is_dir() and WEIGHTS.is_file()),
        reason=f"real photos and ImageNet weights not found under {SHARED} (set IMGPIPE_SHARED)",
    ),
]


@pytest.fixture(scope="module")
def flowers_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("flowers")
    config = BuildConfig(out=root / "out", dataset=FLOWERS, cache_dir=root / "cache")
    config.backbone = BackboneSpec("mobilenet_v2", 0.35, 224, str(WEIGHTS))
    config.train = TrainConfig(epochs=30)
    config.variants = {"tflite": ["fp32", "int8"], "onnx": ["fp32", "int8"]}
    config.allow_failures = True
    return run_build(config).manifest, root


def _by_variant(manifest: dict) -> dict:
    return {(a["format"], a["variant"]): a["metrics"] for a in manifest["artifacts"] + manifest["rejected"]}


def test_pretrained_transfer_learning_is_accurate(flowers_build):
    manifest, _ = flowers_build
    assert manifest["reference"]["metrics"]["accuracy"] >= 0.8


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
    from imgpipe.pipeline.data.sampling import spread_evenly

    manifest, root = flowers_build
    pre = Preprocessing.from_dict(manifest["preprocessing"])
    index = scan_dataset(FLOWERS, pre.image_size)
    calibration = spread_evenly(index.split("train").images, 100)
    test = index.split("test")
    per_tensor = tmp_path / "per_tensor.onnx"
    quantize(root / "out" / "bundle" / "onnx" / "model.onnx", per_tensor, calibration, pre, per_channel=False)
    accuracy = float((onnx_exporter.open_runner(per_tensor, pre).predict(test.images).argmax(1) == test.labels).mean())
    per_channel = _by_variant(manifest)[("onnx", "int8")]["accuracy"]
    assert per_channel - accuracy >= 0.2, f"per-channel {per_channel:.2f} vs per-tensor {accuracy:.2f}"
