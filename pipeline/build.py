"""`imgpipe build`: scan -> train -> optimize -> export -> verify -> judge -> publish, every stage timed.

After the scan, a build whose key (settings, weights, photos: `reuse.build_key`) an earlier build had is copied
whole from the stage cache, without importing TensorFlow; otherwise `produce` runs the stages, each reusing what
the cache holds of it.

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

from .bundle.staging import REPORT_HTML, OutputFolder, Staging
from .config import BuildConfig
from .core.console import stage
from .core.errors import ConfigError, DatasetError, filesystem_error
from .core.files import prepare_folder, write_text_atomic
from .core.stage_cache import StageCache
from .data.dataset import scan_dataset
from .data.synthetic import embedded_dataset
from .history import record_build
from .plan import PlannedArtifact, plan_artifacts
from .reuse import (
    SCAN_CHECKS,
    WEIGHT_CHECKS,
    StageLog,
    build_key,
    restore_build,
    store_build,
    trained_model_missing,
)
from .settings import RECORD_FILE, recorded_config
from .training.distribute import Distribution, make_distribution
from .training.weights import resolve_backbone

log = logging.getLogger(__name__)
BUNDLE_DIR = "bundle"


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
    cache = StageCache(config.cache_dir / "stages")
    if export_only and not cache.holds_any("train"):  # refused at once; otherwise once the training key is known
        raise trained_model_missing(config, cache)
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
    cache, stages = StageCache(config.cache_dir / "stages"), StageLog()
    # A weights file that does not fit fails here, before the scan; one checked by an earlier build is trusted.
    config.backbone = cache.with_memo(WEIGHT_CHECKS, lambda fitted: resolve_backbone(config.backbone, fitted))
    dataset = config.dataset or embedded_dataset(config.cache_dir)
    timings: dict[str, float] = {}
    with Staging(config.out) as staging:
        with stage("scan", timings):
            index = cache.with_memo(
                SCAN_CHECKS, lambda memo: scan_dataset(dataset, config.split, groups_file=config.groups, memo=memo)
            )
        # Workers of a multi-worker build must all train, in lockstep: none may skip ahead on its own cache.
        key = build_key(config, index) if distribution.name != "multi-worker" else None
        entry = None if key is None else cache.lookup("build", key)
        if entry is not None:
            manifest, predictions = restore_build(entry, staging.root, key)
            log.info(f"unchanged: the photos, the settings and the versions are those of an earlier build ({key})")
        else:
            from .produce import produce  # TensorFlow: only when something is to be computed

            stages.add("build", key, False)
            manifest, predictions = produce(
                config, plan, export_only, distribution, index, staging, cache, stages, timings
            )
        write_text_atomic(staging.root / RECORD_FILE, json.dumps(recorded_config(config), indent=2) + "\n")
        if entry is None and key is not None:
            store_build(cache, key, staging.root, predictions)
        staging.publish()
    result = BuildResult(config.out, manifest, [_result(e, config.out / BUNDLE_DIR) for e in _all_entries(manifest)])
    result.test_predictions = predictions
    result.seconds = time.perf_counter() - started
    record_build(config, result)  # the build history (and MLflow when asked); never fails the build
    return result


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
