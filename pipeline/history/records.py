"""A build as the history keeps it: made from a finished build's manifest (plus its per-photo test predictions),
or read back from a bundle on disk for `imgpipe compare`."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..bundle.checksums import SUMS_NAME
from ..bundle.manifest import MANIFEST_NAME, read_manifest
from ..core.errors import BundleError
from ..reports.table import artifact_name


def bundle_sha256(bundle: Path) -> str | None:
    """What identifies a published bundle: the hash of its SHA256SUMS, which lists every file's hash."""
    sums = Path(bundle) / SUMS_NAME
    return hashlib.sha256(sums.read_bytes()).hexdigest() if sums.is_file() else None


def build_record(
    manifest: dict,
    out: Path | None,
    bundle: Path | None,
    seconds: float | None = None,
    test_predictions: dict | None = None,
) -> dict:
    """The history's record of one build; `test_predictions` is `BuildResult.test_predictions` when known."""
    predicted = (test_predictions or {}).get("predicted", {})
    artifacts = []
    for entry in manifest["artifacts"] + manifest.get("rejected", []):
        m = entry.get("metrics") or {}
        name = artifact_name(entry)
        gates = entry.get("gates") or {}
        artifacts.append(
            {
                "name": name,
                "format": entry["format"],
                "variant": entry["variant"],
                "source": entry.get("source", "float"),
                "published": entry.get("path") is not None,
                "path": entry.get("path"),
                "bytes": entry.get("bytes"),
                "gzip_bytes": entry.get("gzip_bytes"),
                "accuracy": m.get("accuracy"),
                "accuracy_drop": m.get("accuracy_drop"),
                "macro_f1": m.get("macro_f1"),
                "latency_ms_p50": m.get("latency_ms_p50"),
                "latency_ms_p95": m.get("latency_ms_p95"),
                "gates": {"passed": gates.get("passed"), "reasons": entry.get("rejected_because", [])},
                "predictions": predicted.get(name),
            }
        )
    dataset = manifest["dataset"]
    photos = None
    if test_predictions:
        photos = [
            list(p) for p in zip(test_predictions["paths"], test_predictions["sha256"], test_predictions["labels"])
        ]
    return {
        "id": None,
        "created": manifest["created"],
        "out": str(Path(out).resolve()) if out is not None else None,
        "bundle_sha256": bundle_sha256(bundle) if bundle is not None else None,
        "model": manifest["model"]["name"],
        "dataset": {
            "name": dataset.get("root"),
            "digest": dataset.get("digest"),
            "images": dataset.get("images"),
            "classes": dataset.get("classes"),
        },
        "labels": list(manifest["labels"]),
        "imgpipe_version": manifest.get("imgpipe_version"),
        "config": manifest.get("config") or {},
        "timings": manifest.get("timings") or {},
        "seconds": seconds,
        "reference": {"accuracy": manifest["reference"]["metrics"].get("accuracy")},
        "artifacts": artifacts,
        "test_photos": photos,
        "reference_predictions": predicted.get("keras:float"),
    }


def locate_bundle(path: Path) -> Path:
    """The bundle folder meant by a build folder (OUT), a bundle folder or a manifest.json."""
    path = Path(path)
    if path.is_file() and path.name == MANIFEST_NAME:
        return path.parent
    if (path / "bundle" / MANIFEST_NAME).is_file():
        return path / "bundle"
    if (path / MANIFEST_NAME).is_file():
        return path
    raise BundleError(
        f"{path}: not a build id, build folder, bundle folder or manifest.json; pass an id from "
        "`imgpipe history` or a folder written by `imgpipe build`"
    )


def record_from_bundle(path: Path, history=None) -> dict:
    """The history's record of the build that published this bundle when it has one (with per-photo predictions),
    else one made from the bundle's manifest alone."""
    bundle = locate_bundle(path)
    sha = bundle_sha256(bundle)
    if history is not None and sha is not None:
        found = history.find_bundle(sha)
        if found is not None:
            return found
    manifest = read_manifest(bundle)
    record = build_record(manifest, None, bundle)
    record["source"] = str(bundle)
    return record
