"""`imgpipe evaluate`: every artifact of a published bundle, run on another labelled folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from imgpipe.dataset import SplitFractions, scan_dataset
from imgpipe.errors import BundleError
from imgpipe.exporters.base import Artifact
from imgpipe.exporters.registry import get_format
from imgpipe.manifest import read_manifest
from imgpipe.preprocessing import Preprocessing
from imgpipe.report import artifact_rows, format_table, unavailable_notes
from imgpipe.verify import predict_batched, verify_artifact

ALL_FOR_EVALUATION = SplitFractions(1.0, 0.0, 0.0)


@dataclass
class Evaluation:
    dataset: dict
    reference: str | None  # the artifact others are compared with: there is no Keras model in a bundle
    artifacts: list[dict]


def evaluate_bundle(bundle: Path, dataset: Path, progress=print) -> Evaluation:
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    labels = manifest["labels"]
    preprocessing = Preprocessing.from_dict(manifest["preprocessing"])
    index = scan_dataset(
        dataset, preprocessing.image_size, ALL_FOR_EVALUATION, allowed_labels=labels, progress=progress
    )
    images, y_true = index.split("train")
    artifacts = [_artifact(bundle, e, labels, preprocessing) for e in manifest["artifacts"]]
    reference_artifact = next((a for a in artifacts if a.variant in ("fp32",) and a.source == "float"), None)
    reference_probs = None
    if reference_artifact is not None:
        runner = get_format(reference_artifact.format).load().open_runner(reference_artifact.path, preprocessing)
        reference_probs = predict_batched(runner, images)
    entries = []
    for artifact in artifacts:
        progress(f"evaluating {artifact.name} on {len(images)} images ...")
        v = verify_artifact(artifact, images, y_true, labels, reference_probs, None)
        entry = {
            "format": artifact.format,
            "variant": artifact.variant,
            "source": artifact.source,
            "path": artifact.path.relative_to(bundle).as_posix(),
            "bytes": v.metrics["bytes"],
            "gzip_bytes": v.metrics["gzip_bytes"],
            "metrics": {k: val for k, val in v.metrics.items() if k not in ("bytes", "gzip_bytes")},
        }
        if v.unavailable_reason:
            entry["metrics_unavailable_reason"] = v.unavailable_reason
            entry["structural_checks"] = v.structural_checks
        entries.append(entry)
    return Evaluation(index.summary(), reference_artifact.name if reference_artifact else None, entries)


def _artifact(bundle: Path, entry: dict, labels, preprocessing) -> Artifact:
    path = bundle / entry["path"]
    if not path.exists():
        raise BundleError(f"{path}: listed in the manifest but missing; restore the bundle or rebuild it")
    return Artifact(
        entry["format"],
        entry["variant"],
        path,
        labels,
        preprocessing,
        entry.get("source", "float"),
        entry.get("input_quantization"),
        entry.get("output_quantization"),
    )


def print_evaluation(result: Evaluation, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {"dataset": result.dataset, "reference": result.reference, "artifacts": result.artifacts}, indent=2
            )
        )
        return
    print(format_table(artifact_rows(result.artifacts)))
    if result.reference:
        print(f"agreement and max|Δp| are against {result.reference} (a bundle holds no Keras model)")
    for note in unavailable_notes(result.artifacts):
        print(note)
