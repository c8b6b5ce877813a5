"""`imgpipe history`: the recorded builds, newest first, one line each."""

from __future__ import annotations

from pathlib import Path

from ..core.console import format_seconds
from ..reports.table import format_percent, format_table
from .compare import format_when

COLUMNS = ("build", "when", "dataset", "backbone", "float acc", "artifacts", "smallest", "time", "bundle", "folder")


def format_history(builds: list[dict], where: Path) -> str:
    if not builds:
        return f"no builds recorded in {where} yet"
    rows = [_row(b) for b in builds]
    return format_table(rows, COLUMNS) + f"\n\n{len(builds)} build(s) shown from {where}"


def _row(build: dict) -> list[str]:
    backbone = build["config"].get("backbone") or {}
    published = [a for a in build["artifacts"] if a["published"]]
    rejected = len(build["artifacts"]) - len(published)
    smallest = min(published, key=lambda a: a["bytes"] or 0, default=None)
    return [
        f"#{build['id']}",
        format_when(build["created"]),
        f"{build['dataset']['name']} ({build['dataset']['images']} img)",
        f"{backbone.get('arch', '?')} {backbone.get('alpha', '?')} @{backbone.get('image_size', '?')}",
        format_percent(build["reference"]["accuracy"]),
        f"{len(published)}" + (f" (+{rejected} rejected)" if rejected else ""),
        f"{smallest['name']} {smallest['bytes'] / 1e6:.2f} MB" if smallest and smallest["bytes"] else "",
        format_seconds(build["seconds"]) if build["seconds"] is not None else "",
        (build["bundle_sha256"] or "")[:12],
        build["out"] or "",
    ]
