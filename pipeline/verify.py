"""Verification: each artifact run by its own runtime on held-out images and measured against the float model.

Where a runtime cannot predict on this machine (Core ML off macOS) the numbers are null with the reason,
and the artifact's structure is checked instead: never a number that was not measured.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from imgpipe.exporters.base import Artifact, Runner
from imgpipe.exporters.registry import get_format
from imgpipe.metrics import agreement_metrics, classification_metrics


@dataclass(frozen=True)
class LatencyConfig:
    warmup: int = 5
    runs: int = 30
    threads: int = 1


@dataclass
class Verification:
    artifact: Artifact
    metrics: dict
    unavailable_reason: str | None = None
    structural_checks: dict[str, bool] = field(default_factory=dict)

    @property
    def structure_ok(self) -> bool:
        return all(self.structural_checks.values())


def verify_artifact(
    artifact: Artifact,
    images: np.ndarray,
    y_true: np.ndarray,
    labels: list[str],
    reference_probs: np.ndarray | None,
    reference_accuracy: float | None,
    latency: LatencyConfig = LatencyConfig(),
) -> Verification:
    runner = (
        get_format(artifact.format)
        .load()
        .open_runner(artifact.path, artifact.preprocessing, num_threads=latency.threads)
    )
    metrics = {"bytes": artifact.bytes, "gzip_bytes": artifact.gzip_bytes}
    checks = runner.structural_checks()
    if not runner.can_predict:
        metrics.update(_null_metrics(labels))
        return Verification(artifact, metrics, runner.unavailable_reason, checks)
    probs = predict_batched(runner, images)
    metrics.update(classification_metrics(probs, y_true, labels))
    if reference_probs is not None:
        metrics.update(agreement_metrics(probs, reference_probs))
    else:
        metrics.update({"agreement": None, "max_abs_prob_diff": None})
    metrics["accuracy_drop"] = (
        None if reference_accuracy is None or metrics["accuracy"] is None else reference_accuracy - metrics["accuracy"]
    )
    metrics.update(measure_latency(runner, images[:1], latency))
    return Verification(artifact, metrics, None, checks)


def predict_batched(runner: Runner, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return np.concatenate([runner.predict(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def measure_latency(runner: Runner, one_image: np.ndarray, config: LatencyConfig) -> dict:
    """Single-image latency after warm-up: what one camera frame costs an app, preprocessing included."""
    for _ in range(config.warmup):
        runner.predict(one_image)
    samples = []
    for _ in range(config.runs):
        start = time.perf_counter()
        runner.predict(one_image)
        samples.append((time.perf_counter() - start) * 1000.0)
    samples.sort()
    return {
        "latency_ms_p50": statistics.median(samples),
        "latency_ms_p95": samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))],
        "latency_threads": config.threads,
        "latency_runs": config.runs,
    }


def _null_metrics(labels: list[str]) -> dict:
    return {
        "accuracy": None,
        "macro_f1": None,
        "log_loss": None,
        "per_class_accuracy": {label: None for label in labels},
        "confusion_matrix": None,
        "samples": 0,
        "agreement": None,
        "max_abs_prob_diff": None,
        "accuracy_drop": None,
        "latency_ms_p50": None,
        "latency_ms_p95": None,
    }
