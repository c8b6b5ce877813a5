"""imgpipe's Core ML executor (exporters/coreml/mil): it runs the bytes a package ships, for every MobileNet and
every compression imgpipe exports, the way a device computes fp16, and it refuses what it cannot run.

Packages come from the real exporter (the session's `exported` cache for the tiny MobileNetV2; one small model per
other architecture here); Keras, coremltools' own pyMIL loader and a NumPy interpreter are the references.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_LABELS, TINY_SIZE, make_pattern_images

from imgpipe.exporters.coreml import export as coreml_export
from imgpipe.exporters.coreml.mil import ProgramError, UnsupportedOpError, open_program
from imgpipe.exporters.coreml.mil.dtypes import unpack_bits
from imgpipe.exporters.coreml.package import open_package
from imgpipe.exporters.registry import FORMATS, open_runner
from imgpipe.pipeline.config import BackboneSpec
from imgpipe.pipeline.core.preprocessing import Preprocessing

pytestmark = pytest.mark.slow
HALF = FORMATS["coreml"].variant("fp16").parity
EXACT = FORMATS["coreml"].variant("fp32").parity
OTHER_ARCHS = {"mobilenet_v1": 0.25, "mobilenet_v3_small": 0.75, "mobilenet_v3_large": 0.75}


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) == b.argmax(1)))


@pytest.fixture(scope="module")
def images(tiny_images):
    return tiny_images[0]


def _ridge_head(features: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Dense kernel and bias whose logits are a ridge regression of centred one-hot targets on the features."""
    mean, scale = features.mean(0), features.std(0) + 1e-6
    standard = (features - mean) / scale
    targets = 3.0 * (np.eye(len(TINY_LABELS))[labels] - 1 / len(TINY_LABELS))
    gram = standard @ standard.T
    weights = standard.T @ np.linalg.solve(gram + 0.1 * np.trace(gram) / len(gram) * np.eye(len(gram)), targets)
    kernel = weights / scale[:, None]
    return [kernel.astype(np.float32), (-mean @ kernel).astype(np.float32)]


@pytest.fixture(scope="module")
def arch_packages(export_context, tiny_images, tmp_path_factory):
    """{arch: (Keras model, fp16 package)} for the architectures other than the tiny MobileNetV2: random backbones
    with BatchNorm statistics set from the images and a least-squares head on their features, so outputs are varied
    but tame (a fitted head gave the same, for a traced training step per architecture)."""
    from imgpipe.pipeline.core.tf_runtime import load_tensorflow
    from imgpipe.pipeline.training.model import build_classifier, feature_extractor

    _, keras = load_tensorflow()
    images, labels = tiny_images
    x = Preprocessing(TINY_SIZE).normalize(images)
    out = tmp_path_factory.mktemp("archs")
    built = {}
    for arch, alpha in OTHER_ARCHS.items():
        keras.utils.set_random_seed(1)
        model = build_classifier(BackboneSpec(arch, alpha, TINY_SIZE, "none"), len(TINY_LABELS))
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.0
        model(x, training=True)
        model.layers[-1].set_weights(_ridge_head(feature_extractor(model).predict(x, verbose=0), labels))
        ctx = replace(export_context, model=model, memo={})
        built[arch] = model, coreml_export(ctx, "fp16", out / f"{arch}.mlpackage").path
    return built


def test_fp32_package_reproduces_keras(exported, images, keras_probs):
    probs = open_program(exported("coreml", "fp32").path).predict(images)
    assert agreement(probs, keras_probs) >= EXACT.min_agreement
    assert np.abs(probs - keras_probs).max() <= EXACT.max_abs_prob_diff


def test_fp16_package_is_within_the_tables_parity_of_keras(exported, images, keras_probs):
    executor = open_program(exported("coreml", "fp16").path)
    probs = executor.predict(images)
    assert executor.compute == "fp16 compute emulated" and executor.program_precision == "fp16"
    assert agreement(probs, keras_probs) >= HALF.min_agreement
    assert np.abs(probs - keras_probs).max() <= HALF.max_abs_prob_diff


@pytest.mark.parametrize("arch", list(OTHER_ARCHS))
def test_every_architecture_runs_like_keras(arch_packages, images, arch):
    """V1 and V3 (hard-swish as add/relu6/mul, squeeze-excite) beside the V2 tests above."""
    model, package = arch_packages[arch]
    keras_probs = model.predict(Preprocessing(TINY_SIZE).normalize(images), verbose=0)
    assert len(set(keras_probs.argmax(1))) > 1, "a constant reference would prove nothing"
    probs = open_program(package).predict(images)
    assert agreement(probs, keras_probs) >= HALF.min_agreement
    assert np.abs(probs - keras_probs).max() <= HALF.max_abs_prob_diff


@pytest.mark.parametrize("variant", ["int8", "palettize", "pruned"])
def test_compressed_package_matches_keras_on_its_own_weights(exported, tiny_model, images, variant):
    """Compression error is the compressor's; the executor must reproduce the compressed weights exactly."""
    from mil_reference import keras_with_package_weights

    package = exported("coreml", variant).path
    reference = keras_with_package_weights(tiny_model, package).predict(
        Preprocessing(TINY_SIZE).normalize(images), verbose=0
    )
    probs = open_program(package, compute="fp32").predict(images)
    assert agreement(probs, reference) >= EXACT.min_agreement
    assert np.abs(probs - reference).max() <= EXACT.max_abs_prob_diff


@pytest.mark.parametrize("variant", ["int8", "palettize", "pruned"])
def test_constexpr_expansion_matches_coremltools(exported, variant):
    """The executor's NumPy decompression agrees bit for bit with coremltools' own value inference."""
    from coremltools.converters.mil.frontend.milproto.load import load
    from coremltools.models import MLModel

    package = exported("coreml", variant).path
    program = open_package(package)[1]
    mlmodel = MLModel(str(package), skip_model_load=True)
    spec = mlmodel.get_spec()
    compared = 0
    for op in load(spec, spec.specificationVersion, mlmodel.weights_dir).functions["main"].operations:
        if op.op_type.startswith("constexpr_"):
            values = op.materialized_val_inference()
            for var, value in zip(op.outputs, values if isinstance(values, tuple) else (values,)):
                assert np.array_equal(program.constants[var.name], np.asarray(value)), var.name
                compared += 1
    assert compared > 0


def test_ios18_compressed_forms_run(tiny_model, images, tmp_path):
    """coremltools 9's iOS18 compression (per-block int4, grouped and channel-scaled palettes, joint pruning)."""
    import coremltools as ct
    from mil_reference import keras_with_package_weights

    opt = ct.optimize.coreml
    size = TINY_SIZE
    image = ct.ImageType(name="image", shape=(1, size, size, 3), scale=1 / 127.5, bias=[-1.0] * 3)
    base = ct.convert(
        tiny_model,
        source="tensorflow",
        convert_to="mlprogram",
        inputs=[image],
        classifier_config=ct.ClassifierConfig(TINY_LABELS),
        minimum_deployment_target=ct.target.iOS18,
        skip_model_load=True,
    )
    configs = {
        "int4_block": opt.OpLinearQuantizerConfig(mode="linear", dtype="int4", granularity="per_block", block_size=16),
        "pal_grouped": opt.OpPalettizerConfig(mode="kmeans", nbits=4, granularity="per_grouped_channel", group_size=8),
        "pal_scaled": opt.OpPalettizerConfig(mode="kmeans", nbits=3, enable_per_channel_scale=True),
    }
    x = Preprocessing(size).normalize(images)
    for name, config in configs.items():
        compress = opt.linear_quantize_weights if name.startswith("int") else opt.palettize_weights
        package = tmp_path / f"{name}.mlpackage"
        compress(base, opt.OptimizationConfig(global_config=config)).save(str(package))
        executor = open_program(package, compute="fp32")
        assert any(t.startswith("constexpr_") for t in executor.op_types), name
        reference = keras_with_package_weights(tiny_model, package).predict(x, verbose=0)
        assert np.abs(executor.predict(images) - reference).max() <= EXACT.max_abs_prob_diff, name


def test_fp16_emulation_rounds_every_tensor_like_a_numpy_reference(exported, images):
    """Emulation differs from fp32 compute, its output is fp16-exact, and a NumPy interpreter rounding after
    every op gives the same probabilities."""
    import mil_reference

    package = exported("coreml", "fp16").path
    emulated = open_program(package).predict(images)
    fp32 = open_program(package, compute="fp32").predict(images)
    program = open_package(package)[1]
    planar = images.transpose(0, 3, 1, 2).astype(np.float32)
    assert np.abs(emulated - fp32).max() > 1e-5
    assert np.array_equal(emulated, emulated.astype(np.float16).astype(np.float32))
    assert np.abs(fp32 - mil_reference.run(program, planar, emulate_fp16=False)).max() < 1e-4
    assert np.abs(emulated - mil_reference.run(program, planar, emulate_fp16=True)).max() <= 2e-3


def test_the_executor_runs_the_bytes_on_disk(exported, images, tmp_path):
    """One classifier weight changed inside weight.bin changes the output: nothing comes from elsewhere."""
    package = Path(shutil.copytree(exported("coreml", "fp32").path, tmp_path / "edited.mlpackage"))
    before = open_program(package).predict(images)
    _, program = open_package(package)
    linear = next(op for op in program.ops if op.type == "linear")
    weight = program.constants[linear.inputs["weight"][0]]
    blob = package / "Data/com.apple.CoreML/weights/weight.bin"
    data = bytearray(blob.read_bytes())
    at = bytes(data).find(weight.astype(np.float32).tobytes()[:64])
    assert at > 0, "the classifier's weights are stored in weight.bin"
    data[at : at + 4] = np.float32(50.0).tobytes()
    blob.write_bytes(bytes(data))
    assert np.abs(open_program(package).predict(images) - before).max() > 1e-3


def test_swapped_labels_drop_the_measured_accuracy(cli_build, tmp_path):
    """Verification reads the labels the package ships: swapping two in the spec is a visible accuracy drop."""
    from imgpipe.exporters.coreml.mil.package import read_package
    from imgpipe.pipeline.commands.evaluate import evaluate_bundle

    bundle = Path(shutil.copytree(cli_build[1] / "bundle", tmp_path / "bundle"))
    package = bundle / "ios" / "TinyPatterns.mlpackage"
    model = read_package(package).model
    block = model.mlProgram.functions["main"].block_specializations[model.mlProgram.functions["main"].opset]
    classify = next(op for op in block.operations if op.type == "classify")
    items = classify.inputs["classes"].arguments[0].value.immediateValue.list.values
    first, last = (items[i].immediateValue.tensor.strings.values for i in (0, -1))  # circle <-> stripes
    first[0], last[0] = last[0], first[0]
    (package / "Data/com.apple.CoreML/model.mlmodel").write_bytes(model.SerializeToString())
    runner = open_runner("coreml", package)
    assert not runner.structural_checks()["labels_match_embedded"]
    result = evaluate_bundle(bundle, cli_build[2])
    by_format = {(a["format"], a["variant"]): a["metrics"] for a in result.artifacts}
    assert by_format[("coreml", "fp16")]["accuracy"] < by_format[("tflite", "fp32")]["accuracy"] - 0.1


def test_an_op_it_cannot_run_is_named_and_the_artifact_left_unmeasured(exported, tmp_path):
    from imgpipe.exporters.coreml.mil.package import read_package

    package = Path(shutil.copytree(exported("coreml", "fp16").path, tmp_path / "gelu.mlpackage"))
    model = read_package(package).model
    block = model.mlProgram.functions["main"].block_specializations[model.mlProgram.functions["main"].opset]
    next(op for op in block.operations if op.type == "relu6").type = "gelu"
    (package / "Data/com.apple.CoreML/model.mlmodel").write_bytes(model.SerializeToString())
    with pytest.raises(UnsupportedOpError) as info:
        open_program(package)
    assert str(info.value).startswith(f"{package}: cannot run gelu on Linux") and "\n" not in str(info.value)
    runner = open_runner("coreml", package)
    assert not runner.can_predict and "cannot run gelu on Linux" in runner.unavailable_reason
    assert all(runner.structural_checks().values()), "the structure is still checked"


@pytest.mark.parametrize("damage", ["missing", "no_manifest", "garbage_manifest", "garbage_spec", "truncated"])
def test_broken_packages_are_one_line_errors(exported, tmp_path, damage):
    package = tmp_path / "broken.mlpackage"
    if damage != "missing":
        shutil.copytree(exported("coreml", "fp16").path, package)
    weights = package / "Data/com.apple.CoreML/weights/weight.bin"
    if damage == "no_manifest":
        (package / "Manifest.json").unlink()
    elif damage == "garbage_manifest":
        (package / "Manifest.json").write_text("{not json")
    elif damage == "garbage_spec":
        (package / "Data/com.apple.CoreML/model.mlmodel").write_bytes(b"\xff\x00garbage" * 10)
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ProgramError) as info:
        open_program(package)
    assert str(info.value).startswith(str(package)) and "\n" not in str(info.value)


def test_batches_match_single_images(exported, images):
    executor = open_program(exported("coreml", "fp16").path, num_threads=2)
    batched = executor.predict(images[:8])
    single = np.concatenate([executor.predict(images[i : i + 1]) for i in range(8)])
    assert np.abs(batched - single).max() <= 1e-3


@pytest.mark.parametrize("bits,signed", [(1, False), (2, False), (3, False), (4, False), (6, False), (4, True)])
def test_sub_byte_unpacking_matches_coremltools_packing(bits, signed):
    from coremltools.optimize import _utils

    rng = np.random.default_rng(bits)
    low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    values = rng.integers(low, high, 37)
    packed = _utils.pack_elements_into_bits(values.astype(np.int8 if signed else np.uint8), bits)
    assert np.array_equal(unpack_bits(packed, bits, values.size, signed), values)


def test_the_sample_package_matches_the_tflite_goldens():
    import json

    from imgpipe.pipeline.core.preprocessing import load_image

    samples = Path(__file__).resolve().parents[1] / "sample_models"
    golden = json.loads((samples / "golden.json").read_text())
    package = next((samples / "bundle" / "ios").glob("*.mlpackage"))
    runner = open_runner("coreml", package)
    pixels = np.stack([load_image(samples / "images" / name, 96) for name in golden["images"]])
    tflite_top1 = [golden["outputs"]["android/model.tflite"][name][0]["label"] for name in golden["images"]]
    assert [runner.embedded.labels[i] for i in runner.predict(pixels).argmax(1)] == tflite_top1


def test_running_a_package_imports_neither_tensorflow_nor_coremltools_which_still_imports_after():
    """The package's protobuf schema is read from coremltools' folder without running coremltools' __init__ (which
    imports TensorFlow); coremltools imported afterwards in the same process still reads packages."""
    import subprocess
    import sys

    package = next((Path(__file__).resolve().parents[1] / "sample_models" / "bundle" / "ios").glob("*.mlpackage"))
    script = f"""
import sys
import numpy as np
from imgpipe.exporters.registry import open_runner
runner = open_runner("coreml", {str(package)!r})
probs = runner.predict(np.zeros((1, 96, 96, 3), np.uint8))
assert probs.shape == (1, len(runner.embedded.labels)), probs.shape
assert "tensorflow" not in sys.modules and "coremltools" not in sys.modules, "imported"
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
from coremltools.models import MLModel
assert MLModel({str(package)!r}, skip_model_load=True).get_spec().description.input[0].name == "image"
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_unseen_pattern_images_agree_with_tflite_through_the_runners(exported):
    """The runner a build verifies with, on images neither model saw."""
    images, _ = make_pattern_images(10, seed=99)
    coreml = open_runner("coreml", exported("coreml", "fp16").path).predict(images)
    tflite = open_runner("tflite", exported("tflite", "fp32").path).predict(images)
    assert agreement(coreml, tflite) >= HALF.min_agreement


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML itself can run only on macOS")
@pytest.mark.parametrize("variant", ["fp16", "fp32", "palettize"])
def test_core_ml_on_macos_agrees_with_the_executor(exported, images, variant):
    """On a Mac the runner uses Core ML itself; the executor must have measured what Core ML computes."""
    package = exported("coreml", variant).path
    core_ml = open_runner("coreml", package).predict(images)
    executor = open_program(package, compute="fp32" if variant == "fp32" else "auto").predict(images)
    assert agreement(core_ml, executor) >= HALF.min_agreement
    assert np.abs(core_ml - executor).max() <= HALF.max_abs_prob_diff
