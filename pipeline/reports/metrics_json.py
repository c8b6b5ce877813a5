"""metrics.json: every artifact's numbers, published or rejected, for dashboards and CI checks."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.files import write_text_atomic


def write_metrics_json(path: Path, manifest: dict) -> None:
    keys = (
        "imgpipe_version",
        "created",
        "model",
        "labels",
        "reference",
        "artifacts",
        "rejected",
        "optimizations",
        "timings",
        "environment",
        "libraries",
    )
    write_text_atomic(path, json.dumps({k: manifest.get(k) for k in keys}, indent=2) + "\n")
