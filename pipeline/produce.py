"""The stages of a build that need TensorFlow: features, training, calibration, the optimized models, and every
artifact's export and verification, then the gates and the bundle's files. `build` runs them only when the stage
cache does not already hold the whole build."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..exporters.base import Artifact, ExportContext
from ..exporters.registry import FORMATS
from .bundle.checksums import write_sha256sums, zip_platform_folders
from .bundle.layout import artifact_path, remove_artifact, write_labels
from .bundle.manifest import write_manifest
from .bundle.readmes import write_platform_readmes
from .bundle.record import calibration_report, manifest_of, test_predictions
from .bundle.staging import REPORT_HTML, Staging
from .config import BuildConfig
from .core.console import native_output, progress_bar, stage
from .core.preprocessing import Preprocessing
from .core.stage_cache import StageCache
from .data.dataset import DatasetIndex, write_split_file
from .data.near_duplicates import FEATURE_LIMIT, feature_pairs
from .data.photos import Photos
from .plan import PlannedArtifact
from .reports.html import write_html_report
from .reports.markdown import write_markdown_report
from .reports.metrics_json import write_metrics_json
from .reuse import (
    StageLog,
    artifact_key,
    cached_artifact,
    cached_optimization,
    cached_reference,
    cached_training,
    optimize_key,
    reference_key,
    train_key,
    trained_model_missing,
)
from .training.distribute import Distribution, local_copy
from .training.fit import predict_photos
from .training.train import backbone_features, new_classifier, train_classifier
from .verify.gates import judge
from .verify.latency import add_latencies
from .verify.metrics import classification_metrics
from .verify.temperature import calibrate
from .verify.verify import Reference, Verification, verify_artifact

log = logging.getLogger(__name__)


def produce(
    config: BuildConfig,
    plan: list[PlannedArtifact],
    export_only: bool,
    distribution: Distribution,
    index: DatasetIndex,
    staging: Staging,
    cache: StageCache,
    stages: StageLog,
    timings: dict[str, float],
) -> tuple[dict, dict]:
    """Everything after the scan, into `staging`: returns (the manifest, the test predictions the history
    compares)."""
    dataset = index.root
    preprocessing = Preprocessing(config.backbone.image_size)
    model = new_classifier(config.backbone, config.train, len(index.labels), distribution)
    features = None
    if config.backbone.pretrained:
        with stage("features", timings):
            everything = index.photos(None, config.backbone.image_size, staging.work)
            # The training photos' augmented views too, from the pixels decoded for their own features: decoding
            # them again later cost more than the views' backbone passes (3.7 against 2.7 ms a photo, 2 cores).
            features = backbone_features(
                model, everything, config.backbone, preprocessing, config.cache_dir / "features", distribution,
                config.train.feature_views, np.array([e.split == "train" for e in index.entries]),
            )  # fmt: skip
        if features.conversion_seconds:
            timings["features.litert_conversion"] = round(features.conversion_seconds, 3)
        index = _group_near_duplicates(index, features.values[: len(index.entries)], config)
    index.check_splits(config.split)
    _log_counts(index)
    data = index.training_data(config.backbone.image_size, staging.work)
    head_features = None
    if features is not None:
        train_rows = None  # the photos' own train rows
        if config.train.feature_views:
            with stage("augmented features", timings):
                # Read back from the cache; computed here only for photos the near-duplicate search moved into train.
                views = backbone_features(
                    model, data.train, config.backbone, preprocessing, config.cache_dir / "features", distribution,
                    config.train.feature_views,
                )  # fmt: skip
            features.computed += views.computed
            train_rows = views.values
        head_features = _head_features(index, features.values[: len(index.entries)], train_rows)
        features.values = None  # the rows above are copies; the whole array (512 MB at 100,000 photos) can go
    trained_key = train_key(config, preprocessing, index)
    # Workers of a multi-worker build must all train, in lockstep: one that found the model in its cache would
    # leave the others waiting.
    reusable = cache if distribution.name != "multi-worker" else StageCache(staging.work / "stages")
    if export_only and cache.lookup("train", trained_key) is None:
        raise trained_model_missing(config, cache)
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
    model_keys = {"float": float_key}  # what each source model was made from: the keys of its artifacts
    logs = staging.root / "logs"
    for name in config.optimize:
        from .optimize.sources import optimized_model, optimized_structure

        model_keys[name] = optimize_key(config, float_key, name, index)
        with stage(f"optimize {name}", timings):
            (models[name], optimizations[name]), reused = cached_optimization(
                reusable,
                model_keys[name],
                lambda name=name: optimized_structure(name, trained.model),
                lambda name=name: optimized_model(name, trained.model, data, preprocessing, config, logs),
            )
        stages.add(f"optimize {name}", model_keys[name], reused)
    with stage("reference", timings):
        references = {}
        for name, m in models.items():
            key = reference_key(model_keys[name], index)
            references[name], reused = cached_reference(
                cache, key, lambda name=name, m=m: _reference(name, m, test, preprocessing, index.labels)
            )
            stages.add("reference" if name == "float" else f"reference {name}", key, reused)
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
        model_keys,
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
    return manifest, test_predictions(index, references["float"], verifications)


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
    model_keys: dict[str, str]  # source -> the key of the stage that made it (training, pruning, QAT)
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


def _head_features(
    index: DatasetIndex, values: np.ndarray, train_rows: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The head's train and val rows, from features computed for every photo in index order; `train_rows` (the
    training photos and their augmented views), when given, are the train rows."""
    splits = np.array([e.split for e in index.entries])
    train = values[splits == "train"] if train_rows is None else train_rows
    return train, values[splits == "val"]


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
