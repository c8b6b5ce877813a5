"""Release gates (resolution, evaluation, enforcement in a build) and the reports a build leaves."""

from __future__ import annotations

import json
import re

import pytest
from conftest import quick_build_args

from imgpipe.cli import main
from imgpipe.config import BuildConfig
from imgpipe.config_file import apply_config_file
from imgpipe.errors import ConfigError
from imgpipe.gates import GATE_FAILURE_EXIT_CODE, GateLimits, GatePolicy, evaluate_gates
from imgpipe.plots import pareto_front
from imgpipe.synthetic import generate_dataset


def test_limits_resolve_from_general_to_specific_and_flags_win():
    policy = GatePolicy(
        GateLimits(max_accuracy_drop=0.05),
        {"tflite": {"max_bytes": 3_000_000}, "tflite:int8": {"max_accuracy_drop": 0.01}},
        command_line={"max_latency_ms": 5.0},
    )
    int8 = policy.limits_for("tflite", "int8")
    assert (int8.max_accuracy_drop, int8.max_bytes, int8.max_latency_ms) == (0.01, 3_000_000, 5.0)
    fp32 = policy.limits_for("tflite", "fp32")
    assert (fp32.max_accuracy_drop, fp32.max_bytes) == (0.05, 3_000_000)
    onnx = policy.limits_for("onnx", "int8")
    assert (onnx.max_accuracy_drop, onnx.max_bytes) == (0.05, None)


def test_gate_checks_report_limit_and_measured_value():
    result = evaluate_gates(
        GateLimits(max_accuracy_drop=0.01, max_bytes=1000),
        {"accuracy_drop": 0.02, "accuracy": 0.9, "bytes": 900, "latency_ms_p50": 1.0},
    )
    assert not result.passed
    assert [(c["gate"], c["value"], c["limit"]) for c in result.failures] == [("max_accuracy_drop", 0.02, 0.01)]


def test_unmeasured_values_do_not_fail_but_are_marked():
    result = evaluate_gates(GateLimits(max_accuracy_drop=0.01), {"accuracy_drop": None, "bytes": 5})
    assert result.passed and result.checks[0]["passed"] is None


def test_failed_structural_checks_fail_the_gate():
    assert not evaluate_gates(GateLimits(), {"bytes": 5}, structure_ok=False).passed


def test_config_file_gates_and_typos(tmp_path):
    path = tmp_path / "imgpipe.toml"
    data = {"gates": {"max_accuracy_drop": 0.02, "tflite:int8": {"max_bytes": 100}}, "train": {"epochs": 3}}
    config = apply_config_file(BuildConfig(out=tmp_path), data, path)
    assert config.gates.limits_for("tflite", "int8").max_bytes == 100
    assert config.gates.limits_for("onnx", "fp32").max_accuracy_drop == 0.02
    assert config.train.epochs == 3
    with pytest.raises(ConfigError, match="max_byte"):
        apply_config_file(BuildConfig(out=tmp_path), {"gates": {"max_byte": 1}}, path)
    with pytest.raises(ConfigError, match="epoch"):
        apply_config_file(BuildConfig(out=tmp_path), {"train": {"epoch": 1}}, path)


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 80.0), (2.0, 90.0), (3.0, 85.0), (0.5, 70.0), (2.0, 89.0)]
    assert pareto_front(points) == [3, 0, 1]


@pytest.fixture(scope="module")
def gated_build(tmp_path_factory):
    """A build whose max_bytes is below the int8 TFLite size: nothing of the TFLite target may be published."""
    root = tmp_path_factory.mktemp("gated")
    data = generate_dataset(root / "data", per_class=8)
    code = main(
        quick_build_args(
            data, root / "out", root / "cache", "--variants", "tflite:fp32,int8", "onnx:fp32", "--max-bytes", "200000"
        )
    )
    return code, root / "out"


def test_tight_gate_publishes_nothing_of_that_target_and_exits_with_the_gate_code(gated_build):
    code, out = gated_build
    assert code == GATE_FAILURE_EXIT_CODE
    assert not (out / "bundle" / "android").exists()
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    rejected = {(r["format"], r["variant"]): r for r in manifest["rejected"]}
    assert {("tflite", "fp32"), ("tflite", "int8")} <= set(rejected)
    failure = rejected[("tflite", "int8")]["gates"]["checks"]
    assert any(c["gate"] == "max_bytes" and c["passed"] is False and c["value"] > 200000 for c in failure)
    assert rejected[("tflite", "int8")]["path"] is None
    assert all(a["path"] and a["gates"]["passed"] for a in manifest["artifacts"])


def test_reports_explain_the_gate_failure(gated_build):
    _, out = gated_build
    md = (out / "report.md").read_text()
    assert re.search(r"tflite:int8 .*FAIL: [\d,]+ bytes > max_bytes 200,000", md)
    html = (out / "report.html").read_text()
    assert "max_bytes 200,000" in html
    metrics = json.loads((out / "metrics.json").read_text())
    assert {r["variant"] for r in metrics["rejected"] if r["format"] == "tflite"} == {"fp32", "int8"}


def test_html_report_is_self_contained_with_plots(gated_build):
    _, out = gated_build
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html, "opens offline: nothing loaded from the network"
    assert len(re.findall(r"<img [^>]*src='data:image/png;base64,", html)) >= 4
    for heading in ("Trade-offs", "Float model on the test split", "Training", "Dataset", "Environment"):
        assert heading in html


def test_allow_failures_exits_zero(tmp_path):
    data = generate_dataset(tmp_path / "data", per_class=4)
    code = main(
        quick_build_args(
            data, tmp_path / "out", tmp_path / "c", "--targets", "onnx", "--max-bytes", "1000", "--allow-failures"
        )
    )
    assert code == 0
    manifest = json.loads((tmp_path / "out" / "bundle" / "manifest.json").read_text())
    assert manifest["artifacts"] == [] and len(manifest["rejected"]) == 1
