"""`imgpipe evaluate`: every artifact of a published bundle, run on another labelled folder.

A bundle holds no Keras model, so agreement is measured against the bundle's float default artifact that can
predict here (the reference is computed once and reused for its own row).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...exporters.base import Artifact
from ...exporters.registry import FORMATS, open_runner
from ..bundle.manifest import read_manifest
from ..config import LatencyConfig, SplitFractions
from ..core.console import echo
from ..core.preprocessing import Preprocessing
from ..data.dataset import scan_dataset
from ..reports.table import (
    MISTAKE_COLUMNS,
    accuracy_interval_note,
    artifact_name,
    artifact_rows,
    drop_empty_columns,
    format_table,
    mistake_table,
    unavailable_notes,
)
from ..verify.latency import add_latencies
from ..verify.metrics import classification_metrics, mistakes_of
from ..verify.verify import Reference, predict_batched, verify_artifact

ALL_FOR_EVALUATION = SplitFractions(1.0, 0.0, 0.0)
log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    dataset: dict
    reference: str | None  # the artifact others are compared with
    artifacts: list[dict]
    mistakes: dict | None  # the photos the reference got wrong, most confident first (mistakes_of)


def evaluate_bundle(bundle: Path, dataset: Path) -> Evaluation:
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    labels = manifest["labels"]
    preprocessing = Preprocessing.from_dict(manifest["preprocessing"])
    index = scan_dataset(dataset, ALL_FOR_EVALUATION, allowed_labels=labels)
    artifacts = [Artifact.from_entry(e, bundle, labels, preprocessing) for e in manifest["artifacts"]]
    with tempfile.TemporaryDirectory(prefix="imgpipe-evaluate-") as work:
        photos = index.photos(None, preprocessing.image_size, Path(work))
        reference = _reference(artifacts, photos, labels)
        verifications = []
        for artifact in artifacts:
            log.info(f"evaluating {artifact.name} on {len(photos)} images")
            verifications.append(verify_artifact(artifact, photos, photos.labels, labels, reference))
        add_latencies(verifications, photos.decode([0]), LatencyConfig())
    entries = []
    for artifact, v in zip(artifacts, verifications):
        entry = {
            "format": artifact.format,
            "variant": artifact.variant,
            "source": artifact.source,
            "runtime": v.runtime,
            "path": artifact.path.relative_to(bundle).as_posix(),
            "bytes": artifact.bytes,
            "gzip_bytes": artifact.gzip_bytes,
            "metrics": {k: val for k, val in v.metrics.items() if k not in ("bytes", "gzip_bytes")},
        }
        if v.unavailable_reason:
            entry["metrics_unavailable_reason"] = v.unavailable_reason
            entry["structural_checks"] = v.structural_checks
        entries.append(entry)
    totals = {label: sum(c.values()) for label, c in index.counts().items()}
    summary = {**index.summary(), "root": Path(dataset).name, "counts": totals}
    if reference is None:
        return Evaluation(summary, None, entries, None)
    paths = [e.relpath for e in index.entries_of(None)]  # the order of index.photos(None)
    return Evaluation(summary, reference.name, entries, mistakes_of(reference.probs, photos.labels, labels, paths))


def _reference(artifacts: list[Artifact], photos, labels: list[str]) -> Reference | None:
    """The first float default artifact that can predict here, in the format table's predict order."""
    candidates = sorted(
        (a for a in artifacts if a.source == "float" and a.variant == FORMATS[a.format].default_variant),
        key=lambda a: FORMATS[a.format].predict_rank,
    )
    for artifact in candidates:
        runner = open_runner(artifact.format, artifact.path, artifact.preprocessing)
        if runner.can_predict:
            probs = predict_batched(runner, photos)
            return Reference(artifact.name, probs, classification_metrics(probs, photos.labels, labels))
    return None


def print_evaluation(result: Evaluation, as_json: bool) -> None:
    if as_json:
        echo(
            json.dumps(
                {
                    "dataset": result.dataset,
                    "reference": result.reference,
                    "artifacts": result.artifacts,
                    "mistakes": result.mistakes,
                },
                indent=2,
            )
        )
        return
    echo(format_table(*drop_empty_columns(artifact_rows(result.artifacts))))
    if result.reference:
        echo(f"agreement and max|Δp| are against {result.reference} (a bundle holds no Keras model)")
        reference = next(a for a in result.artifacts if artifact_name(a) == result.reference)
        echo(f"{result.reference}: {accuracy_interval_note(reference['metrics'])}")
    mistakes = mistake_table(result.mistakes)
    if mistakes:
        rows, how_many = mistakes
        echo(f"\nPhotos {result.reference} got wrong: {how_many} (--json lists them all):")
        echo(format_table(rows, MISTAKE_COLUMNS))
    for note in unavailable_notes(result.artifacts):
        echo(note)
