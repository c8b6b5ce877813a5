"""What a finished build records about itself: the manifest's contents gathered from the build's stages, the
configuration as a bundle may carry it into an app, and the test predictions the build history compares."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import BuildConfig
from ..core.files import tree_sha256
from ..data.dataset import DatasetIndex
from ..data.synthetic import EMBEDDED_VERSION
from ..verify.calibration import reliability_bins
from ..verify.metrics import mistakes_of
from ..verify.temperature import Calibration
from ..verify.verify import Reference, Verification
from .manifest import artifact_entry, build_manifest


def test_predictions(index: DatasetIndex, reference: Reference, verifications: list[Verification]) -> dict:
    photos = index.entries_of("test")
    predicted = {reference.name: reference.probs.argmax(1).tolist()}
    predicted.update({v.artifact.name: v.predictions for v in verifications if v.predictions is not None})
    return {
        "paths": [e.relpath for e in photos],
        "sha256": [e.sha256 for e in photos],
        "labels": [e.label for e in photos],
        "predicted": predicted,
    }


def manifest_of(
    config,
    index,
    preprocessing,
    reference,
    judged,
    trained,
    features,
    distribution,
    optimizations,
    calibration,
    timings,
    stages,
    bundle,
    dataset,
):
    entries = [artifact_entry(v, gates, bundle, published=gates.passed) for v, gates in judged]
    tested = index.entries_of("test")
    return build_manifest(
        config=public_config(config, dataset),
        model={f: getattr(config.metadata, f) for f in ("name", "description", "version", "author", "license")},
        labels=index.labels,
        preprocessing=preprocessing.to_dict(),
        dataset={**index.summary(), "root": dataset_name(config, dataset)},
        reference=reference.metrics,
        mistakes=mistakes_of(
            reference.probs, np.array([e.label for e in tested], np.int64), index.labels, [e.relpath for e in tested]
        ),
        training={
            "history": trained.history,
            "head_l2": trained.head_l2,  # the strength --head lbfgs chose (None for --head adam)
            "val_accuracy": trained.val_accuracy,  # after each phase
            "fine_tune_gain": fine_tune_gain(trained.val_accuracy),
            "features_computed": 0 if features is None else features.computed,
            "features_engine": None if features is None else features.engine,
            "deterministic": True,  # op determinism and fixed seeds: same inputs, seed and cache, same bytes
            "distribute": {"strategy": distribution.name, "replicas": distribution.replicas},
        },
        optimizations=optimizations,
        calibration=calibration,
        timings=dict(timings),
        stages=stages.entries,
        artifacts=[e for e in entries if e["path"] is not None],
        rejected=[e for e in entries if e["path"] is None],
    )


def fine_tune_gain(val_accuracy: dict[str, float]) -> float | None:
    """What fine-tuning added to the head's validation accuracy (None without both)."""
    if "head" in val_accuracy and "fine_tune" in val_accuracy:
        return val_accuracy["fine_tune"] - val_accuracy["head"]
    return None


def calibration_report(calibration: Calibration, reference: Reference, test_labels: np.ndarray) -> dict:
    """The temperature and why, ECE on val before and after it, ECE on test and the reliability diagram's bins
    (the float model, after the temperature: what every artifact computes)."""
    return {
        **calibration.to_dict(),
        "test_ece": reference.metrics.get("ece"),
        "reliability": reliability_bins(reference.probs, test_labels) if len(test_labels) else [],
    }


def public_config(config: BuildConfig, dataset: Path) -> dict:
    """The configuration as a bundle may carry it into an app: names and digests, never this machine's paths."""
    public = config.to_dict()
    public["out"] = "."
    public["dataset"] = dataset_name(config, dataset)
    public["cache_dir"] = None
    public["history"] = None
    public["mlflow_uri"] = None  # may carry credentials
    weights = config.backbone.weights_file
    if weights is not None:
        public["backbone"]["weights"] = weights.name
        public["backbone"]["weights_sha256"] = tree_sha256(weights)
    return public


def dataset_name(config: BuildConfig, dataset: Path) -> str:
    return f"embedded:{EMBEDDED_VERSION}" if config.dataset is None else Path(dataset).name
