"""Verification: each artifact run by its own runtime on held-out images and measured against the Keras models.

Two comparisons: `agreement`/`max_abs_prob_diff` against the float Keras model (what every table shows), and
parity against the Keras model the artifact was exported from, judged with the format table's tolerance for its
variant, so a float conversion that changed the model fails instead of shipping. Where a runtime cannot predict
here the numbers are null with the reason and the artifact's structure is checked instead: never a number that
was not measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...exporters.base import Artifact, Runner
from ...exporters.registry import FORMATS, Parity, open_runner
from ..config import ExportOptions
from ..core.console import progress_bar
from ..data.photos import Photos
from .metrics import agreement_metrics, classification_metrics

BATCH = 32


@dataclass
class Reference:
    """A Keras model's predictions on the test split: what artifacts are compared with."""

    name: str  # "keras:float", "keras:prune" ...
    probs: np.ndarray
    metrics: dict  # classification_metrics on the test split

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")


@dataclass
class Verification:
    artifact: Artifact
    metrics: dict
    runtime: str
    unavailable_reason: str | None = None
    structural_checks: dict[str, bool] = field(default_factory=dict)
    parity: dict | None = None  # reference, measured values, tolerance, passed
    runner: Runner | None = field(default=None, repr=False)  # kept open for the latency stage
    predictions: list[int] | None = None  # predicted label per test image, when the runtime could predict

    @property
    def structure_ok(self) -> bool:
        return all(self.structural_checks.values())


def verify_artifact(
    artifact: Artifact,
    images: np.ndarray | Photos,
    y_true: np.ndarray,
    labels: list[str],
    float_reference: Reference | None,
    source_reference: Reference | None = None,
    threads: int = 1,
    options: ExportOptions | None = None,
) -> Verification:
    runner = open_runner(artifact.format, artifact.path, artifact.preprocessing, threads, options)
    metrics = {"bytes": artifact.bytes, "gzip_bytes": artifact.gzip_bytes}
    checks = runner.structural_checks()
    if not runner.can_predict:
        metrics.update(null_metrics(labels))
        return Verification(artifact, metrics, runner.runtime, runner.unavailable_reason, checks, runner=runner)
    probs = predict_batched(runner, images)
    metrics.update(classification_metrics(probs, y_true, labels))
    if float_reference is not None:
        metrics.update(agreement_metrics(probs, float_reference.probs))
        metrics["accuracy_drop"] = (
            None if float_reference.accuracy is None else float_reference.accuracy - metrics["accuracy"]
        )
    else:
        metrics.update({"agreement": None, "max_abs_prob_diff": None, "accuracy_drop": None})
    metrics.update({"latency_ms_p50": None, "latency_ms_p95": None})  # measured for all artifacts together
    if runner.latency_unavailable_reason is not None:
        metrics["latency_unavailable_reason"] = runner.latency_unavailable_reason
    parity = FORMATS[artifact.format].variant(artifact.variant).parity
    judged = None if parity is None or source_reference is None else judge_parity(probs, source_reference, parity)
    return Verification(
        artifact, metrics, runner.runtime, None, checks, judged, runner, predictions=probs.argmax(1).tolist()
    )


def judge_parity(probs: np.ndarray, reference: Reference, tolerance: Parity) -> dict:
    measured = agreement_metrics(probs, reference.probs)
    return {
        "reference": reference.name,
        **measured,
        "min_agreement": tolerance.min_agreement,
        "max_abs_prob_diff_limit": tolerance.max_abs_prob_diff,
        "passed": measured["agreement"] >= tolerance.min_agreement
        and measured["max_abs_prob_diff"] <= tolerance.max_abs_prob_diff,
    }


def predict_batched(runner: Runner, images: np.ndarray | Photos, batch_size: int = BATCH) -> np.ndarray:
    """The runner's probabilities for every image (decoded ones, or photos read from disk a batch at a time),
    with a progress bar on a terminal."""
    batches = (
        images.batches(batch_size)
        if isinstance(images, Photos)
        else (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    )
    parts = []
    with progress_bar("predicting", len(images)) as advance:
        for batch in batches:
            parts.append(runner.predict(batch))
            advance(len(parts[-1]))
    return np.concatenate(parts)


def null_metrics(labels: list[str]) -> dict:
    return {
        "accuracy": None,
        "macro_f1": None,
        "log_loss": None,
        "per_class_accuracy": {label: None for label in labels},
        "confusion_matrix": None,
        "samples": 0,
        "ece": None,
        "agreement": None,
        "max_abs_prob_diff": None,
        "accuracy_drop": None,
        "latency_ms_p50": None,
        "latency_ms_p95": None,
    }
