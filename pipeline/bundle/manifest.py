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
    "ece",
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
    mistakes: dict,
    training: dict,
    optimizations: dict,
    calibration: dict,
    timings: dict,
    stages: dict,
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
        # the float model's wrong test photos, most confident first
        "reference": {"format": "keras", "variant": "float", "metrics": reference, "mistakes": mistakes},
        "training": training,
        "optimizations": optimizations,
        "calibration": calibration,  # temperature folded into the head, ECE, the reliability diagram's bins
        "timings": timings,
        "stages": stages,  # per stage: its cache key and whether this build reused it
        "artifacts": artifacts,
        "rejected": rejected,
    }


def write_manifest(path: Path, manifest: dict) -> None:
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")


MANIFEST_MAX_BYTES = 64 << 20  # a real manifest is tens of kB; a crafted one must not fill the memory


def read_manifest(bundle: Path) -> dict:
    """The manifest of a bundle folder (or the manifest file itself), checked to be imgpipe's: valid JSON of a
    readable schema, with every field `predict`, `evaluate` and `inspect` read of the type they expect. Anything
    else, a zip or a model file given instead of the folder included, is one BundleError line."""
    bundle = Path(bundle)
    path = bundle / MANIFEST_NAME if bundle.is_dir() else bundle
    if bundle.is_file() and bundle.name != MANIFEST_NAME:
        raise BundleError(f"{bundle}: {_what_file(bundle)}, not a bundle; pass the bundle folder (OUT/bundle)")
    if bundle.is_dir() and bundle.suffix == ".mlpackage":
        raise BundleError(
            f"{bundle}: a Core ML package, not a bundle; pass the bundle folder (OUT/bundle), or give the package "
            "to `imgpipe predict`"
        )
    if not path.is_file():
        raise BundleError(f"{path}: no manifest.json; pass a bundle folder written by `imgpipe build` (OUT/bundle)")
    if path.stat().st_size > MANIFEST_MAX_BYTES:
        raise BundleError(
            f"{path}: {path.stat().st_size:,} bytes, too large for an imgpipe manifest; rebuild the bundle"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not a text file, so not an imgpipe manifest; rebuild the bundle") from None
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: manifest is not valid JSON ({e}); rebuild the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") not in READABLE_SCHEMAS:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise BundleError(
            f"{path}: manifest schema_version {version!r} is not one of {READABLE_SCHEMAS}; rebuild the bundle "
            f"with this imgpipe ({__version__})"
        )
    problem = _shape_problem(manifest)
    if problem is not None:
        raise BundleError(f"{path}: {problem}; the manifest was altered or is not imgpipe's: rebuild the bundle")
    return manifest


def bundle_folder(path: Path) -> Path:
    """The bundle a command was given: the folder, or the folder of a manifest.json given instead."""
    path = Path(path)
    return path.parent if path.is_file() and path.name == MANIFEST_NAME else path


def _what_file(path: Path) -> str:
    """What a file given instead of a bundle folder is, from its first bytes and its suffix."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        head = b""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (android.zip and ios.zip each hold one platform folder of a bundle)"
    if head[4:8] == b"TFL3" or path.suffix == ".tflite":
        return "a TFLite model (`imgpipe predict` takes a model file)"
    if path.suffix == ".onnx":
        return "an ONNX model (`imgpipe predict` takes a model file)"
    return "a file"


_NUMBER = (int, float)


def _shape_problem(m: dict) -> str | None:
    """The first field a reader would trip over, described, or None."""
    labels = m.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels):
        return "'labels' is not a list of class names"
    pre = m.get("preprocessing")
    if not isinstance(pre, dict):
        return "'preprocessing' is not an object"
    if not isinstance(pre.get("image_size"), int) or isinstance(pre.get("image_size"), bool) or pre["image_size"] < 1:
        return "'preprocessing.image_size' is not a positive whole number"
    for key in ("mean", "std"):
        values = pre.get(key)
        if not isinstance(values, list) or len(values) != 3 or not all(_is_number(v) for v in values):
            return f"'preprocessing.{key}' is not three numbers"
    if any(v == 0 for v in pre["std"]):
        return "'preprocessing.std' holds a zero"
    if not isinstance(m.get("model", {}), dict):
        return "'model' is not an object"
    for key in ("artifacts", "rejected"):
        entries = m.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            return f"'{key}' is not a list of objects"
    for i, e in enumerate(m["artifacts"]):
        where = f"'artifacts[{i}]"
        for field in ("format", "variant", "path", "sha256"):
            if not isinstance(e.get(field), str):
                return f"{where}.{field}' is not a string"
        if not isinstance(e.get("source", "float"), str):
            return f"{where}.source' is not a string"
    for i, e in enumerate(m["artifacts"] + m.get("rejected", [])):
        where = f"'artifacts[{i}]" if i < len(m["artifacts"]) else f"'rejected[{i - len(m['artifacts'])}]"
        metrics = e.get("metrics", {})
        if not isinstance(metrics, dict):
            return f"{where}.metrics' is not an object"
        for key in METRIC_KEYS[:8]:  # the numbers the tables show
            if metrics.get(key) is not None and not _is_number(metrics[key]):
                return f"{where}.metrics.{key}' is not a number"
        for key in ("bytes", "gzip_bytes"):
            if e.get(key) is not None and not _is_number(e[key]):
                return f"{where}.{key}' is not a number"
        gates = e.get("gates")
        if gates is not None and not (
            isinstance(gates, dict)
            and isinstance(gates.get("passed"), bool)
            and isinstance(gates.get("checks", []), list)
            and all(isinstance(c, dict) and isinstance(c.get("gate"), str) for c in gates.get("checks", []))
        ):
            return f"{where}.gates' is not a gate result (passed, checks)"
        because = e.get("rejected_because", [])
        if not isinstance(because, list) or not all(isinstance(v, str) for v in because):
            return f"{where}.rejected_because' is not a list of strings"
    return None


def _is_number(v) -> bool:
    return isinstance(v, _NUMBER) and not isinstance(v, bool)
