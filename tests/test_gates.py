"""Release gates: limits resolved from general to specific, judged on typed verifications, parity included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgpipe.exporters.base import Artifact
from imgpipe.exporters.registry import FORMATS
from imgpipe.pipeline.config import GateLimits, GatePolicy
from imgpipe.pipeline.core.preprocessing import Preprocessing
from imgpipe.pipeline.verify.gates import describe_failure, evaluate_gates, judge
from imgpipe.pipeline.verify.verify import Reference, Verification, judge_parity


class _Sized(Artifact):
    """An artifact whose file does not exist: gates read only its size."""

    def __init__(self, fmt: str, variant: str, size: int, source: str = "float"):
        super().__init__(fmt, variant, Path(f"/nonexistent/{fmt}-{variant}"), ["a", "b"], Preprocessing(96), source)
        self.__dict__["bytes"] = size


def verification(fmt="tflite", variant="int8", size=1000, source="float", parity=None, checks=None, **metrics):
    base = {"accuracy": 0.9, "accuracy_drop": 0.0, "latency_ms_p50": 2.0}
    return Verification(_Sized(fmt, variant, size, source), {**base, **metrics}, "test", None, checks or {}, parity)


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


def test_source_specific_limits_apply_only_to_that_source():
    policy = GatePolicy(overrides={"tflite:prune-int8": {"max_accuracy_drop": 0.1}})
    assert policy.limits_for("tflite", "int8", "prune").max_accuracy_drop == 0.1
    assert policy.limits_for("tflite", "int8").max_accuracy_drop == 0.05


def test_judge_fails_each_budget_it_is_given_and_names_value_and_limit():
    policy = GatePolicy(GateLimits(max_accuracy_drop=0.01, max_bytes=500, max_latency_ms=1.0, min_accuracy=0.95))
    result = judge(verification(accuracy_drop=0.02, size=900), policy)
    assert not result.passed
    assert [c["gate"] for c in result.failures] == ["max_accuracy_drop", "min_accuracy", "max_bytes", "max_latency_ms"]
    assert result.reasons() == [
        "accuracy drop 2.0 pt > max_accuracy_drop 1 pt",
        "accuracy 90.0% < min_accuracy 95%",
        "900 bytes > max_bytes 500",
        "p50 2.00 ms > max_latency_ms 1",
    ]


def test_judge_passes_within_budget_and_marks_what_was_not_measured():
    result = judge(verification(accuracy_drop=None, accuracy=None), GatePolicy(GateLimits(max_accuracy_drop=0.01)))
    assert result.passed and result.checks[0]["passed"] is None


def test_failed_structural_checks_fail_the_artifact():
    assert not judge(verification(checks={"labels_present": False}), GatePolicy()).passed
    assert not evaluate_gates(GateLimits(), {"bytes": 5}, structure_ok=False).passed


def test_parity_uses_the_format_tables_tolerance_and_fails_a_changed_conversion():
    tolerance = FORMATS["tflite"].variant("fp32").parity
    reference = Reference("keras:float", np.array([[0.9, 0.1], [0.2, 0.8]], np.float32), {"accuracy": 1.0})
    exact = judge_parity(reference.probs + tolerance.max_abs_prob_diff / 2, reference, tolerance)
    off = judge_parity(reference.probs + tolerance.max_abs_prob_diff * 2, reference, tolerance)
    assert exact["passed"] and not off["passed"]
    result = judge(verification(variant="fp32", parity=off), GatePolicy())
    assert [c["gate"] for c in result.failures] == ["parity"]
    assert "vs keras:float" in describe_failure(result.failures[0])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_float_default_variant_has_a_parity_tolerance(fmt):
    spec = FORMATS[fmt]
    assert spec.variant(spec.default_variant).parity is not None
