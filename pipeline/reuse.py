"""The build stages a rebuild can take from the stage cache: training, the Keras reference, and each artifact's
export with its verification.

Each key is a digest of exactly what the stage reads (see `core.stage_cache`). Training reads the backbone (its
weights' hash), the training settings, the labels and the photos of the train and val splits (file hashes and
labels), so adding photos to the dataset retrains, but changing targets, variants, gates or export options does
not. An artifact reads the trained model (the training key), its format, variant and export options, the
metadata it embeds, the calibration photos (the train split) and the test split it is verified on. Latency is
measured again in every build that computes anything: it is a measurement of this machine now, not a property
of the artifact.

A build whose key (every setting that changes its outputs, the weights and every photo) is that of an earlier
build is taken whole from the cache without importing TensorFlow: its manifest says every stage was reused, and
its latency is the one measured then.

Models from `--optimize` (pruning, QAT) read the float model, their settings and the train and val photos; their
references and artifacts are keyed by that like the float model's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..exporters.base import Artifact
from ..exporters.registry import open_runner
from .bundle.checksums import write_sha256sums
from .bundle.manifest import write_manifest
from .bundle.staging import PUBLISHED_ENTRIES
from .config import BuildConfig
from .core.errors import ConfigError
from .core.preprocessing import Preprocessing
from .core.stage_cache import StageCache, stage_key
from .data.dataset import DatasetIndex
from .settings import recorded_config
from .training.features import model_key, weights_fingerprint
from .training.train import TrainResult
from .verify.verify import Reference, Verification

log = logging.getLogger(__name__)
WEIGHTS, HISTORY, PROBS, RECORD = "model.weights.h5", "history.json", "probs.npy", "artifact.json"
PREDICTIONS = "test-predictions.json"
CHECKPOINT, REPORT = "checkpoint", "report.json"  # an optimized model's weights (TensorFlow checkpoint), its report
SCAN_CHECKS, WEIGHT_CHECKS = "scan-checks", "weight-checks"  # memos (StageCache.with_memo)
# Settings that change where a build writes or logs, not what it computes.
NOT_COMPUTED = ("cache_dir", "history", "record_history", "mlflow_uri", "mlflow_experiment")


@dataclass
class StageLog:
    """Which stages of this build were computed and which were taken from the cache: the manifest's `stages`."""

    entries: dict[str, dict] = field(default_factory=dict)

    def add(self, name: str, key: str | None, reused: bool) -> None:
        self.entries[name] = {"key": key, "reused": reused}
        if reused:
            log.info(f"{name}: reused (its inputs are unchanged)")


def build_key(config: BuildConfig, index: DatasetIndex) -> str:
    """The whole build's key: every setting that changes what it computes, the weights file's content and every
    photo with its label, split and group. A build with the same key would make the same bundle."""
    settings = {k: v for k, v in recorded_config(config).items() if k not in NOT_COMPUTED}
    photos = hashlib.sha256()
    for e in index.entries:
        photos.update(f"{e.relpath}\0{e.sha256}\0{e.label}\0{e.split}\0{e.group}\n".encode())
    return stage_key(
        "build",
        settings=settings,
        weights=weights_fingerprint(config.backbone),
        labels=index.labels,
        photos=photos.hexdigest(),
        problems=index.problems,
    )


def store_build(cache: StageCache, key: str, root: Path, predictions: dict) -> None:
    """Keep a finished build's published files (copies: OUT may be edited) and its test predictions."""

    def write(folder: Path) -> None:
        for name in PUBLISHED_ENTRIES:
            if (root / name).exists():
                _copy(root / name, folder / name)
        (folder / PREDICTIONS).write_text(json.dumps(predictions))

    _store(cache, "build", key, write)


def restore_build(entry: Path, root: Path, key: str) -> tuple[dict, dict]:
    """An unchanged build's files copied into `root` (the staging folder), its manifest saying that every stage
    was reused, with the checksums made again: (the manifest, the test predictions). The latency it reports is
    the one measured when the build was made."""
    for name in PUBLISHED_ENTRIES:
        if (entry / name).exists():
            _copy(entry / name, root / name)
    manifest_path = root / "bundle" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["stages"] = {name: {**s, "reused": True} for name, s in manifest.get("stages", {}).items()}
    manifest["stages"]["build"] = {"key": key, "reused": True}
    write_manifest(manifest_path, manifest)
    write_sha256sums(root / "bundle")
    return manifest, json.loads((entry / PREDICTIONS).read_text())


def trained_model_missing(config: BuildConfig, cache: StageCache) -> ConfigError:
    """`imgpipe export`'s refusal when the build's trained model is not in the stage cache."""
    return ConfigError(
        f"{config.out}: this build's trained model is not in the cache {cache.root} (the photos, the backbone or "
        "the training settings changed, or the cache was cleared); run imgpipe build"
    )


def train_key(config: BuildConfig, preprocessing: Preprocessing, index: DatasetIndex) -> str:
    return stage_key(
        "train",
        backbone=model_key(config.backbone, preprocessing),
        spec=asdict(config.backbone),
        train=asdict(config.train),
        labels=index.labels,
        train_photos=index.split_digest("train"),
        val_photos=index.split_digest("val"),
    )


def artifact_key(config: BuildConfig, model: str, index: DatasetIndex, fmt: str, variant: str) -> str:
    return stage_key(
        "artifact",
        model=model,
        format=fmt,
        variant=variant,
        export=asdict(config.export),
        metadata=asdict(config.metadata),
        calibration_photos=index.split_digest("train"),
        test_photos=index.split_digest("test"),
        threads=config.latency.threads,
    )


def optimize_key(config: BuildConfig, model: str, name: str, index: DatasetIndex) -> str:
    """A pruned or quantization-aware model reads the float model, its own settings and the train and val photos
    it fine-tunes on."""
    return stage_key(
        "optimize",
        model=model,
        optimization=name,
        settings=asdict(getattr(config, name)),
        train_photos=index.split_digest("train"),
        val_photos=index.split_digest("val"),
    )


def cached_optimization(cache: StageCache, key: str, structure, compute) -> tuple[tuple[object, dict], bool]:
    """((the optimized model, its report), whether it came from the cache). A hit loads the weights into
    `structure()`, an untrained model of the same structure (TensorFlow's object-based checkpoint: it matches
    tfmot's wrapper variables by their place in the model, not by their order)."""
    entry = cache.lookup("optimize", key)
    if entry is not None:
        model = structure()
        model.load_weights(str(entry / CHECKPOINT)).expect_partial()
        return (model, json.loads((entry / REPORT).read_text())), True
    model, report = compute()

    def write(folder: Path) -> None:
        model.save_weights(str(folder / CHECKPOINT))
        (folder / REPORT).write_text(json.dumps(report, default=_plain))

    _store(cache, "optimize", key, write)
    return (model, report), False


def reference_key(model: str, index: DatasetIndex) -> str:
    return stage_key("reference", model=model, test_photos=index.split_digest("test"))


def cached_training(cache: StageCache, key: str, model, train) -> tuple[TrainResult, bool]:
    """(the trained model, whether it came from the cache). `train()` runs only on a miss; a hit loads the
    weights into `model`, the untrained classifier of the same architecture."""
    entry = cache.lookup("train", key)
    if entry is not None:
        model.load_weights(str(entry / WEIGHTS))
        recorded = json.loads((entry / HISTORY).read_text())
        return TrainResult(
            model, recorded["history"], recorded["timings"], recorded.get("val_accuracy", {}), recorded.get("head_l2")
        ), True
    result = train()

    def write(folder: Path) -> None:
        result.model.save_weights(str(folder / WEIGHTS))
        recorded = {
            "history": result.history,
            "timings": result.timings,
            "val_accuracy": result.val_accuracy,
            "head_l2": result.head_l2,
        }
        (folder / HISTORY).write_text(json.dumps(recorded))

    _store(cache, "train", key, write)
    return result, False


def cached_reference(cache: StageCache, key: str, compute) -> tuple[Reference, bool]:
    entry = cache.lookup("reference", key)
    if entry is not None:
        recorded = json.loads((entry / RECORD).read_text())
        return Reference(recorded["name"], np.load(entry / PROBS), recorded["metrics"]), True
    reference = compute()

    def write(folder: Path) -> None:
        np.save(folder / PROBS, reference.probs)
        (folder / RECORD).write_text(json.dumps({"name": reference.name, "metrics": reference.metrics}, default=_plain))

    _store(cache, "reference", key, write)
    return reference, False


def cached_artifact(
    cache: StageCache, key: str | None, dest: Path, preprocessing: Preprocessing, config: BuildConfig, make
) -> tuple[Verification, bool]:
    """(the exported and verified artifact at `dest`, whether it came from the cache). On a hit the artifact's
    bytes are copied to `dest` and a runner is opened for the latency stage; `make()` runs only on a miss."""
    entry = None if key is None else cache.lookup("artifact", key)
    if entry is not None:
        recorded = json.loads((entry / RECORD).read_text())
        _copy(entry / recorded["artifact"]["file"], dest)
        return _verification(recorded, dest, preprocessing, config), True
    verification = make()
    if key is not None:

        def write(folder: Path) -> None:
            artifact = verification.artifact
            _copy(artifact.path, folder / artifact.path.name)
            (folder / RECORD).write_text(json.dumps(_record(verification), default=_plain))

        _store(cache, "artifact", key, write)
    return verification, False


def _record(v: Verification) -> dict:
    a = v.artifact
    metrics = {k: val for k, val in v.metrics.items() if not k.startswith("latency_ms")}
    return {
        "artifact": {
            "file": a.path.name,
            "format": a.format,
            "variant": a.variant,
            "source": a.source,
            "labels": a.labels,
            "input_quantization": a.input_quantization,
            "output_quantization": a.output_quantization,
            "details": a.details,
        },
        "metrics": metrics,
        "runtime": v.runtime,
        "unavailable_reason": v.unavailable_reason,
        "structural_checks": v.structural_checks,
        "parity": v.parity,
        "predictions": v.predictions,
    }


def _verification(recorded: dict, path: Path, preprocessing: Preprocessing, config: BuildConfig) -> Verification:
    a = recorded["artifact"]
    artifact = Artifact(
        a["format"],
        a["variant"],
        path,
        a["labels"],
        preprocessing,
        a["source"],
        a["input_quantization"],
        a["output_quantization"],
        a["details"],
    )
    artifact.bytes, artifact.gzip_bytes, artifact.sha256  # read now: a gate may remove the file before the manifest
    metrics = {**recorded["metrics"], "latency_ms_p50": None, "latency_ms_p95": None}
    runner = None
    if recorded["unavailable_reason"] is None:
        runner = open_runner(a["format"], path, preprocessing, config.latency.threads, config.export)
    return Verification(
        artifact,
        metrics,
        recorded["runtime"],
        recorded["unavailable_reason"],
        recorded["structural_checks"],
        recorded["parity"],
        runner,
        recorded["predictions"],
    )


def _store(cache: StageCache, stage: str, key: str, write) -> None:
    """Keep a stage's outputs; a cache that cannot be written (a full disk, a permission) costs only the reuse."""
    try:
        with cache.store(stage, key) as folder:
            write(folder)
    except OSError as e:
        log.warning(f"{cache.root / stage}: could not keep this {stage} for later builds ({e.strerror or e})")


def _copy(source: Path, dest: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)  # the staging folder's bundle exists, empty
    else:
        shutil.copy2(source, dest)


def _plain(value):
    """numpy scalars and arrays as JSON numbers and lists."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
