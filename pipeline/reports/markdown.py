"""report.md: the build's tables in Markdown, readable on GitHub and in a CI job summary."""

from __future__ import annotations

from pathlib import Path

from ..core.files import write_text_atomic
from .table import artifact_rows, format_percent, latency_note, markdown_table, unavailable_notes


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
    lines += ["", "## Float model on the test split", "", "| class | accuracy |", "|---|---|"]
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
    b = cfg["backbone"]
    lines += [
        "",
        "## Model and training",
        "",
        f"- backbone: {b['arch']} alpha {b['alpha']} at {b['image_size']}px, weights `{b['weights']}`",
        f"- preprocessing: {manifest['preprocessing']['resize']}; (pixel - {manifest['preprocessing']['mean']}) / "
        f"{manifest['preprocessing']['std']}, {manifest['preprocessing']['channel_order']}",
        "- stage timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in manifest["timings"].items()),
        "",
    ]
    write_text_atomic(path, "\n".join(lines) + "\n")
