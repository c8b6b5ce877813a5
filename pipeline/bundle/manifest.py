"""manifest.json: the machine-readable record of a bundle, and the only thing `evaluate`, `predict` and
`inspect` need to use one."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path

from ..core.errors import BundleError
from ..core.files import write_text_atomic
from ..core.version import __version__, library_versions
from ..verify.gates import GateResult
from ..verify.verify import Verification

# 2: `runtime` names what measured each artifact, `parity` and `gates` per artifact, paths relative (no machine
# paths in a bundle). Readers accept 1 as well: the fields they use did not change.
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
MANIFEST_NAME = "manifest.json"


def environment() -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu": _cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
    }


# The instruction-set features that decide which kernels a runtime can use (int8 dot products, wide vectors):
# latency numbers are only comparable between machines that share them.
SPEED_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "asimd",
    "asimddp",
    "i8mm",
    "sve",
)


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return [f for f in SPEED_FLAGS if f in flags]


def _cpu_model() -> str | None:
    """The CPU's marketing name: latency numbers mean little without it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


METRIC_KEYS = (
    "accuracy",
    "accuracy_drop",
    "macro_f1",
    "log_loss",
    "agreement",
    "max_abs_prob_diff",
    "latency_ms_p50",
    "latency_ms_p95",
    "latency_ms_p10",
    "latency_cpu_ms_p50",
    "latency_runs",
    "per_class_accuracy",
    "confusion_matrix",
    "samples",
)


def artifact_entry(verification: Verification, gates: GateResult, bundle_root: Path, published: bool) -> dict:
    a = verification.artifact
    entry = {
        "format": a.format,
        "variant": a.variant,
        "runtime": verification.runtime,  # what measured the metrics
        "source": a.source,
        "path": a.path.relative_to(bundle_root).as_posix() if published else None,
        "bytes": a.bytes,
        "gzip_bytes": a.gzip_bytes,
        "sha256": a.sha256,
        "input_quantization": a.input_quantization,
        "output_quantization": a.output_quantization,
        "details": a.details,
        "metrics": {k: verification.metrics.get(k) for k in METRIC_KEYS},
        "gates": gates.to_dict(),
    }
    if verification.parity is not None:
        entry["parity"] = verification.parity
    if verification.unavailable_reason:
        entry["metrics_unavailable_reason"] = verification.unavailable_reason
    if verification.metrics.get("latency_unavailable_reason"):
        entry["latency_unavailable_reason"] = verification.metrics["latency_unavailable_reason"]
    if verification.structural_checks:
        entry["structural_checks"] = verification.structural_checks
    if not gates.passed:
        entry["rejected_because"] = gates.reasons()
    return entry


def build_manifest(
    *,
    config: dict,
    model: dict,
    labels: list[str],
    preprocessing: dict,
    dataset: dict,
    reference: dict,
    training: dict,
    optimizations: dict,
    timings: dict,
    artifacts: list[dict],
    rejected: list[dict],
) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "imgpipe_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "libraries": library_versions(),
        "environment": environment(),
        "model": model,
        "labels": list(labels),
        "preprocessing": preprocessing,
        "dataset": dataset,
        "config": config,
        "reference": {"format": "keras", "variant": "float", "metrics": reference},
        "training": training,
        "optimizations": optimizations,
        "timings": timings,
        "artifacts": artifacts,
        "rejected": rejected,
    }


def write_manifest(path: Path, manifest: dict) -> None:
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")


def read_manifest(bundle: Path) -> dict:
    bundle = Path(bundle)
    path = bundle / MANIFEST_NAME if bundle.is_dir() else bundle
    if not path.is_file():
        raise BundleError(f"{path}: no manifest.json; pass a bundle folder written by `imgpipe build` (OUT/bundle)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: manifest is not valid JSON ({e}); rebuild the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") not in READABLE_SCHEMAS:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise BundleError(
            f"{path}: manifest schema_version {version!r} is not one of {READABLE_SCHEMAS}; rebuild the bundle "
            f"with this imgpipe ({__version__})"
        )
    return manifest
