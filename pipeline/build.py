"""`imgpipe build`: scan -> train -> export -> verify -> publish, with every stage timed and reported."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from imgpipe import __version__
from imgpipe.config import BuildConfig
from imgpipe.dataset import DatasetIndex, scan_dataset, write_split_file
from imgpipe.exporters.base import ExportContext
from imgpipe.exporters.registry import get_format
from imgpipe.gates import describe_failure, evaluate_gates
from imgpipe.html_report import write_html_report, write_metrics_json
from imgpipe.inspect_bundle import write_sha256sums, zip_platform_folders
from imgpipe.integration import write_platform_readmes
from imgpipe.manifest import SCHEMA_VERSION, artifact_entry, environment, library_versions, write_manifest
from imgpipe.metrics import classification_metrics
from imgpipe.optimize_stage import optimize_model, variants_for_source
from imgpipe.preprocessing import Preprocessing
from imgpipe.publish import Staging, remove_stale_staging
from imgpipe.report import artifact_rows, format_table, unavailable_notes, write_markdown_report
from imgpipe.train import SplitData, train_classifier
from imgpipe.verify import verify_artifact


class StageTimer:
    def __init__(self, progress):
        self.timings: dict[str, float] = {}
        self.progress = progress

    @contextmanager
    def stage(self, name: str):
        self.progress(f"== {name}")
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)


def run_build(config: BuildConfig, progress=print) -> dict:
    """Build, verify and publish; returns the manifest. Raises ImgpipeError subclasses for user errors."""
    config.validate()
    remove_stale_staging(config.out)
    timer = StageTimer(progress)
    preprocessing = Preprocessing(config.backbone.image_size)
    with Staging(config.out) as staging:
        with timer.stage("scan"):
            index = scan_dataset(config.dataset, config.backbone.image_size, config.split, progress=progress)
            _print_counts(index, progress)
        data = _split_data(index)
        with timer.stage("train"):
            result = train_classifier(
                config.backbone,
                config.train,
                data,
                len(index.labels),
                preprocessing,
                config.cache_dir,
                staging.root / "logs",
                progress,
            )
        timer.timings.update({f"train.{k}": round(v, 3) for k, v in result.timings.items()})
        _save_keras_model(result.model, staging.root / "keras")
        test_images, test_labels = index.split("test")
        with timer.stage("reference"):
            reference_probs = result.model.predict(preprocessing.normalize(test_images), verbose=0)
            reference = classification_metrics(reference_probs, test_labels, index.labels)
        sources = {"float": result.model}
        optimizations = {}
        for name in config.optimize:
            with timer.stage(f"optimize {name}"):
                sources[name], optimizations[name] = optimize_model(
                    name, result.model, data, preprocessing, config, staging.root / "logs", progress
                )
        verifications = []
        for source, model in sources.items():
            for fmt, variant in variants_for_source(config, source):
                artifact = _export(config, fmt, variant, source, model, index, preprocessing, staging, timer)
                with timer.stage(f"verify {artifact.name}"):
                    verifications.append(
                        verify_artifact(
                            artifact,
                            test_images,
                            test_labels,
                            index.labels,
                            reference_probs,
                            reference["accuracy"],
                            config.latency,
                        )
                    )
        manifest = _manifest(config, index, preprocessing, reference, verifications, result, timer, staging.bundle)
        manifest["optimizations"] = optimizations
        published = _apply_gates(config, verifications, manifest, staging.bundle, progress)
        _write_labels(staging.bundle, index.labels, {v.artifact.path.parent for v in published})
        write_split_file(index, staging.bundle / "splits.json")
        write_manifest(staging.bundle / "manifest.json", manifest)
        write_platform_readmes(staging.bundle, manifest)
        zip_platform_folders(staging.bundle)
        write_sha256sums(staging.bundle)  # last: it covers every file above, the zips included
        write_markdown_report(staging.root / "report.md", manifest)
        write_html_report(staging.root / "report.html", manifest)
        write_metrics_json(staging.root / "metrics.json", manifest)
        staging.publish()
    progress("")
    all_entries = manifest["artifacts"] + manifest["rejected"]
    progress(format_table(artifact_rows(all_entries, reference)))
    for note in unavailable_notes(all_entries):
        progress(note)
    progress(f"\nbundle: {config.out / 'bundle'}\nreport: {config.out / 'report.html'} (and report.md)")
    return manifest


def _apply_gates(config, verifications, manifest, bundle: Path, progress) -> list:
    """Judge every artifact against its budget; move the failures from `artifacts` to `rejected` and delete
    their files (and a platform folder left empty), so nothing over budget can be shipped by accident."""
    published, kept_entries = [], []
    for v, entry in zip(verifications, manifest["artifacts"]):
        a = v.artifact
        limits = config.gates.limits_for(a.format, a.variant, a.source)
        result = evaluate_gates(limits, {**v.metrics, "bytes": a.bytes}, v.structure_ok)
        entry["gates"] = result.to_dict()
        if result.passed:
            published.append(v)
            kept_entries.append(entry)
            continue
        reasons = [describe_failure(c) for c in result.failures]
        progress(f"gate failed, not published: {a.name}: " + "; ".join(reasons))
        entry["rejected_because"] = reasons
        entry["path"] = None
        manifest["rejected"].append(entry)
        shutil.rmtree(a.path) if a.path.is_dir() else a.path.unlink()
        if not any(a.path.parent.iterdir()):
            a.path.parent.rmdir()
    manifest["artifacts"] = kept_entries
    return published


def _save_keras_model(model, folder: Path) -> None:
    """The float Keras model, kept beside the bundle (not in it) to re-verify or re-export without retraining."""
    folder.mkdir()
    model.save(folder / "model.keras")


def _split_data(index: DatasetIndex) -> SplitData:
    train, val = index.split("train"), index.split("val")
    return SplitData(
        train[0],
        train[1],
        [e.sha256 for e in index.split_entries("train")],
        val[0],
        val[1],
        [e.sha256 for e in index.split_entries("val")],
    )


def _export(config, fmt, variant, source, model, index, preprocessing, staging, timer):
    spec = get_format(fmt)
    folder = staging.bundle / spec.bundle_dir
    folder.mkdir(exist_ok=True)
    dest = folder / artifact_filename(spec, variant, source, config.metadata.name)
    train_images, _ = index.split("train")
    ctx = ExportContext(
        model=model,
        labels=list(index.labels),
        preprocessing=preprocessing,
        metadata=config.metadata,
        workdir=staging.work / f"{source}-{fmt}-{variant}",
        representative_images=train_images,
        source=source,
        options=config.export,
    )
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    with timer.stage(f"export {fmt}:{variant}" + ("" if source == "float" else f" from {source}")):
        return spec.load().export(ctx, variant, dest)


def artifact_filename(spec, variant: str, source: str, model_name: str) -> str:
    """`model.tflite` / `<Name>.mlpackage` for a format's default float variant; otherwise the variant (and the
    model-level optimization it came from) is in the name, so a file name never hides what it is."""
    stem = "model"
    if spec.name == "coreml":  # Xcode names the generated Swift class after the file
        stem = re.sub(r"[^A-Za-z0-9]", "", model_name) or "Model"
    tags = ([] if source == "float" else [source]) + ([] if variant == spec.default_variant else [variant])
    return "_".join([stem, *tags]) + spec.suffix


def _write_labels(bundle: Path, labels: list[str], folders: set[Path]) -> None:
    for folder in folders:
        (folder / "labels.txt").write_text("\n".join(labels) + "\n")


def _print_counts(index: DatasetIndex, progress) -> None:
    counts = index.counts()
    progress(
        f"{len(index.entries)} images, {len(index.labels)} classes; per class train/val/test: "
        + ", ".join(f"{k} {v['train']}/{v['val']}/{v['test']}" for k, v in counts.items())
    )
    for p in index.problems:
        progress(f"note: {p}")


def _manifest(config, index, preprocessing, reference, verifications, result, timer, bundle) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "imgpipe_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "libraries": library_versions(),
        "environment": environment(),
        "model": {
            "name": config.metadata.name,
            "description": config.metadata.description,
            "version": config.metadata.version,
            "author": config.metadata.author,
            "license": config.metadata.license,
        },
        "labels": list(index.labels),
        "preprocessing": preprocessing.to_dict(),
        "dataset": index.summary(),
        "config": config.to_dict(),
        "reference": {"format": "keras", "variant": "float", "metrics": reference},
        "training": {"history": result.history, "bottlenecks_computed": result.bottlenecks_computed},
        "timings": dict(timer.timings),
        "artifacts": [artifact_entry(v, bundle) for v in verifications],
        "rejected": [],
    }
