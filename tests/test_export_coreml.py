"""Core ML export: what can be proven on Linux, where Core ML cannot predict.

Each variant is converted once per module; the checks read the saved packages back from disk, as a user's
`imgpipe verify` would.
"""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_LABELS, TINY_SIZE

from imgpipe.exporters import coreml
from imgpipe.exporters.coreml import package
from imgpipe.exporters.registry import FORMATS
from imgpipe.pipeline.config import ExportOptions
from imgpipe.pipeline.core.errors import ArtifactError, ConfigError, ExportError
from imgpipe.pipeline.core.preprocessing import Preprocessing

pytestmark = pytest.mark.slow
VARIANTS = FORMATS["coreml"].variant_names
off_macos = pytest.mark.skipif(platform.system() == "Darwin", reason="checks the Linux/Windows behaviour")


@pytest.fixture(scope="module")
def artifacts(exported):
    return {v: exported("coreml", v) for v in VARIANTS}


@pytest.fixture(scope="module")
def runners(artifacts):
    return {v: coreml.open_runner(a.path) for v, a in artifacts.items()}


def _mlmodel(path: Path):
    import coremltools as ct

    return ct.models.MLModel(str(path), skip_model_load=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_all_structural_checks_pass(runners, variant):
    checks = runners[variant].structural_checks()
    assert checks and all(checks.values()), {k: v for k, v in checks.items() if not v}


def test_checks_catch_a_different_normalization(artifacts):
    """The checks must be able to fail: a caller expecting [0, 1] inputs does not match this package."""
    runner = coreml.open_runner(artifacts["fp16"].path, Preprocessing(TINY_SIZE, (0.0,) * 3, (255.0,) * 3))
    failed = {k for k, ok in runner.structural_checks().items() if not ok}
    assert failed == {"preprocessing_scale_matches", "preprocessing_bias_matches", "embedded_preprocessing_matches"}


def test_labels_in_order(artifacts, runners):
    embedded = coreml.read_embedded(artifacts["fp16"].path)
    assert embedded.labels == TINY_LABELS
    assert embedded.preprocessing == Preprocessing(TINY_SIZE)
    assert package.classify_labels(runners["fp16"]._program) == TINY_LABELS


def test_scale_and_bias(runners):
    scale, bias = package.input_scale_bias(runners["fp16"]._program)
    assert scale == pytest.approx(1 / 127.5)
    assert bias == pytest.approx([-1.0, -1.0, -1.0])


def test_input_and_output_names(artifacts):
    desc = _mlmodel(artifacts["fp16"].path).get_spec().description
    assert [i.name for i in desc.input] == ["image"]
    assert (desc.input[0].type.imageType.width, desc.input[0].type.imageType.height) == (TINY_SIZE, TINY_SIZE)
    assert {o.name for o in desc.output} == {"classLabel", "classLabelProbs"}
    assert (desc.predictedFeatureName, desc.predictedProbabilitiesName) == ("classLabel", "classLabelProbs")


def test_metadata_for_xcode(artifacts, export_context):
    meta = _mlmodel(artifacts["int8"].path).get_spec().description.metadata
    assert (meta.shortDescription, meta.author, meta.license, meta.versionString) == (
        "test model",
        "imgpipe",
        "Apache-2.0",
        "0.0.1",
    )
    user = meta.userDefined
    assert json.loads(user["labels"]) == TINY_LABELS
    assert json.loads(user["preprocessing"]) == export_context.preprocessing.to_dict()
    assert user["variant"] == "int8" and user["imgpipe_version"]
    assert user["com.apple.coreml.model.preview.type"] == "imageClassifier"


def test_details_say_precision_target_and_compression(artifacts):
    details = {v: a.details for v, a in artifacts.items()}
    assert details["fp32"]["compute_precision"] == "fp32" and details["fp16"]["compute_precision"] == "fp16"
    assert details["fp16"]["minimum_deployment_target"] == "iOS15" and details["fp16"]["compression"] is None
    # the compression ops only exist from iOS 16 on, so coremltools raises the target
    assert {details[v]["minimum_deployment_target"] for v in ("int8", "palettize", "pruned")} == {"iOS16"}
    assert details["palettize"]["compression"]["nbits"] == 6
    assert details["pruned"]["compression"]["target_sparsity"] == 0.5


def test_sizes(artifacts):
    size = {v: a.bytes for v, a in artifacts.items()}
    assert size["fp16"] < size["fp32"]
    assert size["int8"] < size["fp16"]
    assert size["palettize"] <= 0.3 * size["fp32"], size
    assert size["pruned"] < size["fp16"]


def test_head_weights_are_the_trained_ones(artifacts, tiny_model):
    """The only numerical check Linux allows: the Dense layer in the package is Keras' Dense layer."""
    kernel, bias = tiny_model.get_layer("probabilities").get_weights()
    got_kernel, got_bias = package.final_dense_weights(artifacts["fp32"].path)
    np.testing.assert_array_equal(got_kernel, kernel)
    np.testing.assert_array_equal(got_bias, bias)
    got_kernel, got_bias = package.final_dense_weights(artifacts["fp16"].path)
    np.testing.assert_allclose(got_kernel, kernel, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(got_bias, bias, rtol=1e-3, atol=1e-6)
    # int8 is per output channel (class): off by at most half a step of that class's largest weight / 127
    got_kernel, _ = package.final_dense_weights(artifacts["int8"].path)
    step = np.abs(kernel).max(axis=0) / 127
    assert (np.abs(got_kernel - kernel) <= 0.51 * step + 1e-4).all()
    got_kernel, _ = package.final_dense_weights(artifacts["palettize"].path)
    assert len(np.unique(got_kernel)) <= 2**6
    assert np.corrcoef(got_kernel.ravel(), kernel.ravel())[0, 1] > 0.99


def test_head_weight_difference_is_recorded_for_the_manifest(artifacts):
    details = {v: a.details["head_weights_max_abs_diff"] for v, a in artifacts.items()}
    assert details["fp32"] == 0.0
    assert 0.0 < details["fp16"] < 1e-2
    assert details["fp16"] <= details["int8"]


def test_pruned_weights_are_sparse(artifacts, tiny_model):
    kernel, _ = tiny_model.get_layer("probabilities").get_weights()
    got_kernel, _ = package.final_dense_weights(artifacts["pruned"].path)
    assert (got_kernel == 0).mean() == pytest.approx(0.5, abs=0.01)
    kept = got_kernel != 0
    # magnitude pruning keeps the largest weights, unchanged up to fp16
    assert np.abs(kernel[~kept]).max() <= np.abs(kernel[kept]).min() + 1e-3
    np.testing.assert_allclose(got_kernel[kept], kernel[kept], rtol=1e-3, atol=1e-4)
    assert "constexpr_sparse_to_dense" in package.open_package(artifacts["pruned"].path)[1].op_types


@off_macos
def test_runner_predicts_with_the_executor_off_macos(runners, tiny_images):
    runner = runners["fp16"]
    assert runner.can_predict and runner.runtime == "imgpipe-mil (fp16 compute emulated)"
    assert runner.latency_unavailable_reason and "Apple device" in runner.latency_unavailable_reason
    probs = runner.predict(tiny_images[0][:4])
    assert probs.shape == (4, len(TINY_LABELS)) and np.allclose(probs.sum(1), 1, atol=1e-2)


def test_unknown_variant_is_a_config_error(export_context, tmp_path):
    with pytest.raises(ConfigError, match="valid coreml variants: fp16, fp32, int8, palettize, pruned"):
        coreml.export(export_context, "int4", tmp_path / "m.mlpackage")
    assert not (tmp_path / "m.mlpackage").exists()


def test_invalid_palette_bits_is_a_config_error(export_context, tmp_path):
    ctx = replace(export_context, options=ExportOptions(palette_bits=5))
    with pytest.raises(ConfigError, match="valid: 4, 6, 8"):
        coreml.export(ctx, "palettize", tmp_path / "m.mlpackage")


def test_model_and_preprocessing_size_mismatch_is_a_config_error(export_context, tmp_path):
    ctx = replace(export_context, preprocessing=Preprocessing(128))
    with pytest.raises(ConfigError, match="128 does not match the model's 96x96 input"):
        coreml.export(ctx, "fp16", tmp_path / "m.mlpackage")


def test_converter_failure_is_one_line_export_error(export_context, tmp_path):
    class NotAModel:
        input_shape = (None, TINY_SIZE, TINY_SIZE, 3)

    with pytest.raises(ExportError, match="^Core ML fp16 conversion failed: [^\n]+$"):
        coreml.export(replace(export_context, model=NotAModel()), "fp16", tmp_path / "m.mlpackage")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("make", ["missing", "garbage_file", "empty_dir"])
def test_unloadable_path_is_an_artifact_error(tmp_path, make):
    path = tmp_path / "broken.mlpackage"
    if make == "garbage_file":
        path.write_bytes(b"not a model")
    elif make == "empty_dir":
        path.mkdir()
    with pytest.raises(ArtifactError, match="broken.mlpackage"):
        coreml.open_runner(path)
    with pytest.raises(ArtifactError, match="broken.mlpackage"):
        coreml.read_embedded(path)


def test_truncated_weights_are_an_artifact_error(artifacts, tmp_path):
    path = tmp_path / "truncated.mlpackage"
    shutil.copytree(artifacts["fp16"].path, path)
    weights = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="truncated.mlpackage"):
        coreml.open_runner(path).structural_checks()
