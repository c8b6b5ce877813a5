"""`imgpipe build`: scan -> train -> optimize -> export -> verify -> judge -> publish, every stage timed.

The plan (which artifacts), the output and cache folders and the backbone weights are checked before any photo is
decoded; OUT is locked for the whole build; everything is written into a staging folder and published in one step
at the end, so a failed build changes nothing. The operating system's refusals (a full disk, a permission) become
one `FileSystemError` line naming the path.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..exporters.base import Artifact, ExportContext
from ..exporters.registry import FORMATS
from .bundle.checksums import write_sha256sums, zip_platform_folders
from .bundle.layout import artifact_path, remove_artifact, write_labels
from .bundle.manifest import write_manifest
from .bundle.readmes import write_platform_readmes
from .bundle.record import calibration_report, manifest_of, test_predictions
from .bundle.staging import OutputFolder, Staging
from .config import BuildConfig
from .core.console import native_output, progress_bar, stage
from .core.errors import ConfigError, DatasetError, filesystem_error
from .core.files import prepare_folder, write_text_atomic
from .core.preprocessing import Preprocessing
from .core.stage_cache import StageCache
from .data.dataset import DatasetIndex, scan_dataset, write_split_file
from .data.near_duplicates import FEATURE_LIMIT, feature_pairs
from .data.photos import Photos
from .data.synthetic import embedded_dataset
from .history import record_build
from .plan import PlannedArtifact, plan_artifacts
from .reports.html import write_html_report
from .reports.markdown import write_markdown_report
from .reports.metrics_json import write_metrics_json
from .reuse import (
    StageLog,
    artifact_key,
    cached_artifact,
    cached_reference,
    cached_training,
    load_checks,
    reference_key,
    save_checks,
    train_key,
)
from .settings import RECORD_FILE, recorded_config
from .training.distribute import Distribution, local_copy, make_distribution
from .training.fit import predict_photos
from .training.train import backbone_features, new_classifier, train_classifier
from .training.weights import resolve_backbone
from .verify.gates import judge
from .verify.latency import add_latencies
from .verify.metrics import classification_metrics
from .verify.temperature import calibrate
from .verify.verify import Reference, Verification, verify_artifact

log = logging.getLogger(__name__)
BUNDLE_DIR, REPORT_HTML = "bundle", "report.html"


@dataclass
class ArtifactResult:
    """One artifact of a finished build, published or rejected."""

    format: str
    variant: str
    source: str
    path: Path | None  # None when a gate rejected it
    bytes: int
    metrics: dict
    runtime: str
    gate_failures: list[str]

    @property
    def name(self) -> str:
        return f"{self.format}:{self.variant}" + ("" if self.source == "float" else f" ({self.source})")

    @property
    def published(self) -> bool:
        return self.path is not None


@dataclass
class BuildResult:
    out: Path
    manifest: dict
    artifacts: list[ArtifactResult]
    seconds: float | None = None  # the whole build, wall clock
    # Test photos (paths, sha256, labels) and each model's predicted label per photo: what the history compares.
    test_predictions: dict | None = None
    build_id: int | None = None  # in the build history, when recorded
    history: Path | None = None
    versus: dict | None = None  # differences from the last build into the same folder (history.compare)
    notes: list[str] = field(default_factory=list)

    @property
    def bundle(self) -> Path:
        return self.out / BUNDLE_DIR

    @property
    def report(self) -> Path:
        return self.out / REPORT_HTML

    @property
    def rejected(self) -> list[ArtifactResult]:
        return [a for a in self.artifacts if not a.published]


def run_build(config: BuildConfig, export_only: bool = False) -> BuildResult:
    """Build, verify and publish. Raises ImgpipeError subclasses for anything the user can fix. `export_only`
    (`imgpipe export`) stops before training unless the trained model is in the stage cache."""
    config.validate()
    plan = plan_artifacts(config)
    _check_not_inside_dataset(config)
    distribution = make_distribution(config.train.distribute)  # before TensorFlow runs any op
    if not distribution.is_chief:
        return _build_as_worker(config, plan, distribution)
    try:
        with OutputFolder(config.out, wait=config.wait):
            prepare_folder(config.cache_dir, "--cache-dir", "backbone features and the embedded dataset")
            return _build(config, plan, export_only, distribution)
    except Exception as e:
        error = filesystem_error(e, where=lambda code: _blamed_folder(code, config))
        if error is None or error is e:
            raise
        raise error from e


def _build_as_worker(config: BuildConfig, plan: list[PlannedArtifact], distribution: Distribution) -> BuildResult:
    """A worker other than the chief trains its share in step with the others and keeps nothing: it builds into a
    temporary folder that is deleted, and records no history (TensorFlow's convention for multi-worker saving)."""
    with tempfile.TemporaryDirectory(prefix="imgpipe-worker-") as scratch:
        config = replace(config, out=Path(scratch) / "out", record_history=False, mlflow_uri=None)
        with OutputFolder(config.out, wait=False):
            prepare_folder(config.cache_dir, "--cache-dir", "backbone features and the embedded dataset")
            return _build(config, plan, False, distribution)


def _check_not_inside_dataset(config: BuildConfig) -> None:
    """The output or the cache inside the dataset folder would be scanned as a class of its own."""
    if config.dataset is None:
        return
    if not Path(config.dataset).is_dir():  # before the weights (a download) and any other work
        what = "is a file" if Path(config.dataset).exists() else "not found"
        raise DatasetError(f"{config.dataset}: {what}; pass a folder with one sub-folder of images per class")
    dataset = Path(config.dataset).resolve()
    for option, folder in (("--out", config.out), ("--cache-dir", config.cache_dir)):
        if Path(folder).resolve().is_relative_to(dataset):
            raise ConfigError(
                f"{option} {folder}: inside the dataset folder {config.dataset}, where it would be read as a class; "
                "choose a folder outside the dataset"
            )


def _blamed_folder(code: int, config: BuildConfig) -> Path:
    """Which folder a refusal that names no file (a library's failed write) is about: for a full disk, the
    first of OUT, the cache and the temporary folder whose disk is (nearly) full; otherwise OUT."""
    if code in (errno.ENOSPC, errno.EDQUOT):
        for folder in (config.out, config.cache_dir, Path(tempfile.gettempdir())):
            try:
                if shutil.disk_usage(folder).free < 64 << 20:
                    return folder
            except OSError:
                continue
    return config.out


def _build(
    config: BuildConfig, plan: list[PlannedArtifact], export_only: bool, distribution: Distribution
) -> BuildResult:
    started = time.perf_counter()
    config.backbone = resolve_backbone(config.backbone)  # a weights file that does not fit fails here, not later
    dataset = config.dataset or embedded_dataset(config.cache_dir)
    preprocessing = Preprocessing(config.backbone.image_size)
    timings: dict[str, float] = {}
    cache, stages = StageCache(config.cache_dir / "stages"), StageLog()
    with Staging(config.out) as staging:
        with stage("scan", timings):
            checked = load_checks(cache)
            index = scan_dataset(dataset, config.split, groups_file=config.groups, checked=checked)
            save_checks(cache, checked)
        model = new_classifier(config.backbone, config.train, len(index.labels), distribution)
        features = None
        if config.backbone.pretrained:
            with stage("features", timings):
                everything = index.photos(None, config.backbone.image_size, staging.work)
                features = backbone_features(
                    model, everything, config.backbone, preprocessing, config.cache_dir / "features", distribution
                )
            if features.conversion_seconds:
                timings["features.litert_conversion"] = round(features.conversion_seconds, 3)
            index = _group_near_duplicates(index, features.values, config)
        index.check_splits(config.split)
        _log_counts(index)
        data = index.training_data(config.backbone.image_size, staging.work)
        head_features = None if features is None else _by_split(index, features.values)
        if features is not None and config.train.feature_views:
            with stage("augmented features", timings):
                views = backbone_features(
                    model, data.train, config.backbone, preprocessing, config.cache_dir / "features", distribution,
                    config.train.feature_views,
                )  # fmt: skip
            features.computed += views.computed
            head_features = (views.values, head_features[1])
        trained_key = train_key(config, preprocessing, index)
        # Workers of a multi-worker build must all train, in lockstep: one that found the model in its cache would
        # leave the others waiting.
        reusable = cache if distribution.name != "multi-worker" else StageCache(staging.work / "stages")
        if export_only and cache.lookup("train", trained_key) is None:
            raise ConfigError(
                f"{config.out}: this build's trained model is not in the cache {cache.root} (the photos, the "
                "backbone or the training settings changed, or the cache was cleared); run imgpipe build"
            )
        with stage("train", timings):
            trained, reused = cached_training(
                reusable,
                trained_key,
                model,
                lambda: train_classifier(
                    model,
                    config.backbone,
                    config.train,
                    data,
                    preprocessing,
                    staging.root / "logs",
                    head_features,
                    distribution,
                ),
            )
        stages.add("train", trained_key, reused)
        trained.model = local_copy(trained.model, distribution)
        timings.update({f"train.{k}": round(v, 3) for k, v in trained.timings.items()})
        with stage("calibrate", timings):
            frozen = head_features is not None and config.train.fine_tune_epochs == 0
            calibration = calibrate(trained.model, data.val, preprocessing, head_features[1] if frozen else None)
        float_key = f"{trained_key}/temperature-{calibration.temperature:.6g}"  # what the exports start from
        _save_keras_model(trained.model, staging.root / "keras")
        test = index.photos("test", config.backbone.image_size, staging.work)
        models, optimizations = {"float": trained.model}, {}
        for name in config.optimize:
            from .optimize.sources import optimized_model

            with stage(f"optimize {name}", timings):
                models[name], optimizations[name] = optimized_model(
                    name, trained.model, data, preprocessing, config, staging.root / "logs"
                )
        with stage("reference", timings):
            references = {
                name: _reference(name, m, test, preprocessing, index.labels)
                for name, m in models.items()
                if name != "float"
            }
            key = reference_key(float_key, index)
            references["float"], reused = cached_reference(
                cache, key, lambda: _reference("float", trained.model, test, preprocessing, index.labels)
            )
            stages.add("reference", key, reused)
        maker = _ArtifactMaker(
            config,
            index.labels,
            preprocessing,
            data.train.sample(config.export.calibration_images),
            test,
            references,
            staging,
            timings,
            cache,
            stages,
            {"float": float_key},
            index,
        )
        memos = {name: {} for name in models}  # conversions the exports of one model share
        verifications = []
        with progress_bar("artifacts", len(plan), "artifact") as advance:
            for item in plan:
                verifications.append(maker.make(item, models[item.source], memos[item.source]))
                advance(1, item.name)
        with stage("latency", timings):
            add_latencies(verifications, test.sample(1), config.latency)
        judged = [(v, judge(v, config.gates)) for v in verifications]
        for v, gates in judged:
            if not gates.passed:
                log.warning(f"not published, failed a gate: {v.artifact.name}: {'; '.join(gates.reasons())}")
                remove_artifact(v.artifact)
        write_labels([v.artifact for v, gates in judged if gates.passed], index.labels)
        manifest = manifest_of(
            config,
            index,
            preprocessing,
            references["float"],
            judged,
            trained,
            features,
            distribution,
            optimizations,
            calibration_report(calibration, references["float"], test.labels),
            timings,
            stages,
            staging.bundle,
            dataset,
        )
        _write_bundle_files(staging, index, manifest)
        write_text_atomic(staging.root / RECORD_FILE, json.dumps(recorded_config(config), indent=2) + "\n")
        staging.publish()
    result = BuildResult(config.out, manifest, [_result(e, config.out / BUNDLE_DIR) for e in _all_entries(manifest)])
    result.test_predictions = test_predictions(index, references["float"], verifications)
    result.seconds = time.perf_counter() - started
    record_build(config, result)  # the build history (and MLflow when asked); never fails the build
    return result


@dataclass
class _ArtifactMaker:
    """Exports and verifies one planned artifact at a time, with what every artifact of a build shares."""

    config: BuildConfig
    labels: list[str]
    preprocessing: Preprocessing
    calibration: np.ndarray  # uint8 train-split images, sampled once per build
    test: Photos
    references: dict[str, Reference]  # per source model
    staging: Staging
    timings: dict[str, float]
    cache: StageCache
    stages: StageLog
    model_keys: dict[str, str]  # source -> the key of the training that made it (cached sources only)
    index: DatasetIndex

    def make(self, item: PlannedArtifact, model, memo: dict) -> Verification:
        spec = FORMATS[item.format]
        ctx = ExportContext(
            model=model,
            labels=list(self.labels),
            preprocessing=self.preprocessing,
            metadata=self.config.metadata,
            workdir=self.staging.work / f"{item.source}-{item.format}-{item.variant}",
            calibration_images=self.calibration,
            source=item.source,
            options=self.config.export,
            memo=memo,
        )
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        dest = artifact_path(self.staging.bundle, spec, item.variant, item.source, self.config.metadata.name)
        model_key = self.model_keys.get(item.source)
        key = None if model_key is None else artifact_key(self.config, model_key, self.index, item.format, item.variant)
        verification, reused = cached_artifact(
            self.cache, key, dest, self.preprocessing, self.config, lambda: self._export_and_verify(ctx, item, dest)
        )
        self.stages.add(f"artifact {item.name}", key, reused)
        return verification

    def _export_and_verify(self, ctx: ExportContext, item: PlannedArtifact, dest: Path) -> Verification:
        with stage(f"export {item.name}", self.timings), native_output(f"export {item.name}"):
            artifact: Artifact = FORMATS[item.format].load().export(ctx, item.variant, dest)
        with stage(f"verify {item.name}", self.timings):
            return verify_artifact(
                artifact,
                self.test,
                self.test.labels,
                self.labels,
                self.references["float"],
                self.references[item.source],
                self.config.latency.threads,
                self.config.export,
            )


def _reference(name: str, model, test: Photos, preprocessing: Preprocessing, labels) -> Reference:
    probs = predict_photos(model, test, preprocessing)
    return Reference(f"keras:{name}", probs, classification_metrics(probs, test.labels, labels))


def _write_bundle_files(staging: Staging, index: DatasetIndex, manifest: dict) -> None:
    bundle = staging.bundle
    write_split_file(index, bundle / "splits.json")
    write_manifest(bundle / "manifest.json", manifest)
    write_platform_readmes(bundle, manifest)
    zip_platform_folders(bundle)
    write_sha256sums(bundle)  # last in the bundle: it covers every file above, the zips included
    write_markdown_report(staging.root / "report.md", manifest)
    write_html_report(staging.root / REPORT_HTML, manifest)
    write_metrics_json(staging.root / "metrics.json", manifest)


def _group_near_duplicates(index: DatasetIndex, features: np.ndarray, config: BuildConfig) -> DatasetIndex:
    """Join photos whose backbone features are nearly the same (a crop of one shot) into one group, so they land
    in one split; the scan already grouped those with close perceptual hashes."""
    labels = np.array([e.label for e in index.entries])
    pairs, skipped = feature_pairs(features, labels)
    regrouped = index.regrouped(config.split, pairs, "backbone features") if pairs else index
    if skipped:
        names = ", ".join(index.labels[i] for i in skipped)
        regrouped.problems.append(
            f"near-duplicates not searched by features in class(es) {names}: more than {FEATURE_LIMIT} photos each "
            "(perceptual hashes were still compared)"
        )
    return regrouped


def _by_split(index: DatasetIndex, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The train and val rows of features computed for every photo in index order."""
    splits = np.array([e.split for e in index.entries])
    return values[splits == "train"], values[splits == "val"]


def _save_keras_model(model, folder: Path) -> None:
    """The float Keras model, kept beside the bundle (not in it) to re-verify or re-export without retraining."""
    folder.mkdir()
    model.save(folder / "model.keras")


def _log_counts(index: DatasetIndex) -> None:
    counts = index.counts()
    log.info(
        f"{len(index.entries)} images, {len(index.labels)} classes; per class train/val/test: "
        + ", ".join(f"{k} {v['train']}/{v['val']}/{v['test']}" for k, v in counts.items())
    )
    for problem in index.problems:
        log.warning(problem)


def _all_entries(manifest: dict) -> list[dict]:
    return manifest["artifacts"] + manifest["rejected"]


def _result(entry: dict, bundle: Path) -> ArtifactResult:
    return ArtifactResult(
        entry["format"],
        entry["variant"],
        entry.get("source", "float"),
        bundle / entry["path"] if entry["path"] else None,
        entry["bytes"],
        entry["metrics"],
        entry.get("runtime", ""),
        entry.get("rejected_because", []),
    )
