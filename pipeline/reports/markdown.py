"""report.md: the build's tables in Markdown, readable on GitHub and in a CI job summary."""

from __future__ import annotations

from pathlib import Path

from ..core.files import write_text_atomic
from .summary import format_size, recommend
from .table import (
    MISTAKE_COLUMNS,
    accuracy_interval_note,
    artifact_rows,
    format_change,
    format_percent,
    latency_note,
    markdown_table,
    reference_mistakes,
    unavailable_notes,
)


def write_markdown_report(path: Path, manifest: dict) -> None:
    entries = manifest["artifacts"] + manifest.get("rejected", [])
    ds = manifest["dataset"]
    cfg = manifest["config"]
    keras_metrics = manifest["reference"]["metrics"]
    lines = [
        f"# imgpipe build report: {manifest['model']['name']}",
        "",
        f"imgpipe {manifest['imgpipe_version']}, built {manifest['created']}.",
        "",
    ]
    picks = recommend(manifest)
    if picks:
        lines += [
            "## What to ship",
            "",
            markdown_table(
                [
                    [p["platform"], f"`{p['path']}`", format_size(p["bytes"]), format_percent(p["accuracy"]), p["why"]]
                    for p in picks.values()
                ],
                ("platform", "file (in bundle/)", "size", "accuracy", "why this one"),
            ),
            "",
        ]
    lines += [
        "## Artifacts",
        "",
        f"Measured on the test split ({keras_metrics.get('samples')} images) with each format's own runtime; "
        "agreement and max|Δp| compare with the float Keras model. " + latency_note(manifest),
        "",
        markdown_table(artifact_rows(entries, keras_metrics)),
        "",
    ]
    lines += [f"- {n}" for n in unavailable_notes(entries)]
    lines += [
        "",
        "## Dataset",
        "",
        f"- folder: `{ds['root']}`",
        f"- digest: `{ds['digest']}`",
        f"- {ds['images']} images, {ds['classes']} classes",
        "",
        "| class | train | val | test |",
        "|---|---|---|---|",
    ]
    lines += [f"| {label} | {c['train']} | {c['val']} | {c['test']} |" for label, c in ds["counts"].items()]
    if ds["problems"]:
        lines += ["", "Problems found:"] + [f"- {p}" for p in ds["problems"]]
    lines += ["", "## Float model on the test split", ""]
    interval = accuracy_interval_note(keras_metrics)
    if interval:
        lines += [interval, ""]
    lines += ["| class | accuracy |", "|---|---|"]
    lines += [f"| {k} | {format_percent(v)} |" for k, v in keras_metrics["per_class_accuracy"].items()]
    lines += [
        "",
        "Confusion matrix (rows: true class, columns: predicted):",
        "",
        "| | " + " | ".join(manifest["labels"]) + " |",
        "|---|" + "---|" * len(manifest["labels"]),
    ]
    for label, row in zip(manifest["labels"], keras_metrics["confusion_matrix"]):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    mistakes = reference_mistakes(manifest)
    if mistakes:
        rows, caption = mistakes
        lines += [
            "",
            f"{caption}:",
            "",
            markdown_table([[f"`{r[0]}`", *r[1:]] for r in rows], MISTAKE_COLUMNS),
        ]
    lines += _calibration(manifest.get("calibration"))
    b = cfg["backbone"]
    lines += [
        "",
        "## Model and training",
        "",
        f"- backbone: {b['arch']} alpha {b['alpha']} at {b['image_size']}px, weights `{b['weights']}`",
        f"- preprocessing: {manifest['preprocessing']['resize']}; (pixel - {manifest['preprocessing']['mean']}) / "
        f"{manifest['preprocessing']['std']}, {manifest['preprocessing']['channel_order']}",
    ]
    lines += _head_strength(manifest.get("training") or {})
    lines += _validation(manifest.get("training") or {})
    lines += [""]
    lines += _optimizations(manifest.get("optimizations") or {})
    lines += [
        "## Stage timings",
        "",
        markdown_table(_timing_rows(manifest["timings"]), ("stage", "seconds", "share")),
        "",
    ]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _head_strength(training: dict) -> list[str]:
    """The L2 strength the head solver chose, and the val loss of each it tried (a `--head lbfgs` build)."""
    path = (training.get("history") or {}).get("head") or {}
    if training.get("head_l2") is None or "l2" not in path:
        return []
    losses = path.get("val_loss") or [None] * len(path["l2"])
    tried = ", ".join(
        f"{l2:g}" + ("" if loss is None else f" (val loss {loss:.3f})") for l2, loss in zip(path["l2"], losses)
    )
    return [f"- head: logistic regression, L2 strength {training['head_l2']:g}; tried {tried}"]


def _validation(training: dict) -> list[str]:
    """Validation accuracy after each training phase, and what fine-tuning added."""
    accuracy = training.get("val_accuracy") or {}
    if not accuracy:
        return []
    phases = ", ".join(f"{phase.replace('_', '-')} {format_percent(value)}" for phase, value in accuracy.items())
    gain = training.get("fine_tune_gain")
    return [f"- validation accuracy: {phases}" + ("" if gain is None else f" (fine-tuning: {format_change(-gain)})")]


def _calibration(calibration: dict | None) -> list[str]:
    """ECE and the reliability diagram as a table: does a 90% answer come true 90% of the time?"""
    if not calibration:
        return []
    lines = [
        "",
        "## Calibration",
        "",
        f"- expected calibration error on the test split: {format_percent(calibration.get('test_ece'))}",
        f"- temperature folded into the exported head: {calibration['temperature']:.3g} ({calibration['why']})",
    ]
    if calibration.get("val_ece_before") is not None:
        lines.append(
            f"- ECE on the validation split: {format_percent(calibration['val_ece_before'])} before, "
            f"{format_percent(calibration['val_ece_after'])} after"
        )
    rows = [
        [
            f"{b['low']:.2f}-{b['high']:.2f}",
            str(b["count"]),
            format_percent(b["confidence"]),
            format_percent(b["accuracy"]),
        ]
        for b in calibration.get("reliability") or []
        if b["count"]
    ]
    if rows:
        lines += ["", markdown_table(rows, ("confidence", "photos", "mean confidence", "accuracy"))]
    return lines


def _timing_rows(timings: dict[str, float]) -> list[list[str]]:
    stages = {k: v for k, v in timings.items() if "." not in k.split(" ")[0]}
    total = sum(stages.values()) or 1.0
    rows = [[k, f"{v:.1f}", f"{100 * v / total:.0f}%"] for k, v in stages.items()]
    rows += [
        [f"(in {k.split('.')[0]}) {k.split('.', 1)[1]}", f"{v:.1f}", ""] for k, v in timings.items() if k not in stages
    ]
    return rows + [["total", f"{total:.1f}", "100%"]]


def _optimizations(optimizations: dict) -> list[str]:
    """Each optimization's scalar settings and results as a two-column table (curves are in report.html)."""
    lines = []
    for name, report in optimizations.items():
        rows = [
            [key.replace("_", " "), _fact(value)]
            for key, value in report.items()
            if key not in ("history", "notes", "sparsity") and not isinstance(value, (dict, list))
        ]
        sparsity = (report.get("sparsity") or {}).get("pruned_kernels")
        if sparsity:
            rows.append(["sparsity of Conv2D/Dense kernels", f"{sparsity['sparsity']:.1%}"])
        lines += [f"## Optimization: {name}", "", markdown_table(rows, ("setting or result", "value")), ""]
        lines += [f"- {note}" for note in report.get("notes") or []] + ([""] if report.get("notes") else [])
    return lines


def _fact(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
