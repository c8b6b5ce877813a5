"""End to end through the CLI: the default build a new user runs, the bundle it publishes, and failure safety."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import quick_build_args

from imgpipe.cli import main
from imgpipe.exporters.base import tree_sha256
from imgpipe.synthetic import CLASSES, generate_dataset


@pytest.fixture(scope="session")
def default_build(tmp_path_factory):
    """`imgpipe build` with no dataset: the embedded generated textures, random init, 96 px, all targets."""
    out = tmp_path_factory.mktemp("default-build")
    cache = tmp_path_factory.mktemp("cache") / "bottlenecks"
    code = main(["build", "--out", str(out), "--cache-dir", str(cache)])
    assert code == 0
    return out


def _manifest(out: Path) -> dict:
    return json.loads((out / "bundle" / "manifest.json").read_text())


def test_default_build_publishes_all_three_formats_with_labels(default_build):
    bundle = default_build / "bundle"
    assert (bundle / "android" / "model.tflite").is_file()
    assert (bundle / "ios" / "ImageClassifier.mlpackage").is_dir()
    assert (bundle / "onnx" / "model.onnx").is_file()
    for platform in ("android", "ios", "onnx"):
        assert (bundle / platform / "labels.txt").read_text().split() == sorted(CLASSES)
    assert (default_build / "report.md").is_file()
    assert any((default_build / "logs").rglob("events.out.tfevents*")), "TensorBoard logs are written"
    assert not list(default_build.glob(".imgpipe-staging-*")), "no staging folder is left behind"


def test_default_build_genuinely_learns(default_build):
    manifest = _manifest(default_build)
    chance = 1 / len(CLASSES)
    assert manifest["reference"]["metrics"]["accuracy"] >= chance + 0.3
    for artifact in manifest["artifacts"]:
        if artifact["format"] in ("tflite", "onnx"):
            assert artifact["metrics"]["accuracy"] >= chance + 0.3


def test_manifest_checksums_and_sizes_match_the_files(default_build):
    manifest = _manifest(default_build)
    bundle = default_build / "bundle"
    assert {a["format"] for a in manifest["artifacts"]} == {"tflite", "coreml", "onnx"}
    for artifact in manifest["artifacts"]:
        path = bundle / artifact["path"]
        assert tree_sha256(path) == artifact["sha256"]
        assert artifact["bytes"] > 0 and artifact["variant"]


def test_manifest_records_what_a_reader_needs(default_build):
    m = _manifest(default_build)
    assert m["schema_version"] == 1 and m["imgpipe_version"]
    assert m["libraries"]["tensorflow"] and m["libraries"]["coremltools"]
    assert m["labels"] == sorted(CLASSES)
    assert m["preprocessing"]["image_size"] == 96 and m["preprocessing"]["channel_order"] == "RGB"
    assert m["preprocessing"]["mean"] == [127.5] * 3 and m["preprocessing"]["std"] == [127.5] * 3
    assert len(m["dataset"]["digest"]) == 64
    assert set(m["dataset"]["counts"]) == set(CLASSES)
    assert m["config"]["backbone"]["weights"] == "none"
    for a in m["artifacts"]:
        assert {"accuracy", "agreement", "max_abs_prob_diff", "latency_ms_p50"} <= set(a["metrics"])


def test_float_artifacts_agree_with_keras(default_build):
    for a in _manifest(default_build)["artifacts"]:
        if a["format"] in ("tflite", "onnx"):
            assert a["metrics"]["agreement"] == 1.0
            assert a["metrics"]["max_abs_prob_diff"] <= 1e-4
            assert a["metrics"]["latency_ms_p50"] > 0


def test_coreml_accuracy_is_null_with_a_reason_and_structure_checked(default_build):
    coreml = next(a for a in _manifest(default_build)["artifacts"] if a["format"] == "coreml")
    assert coreml["metrics"]["accuracy"] is None
    assert "macOS" in coreml["metrics_unavailable_reason"]
    assert coreml["structural_checks"] and all(coreml["structural_checks"].values())
    report = (default_build / "report.md").read_text()
    assert "macOS" in report


def test_evaluate_runs_every_artifact_on_another_folder(default_build, tmp_path, capsys):
    other = generate_dataset(tmp_path / "other", per_class=8, seed=123)
    capsys.readouterr()
    assert main(["evaluate", str(default_build / "bundle"), "--dataset", str(other), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    by_format = {a["format"]: a for a in result["artifacts"]}
    assert set(by_format) == {"tflite", "coreml", "onnx"}
    assert by_format["tflite"]["metrics"]["accuracy"] == by_format["onnx"]["metrics"]["accuracy"]
    assert by_format["tflite"]["metrics"]["accuracy"] > 1 / len(CLASSES)
    assert by_format["coreml"]["metrics"]["accuracy"] is None


def test_evaluate_rejects_unknown_classes(default_build, tmp_path, capsys):
    data = generate_dataset(tmp_path / "other", per_class=3, seed=5)
    (data / "stripes").rename(data / "zigzag")
    assert main(["evaluate", str(default_build / "bundle"), "--dataset", str(data)]) == 2
    err = capsys.readouterr().err
    assert "zigzag" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_failed_build_leaves_the_previous_bundle_untouched(default_build, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    shutil.copytree(default_build, out)
    before = {p: p.read_bytes() for p in (out / "bundle").rglob("*") if p.is_file()}
    data = generate_dataset(tmp_path / "data", per_class=6)
    import imgpipe.exporters.onnx as onnx_exporter
    from imgpipe.errors import ExportError

    def broken_export(*args, **kwargs):
        raise ExportError("simulated converter failure")

    monkeypatch.setattr(onnx_exporter, "export", broken_export)
    code = main(quick_build_args(data, out, tmp_path / "c", "--targets", "tflite", "onnx"))
    assert code == 2
    assert "simulated converter failure" in capsys.readouterr().err
    after = {p: p.read_bytes() for p in (out / "bundle").rglob("*") if p.is_file()}
    assert after == before
    assert not list(out.glob(".imgpipe-staging-*"))


def test_bad_dataset_is_one_line_error_without_traceback(tmp_path, capsys):
    (tmp_path / "data" / "only_one_class").mkdir(parents=True)
    code = main(["build", "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--weights", "none"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists(), "a failed first build leaves no folder behind"


def test_offline_imagenet_weights_fail_with_a_pointer_to_weights_path(tmp_path, capsys, monkeypatch):
    """Keras' own downloader is kept; offline it raises "URL fetch failure", which must become one clear line."""
    from imgpipe.tf_runtime import load_tensorflow

    load_tensorflow()

    def offline(fname, origin, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("tf_keras.src.utils.data_utils.get_file", offline)
    data = generate_dataset(tmp_path / "data", per_class=3)
    code = main(
        [
            "build",
            "--dataset",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--image-size",
            "96",
            "--alpha",
            "0.35",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "--weights PATH" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "bundle").exists()


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "imgpipe" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    assert "--dataset" in capsys.readouterr().out


def test_preprocessing_contract_from_a_raw_jpeg(default_build, tmp_path):
    """One JPEG file through the Keras, TFLite and ONNX paths, each from the raw file: the same label."""
    from imgpipe.exporters.registry import get_format
    from imgpipe.preprocessing import Preprocessing, load_image
    from imgpipe.tf_runtime import load_tensorflow

    manifest = _manifest(default_build)
    pre = Preprocessing.from_dict(manifest["preprocessing"])
    photo = sorted((generate_dataset(tmp_path / "d", per_class=4, seed=9) / "rings").glob("*.jpg"))[0]
    pixels = load_image(photo, pre.image_size)[None]
    _, keras = load_tensorflow()
    keras_model = keras.models.load_model(default_build / "keras" / "model.keras")
    predictions = {"keras": keras_model.predict(pre.normalize(pixels), verbose=0)}
    for a in manifest["artifacts"]:
        if a["format"] in ("tflite", "onnx"):
            runner = get_format(a["format"]).load().open_runner(default_build / "bundle" / a["path"], pre)
            predictions[a["format"]] = runner.predict(pixels)
    assert set(predictions) == {"keras", "tflite", "onnx"}
    top1 = {name: int(np.argmax(p)) for name, p in predictions.items()}
    assert len(set(top1.values())) == 1, top1
    np.testing.assert_allclose(predictions["tflite"], predictions["keras"], atol=1e-4)
    np.testing.assert_allclose(predictions["onnx"], predictions["keras"], atol=1e-4)
