"""manifest.json: the machine-readable record of a bundle, and the only thing `evaluate`, `predict` and
`inspect` need to use one."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata as importlib_metadata
from pathlib import Path

from imgpipe import __version__
from imgpipe.errors import BundleError
from imgpipe.exporters.registry import get_format

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
LIBRARIES = (
    "tensorflow",
    "tf_keras",
    "tensorflow-model-optimization",
    "ai-edge-litert",
    "onnx",
    "tf2onnx",
    "onnxruntime",
    "coremltools",
    "numpy",
    "pillow",
)


def library_versions() -> dict[str, str | None]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }


def _cpu_model() -> str | None:
    """The CPU's marketing name: latency numbers mean little without it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def artifact_entry(verification, bundle_root: Path) -> dict:
    a = verification.artifact
    m = verification.metrics
    metrics = {
        k: m.get(k)
        for k in (
            "accuracy",
            "accuracy_drop",
            "macro_f1",
            "log_loss",
            "agreement",
            "max_abs_prob_diff",
            "latency_ms_p50",
            "latency_ms_p95",
            "per_class_accuracy",
            "confusion_matrix",
            "samples",
        )
    }
    entry = {
        "format": a.format,
        "variant": a.variant,
        "runtime": get_format(a.format).runtime,  # what measured the metrics
        "source": a.source,
        "path": a.path.relative_to(bundle_root).as_posix(),
        "bytes": a.bytes,
        "gzip_bytes": m.get("gzip_bytes"),
        "sha256": a.sha256,
        "input_quantization": a.input_quantization,
        "output_quantization": a.output_quantization,
        "details": a.details,
        "metrics": metrics,
    }
    if verification.unavailable_reason:
        entry["metrics_unavailable_reason"] = verification.unavailable_reason
    if verification.structural_checks:
        entry["structural_checks"] = verification.structural_checks
    return entry


def write_manifest(path: Path, manifest: dict) -> None:
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_manifest(bundle: Path) -> dict:
    bundle = Path(bundle)
    path = bundle / MANIFEST_NAME if bundle.is_dir() else bundle
    if not path.is_file():
        raise BundleError(f"{path}: no manifest.json; pass a bundle folder written by `imgpipe build` (OUT/bundle)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(
            f"{path}: manifest is not valid JSON ({e.msg} at line {e.lineno}); rebuild the bundle"
        ) from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(
            f"{path}: manifest schema_version {manifest.get('schema_version')!r} is not "
            f"{SCHEMA_VERSION}; rebuild the bundle with this imgpipe ({__version__})"
        )
    return manifest
