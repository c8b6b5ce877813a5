"""What a build ends with: the total time, what to drop into each app (per platform the recommended artifact,
its size and why), and where the report is. The console prints it; report.md and report.html show the same
recommendations."""

from __future__ import annotations

import os
from pathlib import Path

from ...exporters.registry import FORMATS
from ..core.console import format_seconds
from .table import artifact_name, format_change, format_percent

PLATFORMS = {"android": "Android", "ios": "iOS", "onnx": "ONNX"}
STAGE_GROUPS = (("train", ("scan", "train", "optimize")), ("export", ("export",)), ("verify", ("verify", "reference")))


def recommend(manifest: dict) -> dict[str, dict]:
    """Per platform folder, the published artifact to ship and why: the smallest one whose accuracy was measured
    (every published artifact passed the gates, the accuracy budget among them); where no accuracy could be
    measured here (Core ML on Linux), the format's default variant, whose structure was checked."""
    picks = {}
    for folder, title in PLATFORMS.items():
        spec = next((s for s in FORMATS.values() if s.bundle_dir == folder), None)
        published = [a for a in manifest["artifacts"] if spec is not None and a["format"] == spec.name]
        if not published:
            continue
        measured = [a for a in published if a["metrics"].get("accuracy") is not None]
        if measured:
            pick = min(measured, key=lambda a: (a["bytes"], a["metrics"].get("latency_ms_p50") or 0))
            budget = _accuracy_budget(pick)
            largest = max(measured, key=lambda a: a["bytes"])
            within = f" (accuracy within {budget} of the float model)" if budget else ""
            why = (
                f"the smallest of the {len(measured)} {spec.name} artifacts that passed the gates{within}"
                if len(measured) > 1
                else f"the only {spec.name} artifact measured; it passed the gates{within}"
            )
            if pick is not largest and pick["bytes"]:
                why += f"; {largest['bytes'] / pick['bytes']:.1f}x smaller than {artifact_name(largest)}"
        else:
            default = [a for a in published if a["variant"] == spec.default_variant and a.get("source") == "float"]
            pick = (default or sorted(published, key=lambda a: a["bytes"]))[0]
            checks = pick.get("structural_checks") or {}
            why = (
                f"accuracy not measured here: {pick.get('metrics_unavailable_reason', 'no runtime')}; "
                f"{sum(checks.values())}/{len(checks)} structural checks passed"
            )
        picks[folder] = {
            "platform": title,
            "artifact": artifact_name(pick),
            "path": pick["path"],
            "bytes": pick["bytes"],
            "accuracy": pick["metrics"].get("accuracy"),
            "accuracy_drop": pick["metrics"].get("accuracy_drop"),
            "why": why,
            "others": [a["path"] for a in published if a is not pick],
        }
    return picks


def _accuracy_budget(entry: dict) -> str | None:
    limit = ((entry.get("gates") or {}).get("limits") or {}).get("max_accuracy_drop")
    return None if limit is None else f"{100 * limit:g} pt"


def stage_groups(timings: dict[str, float]) -> dict[str, float]:
    """Stage timings summed into train / export / verify / other (sub-timings like `train.features` skipped)."""
    groups = {name: 0.0 for name, _ in STAGE_GROUPS}
    groups["other"] = 0.0
    for stage, seconds in timings.items():
        if "." in stage.split(" ")[0]:
            continue
        group = next((g for g, prefixes in STAGE_GROUPS if stage.split(" ")[0] in prefixes), "other")
        groups[group] += seconds
    return groups


def build_summary(manifest: dict, out: Path, seconds: float | None) -> dict:
    bundle = Path(out) / "bundle"
    return {
        "seconds": seconds,
        "stages": stage_groups(manifest.get("timings") or {}),
        "bundle": str(bundle),
        "report": str(Path(out) / "report.html"),
        "platforms": {
            folder: {**pick, "file": _shown(bundle / pick["path"])} for folder, pick in recommend(manifest).items()
        },
        "rejected": [artifact_name(e) for e in manifest.get("rejected", [])],
    }


def format_summary(summary: dict) -> list[str]:
    lines = []
    if summary["seconds"] is not None:
        stages = summary["stages"]
        other = max(0.0, summary["seconds"] - sum(v for k, v in stages.items() if k != "other"))
        parts = [f"{name} {format_seconds(stages[name])}" for name in ("train", "export", "verify") if stages[name]]
        lines.append(
            f"Built in {format_seconds(summary['seconds'])} ({', '.join(parts + [f'other {format_seconds(other)}'])})."
        )
    picks = summary["platforms"]
    if picks:
        lines.append("Drop into your app:")
        width = max(len(p["platform"]) for p in picks.values())
        for folder, pick in picks.items():
            accuracy = (
                f", {format_percent(pick['accuracy'])} test accuracy ({format_change(pick['accuracy_drop'])} vs float)"
                if pick["accuracy"] is not None
                else ""
            )
            lines.append(f"  {pick['platform']:<{width}}  {pick['file']} ({format_size(pick['bytes'])}{accuracy})")
            lines.append(f"  {'':<{width}}  why: {pick['why']}")
        lines.append("  Labels and an integration snippet sit beside each file (labels.txt, README.md).")
    if summary["rejected"]:
        lines.append(f"Not published (failed a gate): {', '.join(summary['rejected'])}.")
    lines.append(f"Report: {_shown(Path(summary['report']))} (and report.md)")
    return lines


def _shown(path: Path) -> str:
    """A path relative to the working folder when it is inside it, so the line stays short and clickable."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


def format_size(value: int | None) -> str:
    if value is None:
        return "?"
    return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"
