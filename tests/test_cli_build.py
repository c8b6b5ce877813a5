"""End to end through the command line: the bundle one real build publishes (shared by every test here), its
manifest and reports, gates, evaluation, and what a failed build leaves behind."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_LABELS, quick_build_args, write_pattern_dataset
from test_reports import parsed_tables

from imgpipe.exporters.registry import FORMATS, open_runner
from imgpipe.pipeline.commands.cli import main
from imgpipe.pipeline.core.files import tree_sha256
from imgpipe.pipeline.core.preprocessing import Preprocessing, load_image

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _manifest(out: Path) -> dict:
    return json.loads((out / "bundle" / "manifest.json").read_text())


# What other libraries print when nobody stops them: absl/TensorFlow C++ lines (I0000 00:00:...), CUDA probing,
# LiteRT's XNNPACK line, the TFLite converter's quantizer lines, coremltools' warnings and tqdm bars, Keras epochs.
THIRD_PARTY = re.compile(
    r"^[IWEF]\d{4} |absl|cuInit|cuda|XNNPACK|fully_quantize|inference_type|scikit-learn version|TensorFlow "
    r"version|_MLModelProxy|passes/s|ops/s|\d+%\||oneDNN|^Epoch \d|tf2onnx|^WARNING|^INFO|^W\d{4}|Traceback",
)


def test_a_default_console_shows_only_imgpipe_lines(cli_build_run):
    """Every stderr line of a real build is one imgpipe logged; stdout is the table and the summary."""
    run = cli_build_run
    assert run.code == 0, run.stderr[-2000:]
    allowed = set()
    for message in run.messages:
        lines = [line.rstrip() for line in message.splitlines()] or [""]
        allowed.update(lines)
        allowed.update(f"{level}: {lines[0]}" for level in ("warning", "error", "critical"))
    foreign = [line for line in run.stderr.splitlines() if line.strip() and line.rstrip() not in allowed]
    assert not foreign, "lines imgpipe did not write reached stderr:\n" + "\n".join(foreign[:20])
    assert not [line for line in run.stderr.splitlines() if THIRD_PARTY.search(line)]
    assert not [line for line in run.stdout.splitlines() if THIRD_PARTY.search(line)]
    assert "\r" not in run.stderr, "no progress bars when stderr is not a terminal"
    for stage in ("scan", "train", "export tflite:int8", "verify coreml:fp16"):
        assert any(line.startswith(f"{stage}: ") and line.endswith(" s") for line in run.stderr.splitlines()), stage
    assert run.stdout.startswith("artifact ")
    for part in ("Built in ", "Drop into your app:", "Android", "iOS", "why: ", "Report: "):
        assert part in run.stdout, part


def test_predict_on_a_core_ml_package_prints_only_its_answer(cli_build_run, tmp_path):
    """Core ML runs on Linux through imgpipe's executor: the table, and none of coremltools' warnings."""
    from conftest import run_cli_process

    package = cli_build_run.out / "bundle" / "ios" / "TinyPatterns.mlpackage"
    photo = sorted(cli_build_run.data.rglob("*.png"))[0]
    code, stdout, stderr, messages = run_cli_process(["predict", str(package), str(photo)], tmp_path, timeout=300)
    assert code == 0 and stdout.startswith(f"model: {package} (coreml)") and str(photo) in stdout
    assert [line for line in stderr.splitlines() if line.strip() and line not in messages] == [], stderr


def test_the_width_read_from_the_weights_file_is_said_on_the_console(cli_build_run):
    assert any(
        line.startswith("backbone: mobilenet_v2 alpha 0.35, 96 px, weights tiny_mobilenet_v2_0.35_no_top.h5")
        and "the width tiny_mobilenet_v2_0.35_no_top.h5 was made for" in line
        for line in cli_build_run.stderr.splitlines()
    )


def test_the_build_publishes_every_format_with_its_labels(cli_build):
    code, out, _ = cli_build
    assert code == 0, "--allow-failures: a rejected artifact does not fail the build"
    bundle = out / "bundle"
    assert (bundle / "android" / "model.tflite").is_file() and (bundle / "android" / "model_int8.tflite").is_file()
    assert (bundle / "ios" / "TinyPatterns.mlpackage").is_dir()
    assert (bundle / "onnx" / "model.onnx").is_file()
    for platform in ("android", "ios", "onnx"):
        assert (bundle / platform / "labels.txt").read_text().split() == TINY_LABELS
    assert any((out / "logs").rglob("events.out.tfevents*")), "TensorBoard logs are written"
    assert not list(out.glob(".imgpipe-staging-*")), "no staging folder is left behind"


def test_the_width_was_read_from_the_weights_file(cli_build):
    manifest = _manifest(cli_build[1])
    assert manifest["config"]["backbone"]["alpha"] == 0.35
    assert manifest["config"]["backbone"]["weights"] == "tiny_mobilenet_v2_0.35_no_top.h5"


def test_the_transfer_learned_model_tells_the_patterns_apart(cli_build):
    manifest = _manifest(cli_build[1])
    assert manifest["reference"]["metrics"]["accuracy"] > 1 / len(TINY_LABELS)
    low, high = manifest["reference"]["metrics"]["accuracy_interval"]
    assert 0 <= low < manifest["reference"]["metrics"]["accuracy"] <= high <= 1
    assert len({row.index(max(row)) for row in manifest["reference"]["metrics"]["confusion_matrix"]}) > 1


def test_the_mistakes_listed_are_the_float_models_wrong_test_photos(cli_build):
    manifest, bundle = _manifest(cli_build[1]), cli_build[1] / "bundle"
    metrics, mistakes = manifest["reference"]["metrics"], manifest["reference"]["mistakes"]
    confusion = metrics["confusion_matrix"]
    assert mistakes["total"] == metrics["samples"] - sum(confusion[i][i] for i in range(len(confusion)))
    assert len(mistakes["listed"]) == mistakes["total"]
    tested = {r["path"]: r["label"] for r in json.loads((bundle / "splits.json").read_text()) if r["split"] == "test"}
    for m in mistakes["listed"]:
        assert tested[m["path"]] == m["label"] != m["predicted"]
    confidences = [m["confidence"] for m in mistakes["listed"]]
    assert confidences == sorted(confidences, reverse=True)


def test_manifest_checksums_and_sizes_match_the_files(cli_build):
    manifest, bundle = _manifest(cli_build[1]), cli_build[1] / "bundle"
    assert {a["format"] for a in manifest["artifacts"]} == set(FORMATS)
    for artifact in manifest["artifacts"]:
        path = bundle / artifact["path"]
        assert tree_sha256(path) == artifact["sha256"]
        assert artifact["bytes"] > 0 and artifact["runtime"]


def test_manifest_records_what_a_reader_needs_and_no_machine_paths(cli_build):
    code, out, data = cli_build
    m = _manifest(out)
    assert m["schema_version"] == 2 and m["imgpipe_version"]
    assert m["libraries"]["tensorflow"] and m["libraries"]["coremltools"]
    assert m["labels"] == TINY_LABELS
    assert m["preprocessing"]["image_size"] == 96 and m["preprocessing"]["channel_order"] == "RGB"
    assert len(m["dataset"]["digest"]) == 64 and set(m["dataset"]["counts"]) == set(TINY_LABELS)
    text = (out / "bundle" / "manifest.json").read_text()
    for private in (str(out), str(data), str(Path.home())):
        assert private not in text, f"the manifest carries the build machine's path {private}"
    for a in m["artifacts"]:
        assert {"accuracy", "agreement", "max_abs_prob_diff", "latency_ms_p50"} <= set(a["metrics"])


def test_float_artifacts_pass_their_parity_check_against_keras(cli_build):
    for a in _manifest(cli_build[1])["artifacts"]:
        parity = FORMATS[a["format"]].variant(a["variant"]).parity
        if a["metrics"]["accuracy"] is None or parity is None:
            continue
        assert a["parity"]["passed"] and a["parity"]["reference"] == "keras:float"
        assert a["metrics"]["agreement"] >= parity.min_agreement
        assert a["metrics"]["max_abs_prob_diff"] <= parity.max_abs_prob_diff


def test_a_gate_from_the_config_file_rejects_onnx_int8_and_says_why(cli_build):
    out = cli_build[1]
    manifest = _manifest(out)
    (rejected,) = manifest["rejected"]
    assert (rejected["format"], rejected["variant"], rejected["path"]) == ("onnx", "int8", None)
    assert not (out / "bundle" / "onnx" / "model_int8.onnx").exists()
    check = next(c for c in rejected["gates"]["checks"] if c["gate"] == "max_bytes")
    assert check["passed"] is False and check["value"] > 1000
    assert all(a["gates"]["passed"] for a in manifest["artifacts"])
    md = (out / "report.md").read_text()
    assert re.search(r"onnx:int8 .*FAIL: [\d,]+ bytes > max_bytes 1,000", md)
    assert "max_bytes 1,000" in (out / "report.html").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(r["format"], r["variant"]) for r in metrics["rejected"]] == [("onnx", "int8")]


def test_report_md_renders_its_tables(cli_build):
    tables = parsed_tables((cli_build[1] / "report.md").read_text())
    assert tables[0][0][0] == "platform", "What to ship comes first"
    artifact_table = next(t for t in tables if t[0][0] == "artifact")
    assert artifact_table[0][0] == "artifact" and len({len(row) for row in artifact_table}) == 1
    assert {row[0] for row in artifact_table[1:]} >= {"tflite:fp32", "onnx:int8", "coreml:fp16"}


def test_html_report_is_self_contained_with_plots(cli_build):
    html = (cli_build[1] / "report.html").read_text()
    assert "http://" not in html and "https://" not in html, "opens offline: nothing loaded from the network"
    assert len(re.findall(r"<img [^>]*src='data:image/png;base64,", html)) >= 4
    for heading in ("Trade-offs", "Float model on the test split", "Training", "Dataset", "Environment"):
        assert heading in html


def test_a_raw_jpeg_gets_the_same_label_from_keras_tflite_and_onnx(cli_build):
    """The preprocessing contract end to end: from the file on disk, through each runtime."""
    from imgpipe.pipeline.core.tf_runtime import load_tensorflow

    out, data = cli_build[1], cli_build[2]
    manifest = _manifest(out)
    pre = Preprocessing.from_dict(manifest["preprocessing"])
    photos = sorted(data.rglob("*.jpg"))[:6]
    pixels = np.stack([load_image(p, pre.image_size) for p in photos])
    _, keras = load_tensorflow()
    keras_probs = keras.models.load_model(out / "keras" / "model.keras").predict(pre.normalize(pixels), verbose=0)
    for a in manifest["artifacts"]:
        if a["variant"] == "fp32":
            probs = open_runner(a["format"], out / "bundle" / a["path"], pre).predict(pixels)
            np.testing.assert_array_equal(probs.argmax(1), keras_probs.argmax(1))
            assert np.abs(probs - keras_probs).max() <= FORMATS[a["format"]].variant("fp32").parity.max_abs_prob_diff


def test_evaluate_runs_every_artifact_on_another_folder(cli_build, tmp_path, capsys):
    other = write_pattern_dataset(tmp_path / "other", n_per_class=4, seed=123)
    capsys.readouterr()
    assert main(["evaluate", str(cli_build[1] / "bundle"), "--dataset", str(other), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    by_artifact = {(a["format"], a["variant"]): a for a in result["artifacts"]}
    assert set(by_artifact) == {("tflite", "fp32"), ("tflite", "int8"), ("coreml", "fp16"), ("onnx", "fp32")}
    assert (
        by_artifact[("tflite", "fp32")]["metrics"]["accuracy"] == by_artifact[("onnx", "fp32")]["metrics"]["accuracy"]
    )
    assert result["reference"] == "tflite:fp32"
    assert result["dataset"]["counts"] == {label: 4 for label in TINY_LABELS}
    wrong = result["mistakes"]
    tested = 4 * len(TINY_LABELS)
    assert wrong["total"] == round((1 - by_artifact[("tflite", "fp32")]["metrics"]["accuracy"]) * tested)
    assert len(wrong["listed"]) == wrong["total"]
    for m in wrong["listed"]:
        assert (other / m["path"]).parent.name == m["label"] != m["predicted"]


def test_evaluate_prints_the_reference_artifacts_most_confident_mistakes(capsys):
    from imgpipe.pipeline.commands.evaluate import Evaluation, print_evaluation

    listed = [{"path": "cat/a.jpg", "label": "cat", "predicted": "dog", "confidence": 0.97}]
    metrics = {"accuracy": 0.9, "accuracy_interval": [0.6, 0.98], "samples": 10}
    reference = {"format": "tflite", "variant": "fp32", "source": "float", "metrics": metrics}
    print_evaluation(Evaluation({}, "tflite:fp32", [reference], {"total": 1, "listed": listed}), as_json=False)
    out = capsys.readouterr().out.splitlines()
    assert "tflite:fp32: Accuracy 90.0% on 10 photos; 95% interval 60.0% to 98.0% (Wilson)" in "\n".join(out)
    at = out.index("Photos tflite:fp32 got wrong: all of 1, most confident first (--json lists them all):")
    assert out[at + 1].split() == ["photo", "class", "predicted", "confidence"]
    assert out[at + 3].split() == ["cat/a.jpg", "cat", "dog", "97.0%"]
    print_evaluation(Evaluation({}, "tflite:fp32", [reference], {"total": 0, "listed": []}), as_json=False)
    assert "got wrong" not in capsys.readouterr().out


def test_evaluate_rejects_unknown_classes(cli_build, tmp_path, capsys):
    data = write_pattern_dataset(tmp_path / "other", n_per_class=2, seed=5)
    (data / "stripes").rename(data / "zigzag")
    assert main(["evaluate", str(cli_build[1] / "bundle"), "--dataset", str(data)]) == 2
    err = capsys.readouterr().err
    assert "zigzag" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_failed_build_leaves_the_previous_bundle_untouched(cli_build, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    shutil.copytree(cli_build[1], out)
    before = {p: p.read_bytes() for p in (out / "bundle").rglob("*") if p.is_file()}
    import imgpipe.exporters.onnx as onnx_exporter
    from imgpipe.pipeline.core.errors import ExportError

    def broken_export(*args, **kwargs):
        raise ExportError("simulated converter failure")

    monkeypatch.setattr(onnx_exporter, "export", broken_export)
    data = write_pattern_dataset(tmp_path / "data", n_per_class=3, seed=1)
    code = main(quick_build_args(data, out, tmp_path / "c", "--targets", "tflite", "onnx"))
    assert code == 2
    assert "simulated converter failure" in capsys.readouterr().err
    after = {p: p.read_bytes() for p in (out / "bundle").rglob("*") if p.is_file()}
    assert after == before
    assert not list(out.glob(".imgpipe-staging-*"))


def test_a_gate_failure_exits_3_unless_failures_are_allowed(cli_build, monkeypatch, capsys):
    """The exit code is decided from the build's result: the shared build's rejection, without --allow-failures."""
    import imgpipe.pipeline.api as api
    from imgpipe.pipeline.build import BuildResult, _result

    manifest = _manifest(cli_build[1])
    manifest["config"]["allow_failures"] = False
    entries = manifest["artifacts"] + manifest["rejected"]
    result = BuildResult(cli_build[1], manifest, [_result(e, cli_build[1] / "bundle") for e in entries])
    monkeypatch.setattr(api, "build", lambda **_: result)
    assert main(["build", "--dataset", "x"]) == 3
    assert "failed a release gate" in capsys.readouterr().err


def test_build_json_is_the_only_thing_on_stdout(cli_build, monkeypatch, capsys):
    import imgpipe.pipeline.api as api
    from imgpipe.pipeline.build import BuildResult, _result

    manifest = _manifest(cli_build[1])
    entries = manifest["artifacts"] + manifest["rejected"]
    result = BuildResult(cli_build[1], manifest, [_result(e, cli_build[1] / "bundle") for e in entries], seconds=42.0)
    monkeypatch.setattr(api, "build", lambda **_: result)
    capsys.readouterr()
    assert main(["build", "--dataset", "x", "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["seconds"] == 42.0 and data["recommended"]["android"]["path"].startswith("android/")
    assert {a["format"] for a in data["artifacts"]} == set(FORMATS)
    assert "Drop into your app:" in captured.err, "the human summary still reaches the terminal, on stderr"


def test_bad_dataset_is_one_line_error_without_traceback(tmp_path, capsys):
    (tmp_path / "data" / "only_one_class").mkdir(parents=True)
    code = main(["build", "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--weights", "none"])
    err = capsys.readouterr().err
    assert code == 2
    errors = [line for line in err.strip().splitlines() if line.startswith("imgpipe: error:")]
    assert len(errors) == 1 and err.strip().endswith(errors[0]) and "Traceback" not in err
    assert not (tmp_path / "out").exists(), "a failed first build leaves no folder behind"


def test_offline_imagenet_weights_fail_with_a_pointer_to_weights_path(tmp_path, capsys, monkeypatch):
    """Keras' own downloader is kept; offline it raises "URL fetch failure", which must become one clear line."""
    from imgpipe.pipeline.core.tf_runtime import load_tensorflow

    load_tensorflow()

    def offline(fname, origin, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("tf_keras.src.utils.data_utils.get_file", offline)
    data = write_pattern_dataset(tmp_path / "data", n_per_class=3, seed=2)
    args = ["build", "--dataset", str(data), "--out", str(tmp_path / "out"), "--image-size", "96", "--alpha", "0.35"]
    code = main([*args, "--cache-dir", str(tmp_path / "c")])
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


def test_calibration_is_in_the_manifest_and_both_reports(cli_build):
    out = cli_build[1]
    manifest = _manifest(out)
    calibration = manifest["calibration"]
    assert calibration["test_ece"] == manifest["reference"]["metrics"]["ece"]
    assert sum(b["count"] for b in calibration["reliability"]) == manifest["reference"]["metrics"]["samples"]
    assert calibration["temperature"] == 1.0 or "lowers the validation log-loss" in calibration["why"]
    assert all(a["metrics"]["ece"] is not None for a in manifest["artifacts"] if a["metrics"]["accuracy"] is not None)
    assert "## Calibration" in (out / "report.md").read_text()
    assert "Reliability diagram" in (out / "report.html").read_text()
