"""report.html: one self-contained page (styles and figures inline, opens offline) for people deciding what
to ship."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..core.files import write_text_atomic
from . import plots
from .table import COLUMNS, artifact_rows, latency_note, unavailable_notes

STYLE = """
body{font-family:-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
tr.fail td{background:#fde8e8}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0}
figcaption{font-size:12px;color:#555}code{background:#f3f3f3;padding:1px 4px}
.note{font-size:13px;color:#555}
"""


def write_html_report(path: Path, manifest: dict) -> None:
    write_text_atomic(path, render_html(manifest))


def render_html(manifest: dict) -> str:
    entries = manifest["artifacts"] + manifest.get("rejected", [])
    reference = manifest["reference"]["metrics"]
    parts = [
        f"<h1>imgpipe build report: {_e(manifest['model']['name'])}</h1>",
        f"<p class=note>imgpipe {_e(manifest['imgpipe_version'])}, built {_e(manifest['created'])}; "
        f"dataset digest <code>{_e(manifest['dataset']['digest'][:16])}</code></p>",
        "<h2>Artifacts</h2>",
        _artifact_table(entries, reference),
    ]
    parts += [f"<p class=note>{_e(n)}</p>" for n in [latency_note(manifest), *unavailable_notes(entries)]]
    figures = [
        (
            plots.tradeoff_plot(entries, "bytes", "size (MB)", 1e-6),
            "Accuracy vs size; Pareto front dashed; red crosses failed a gate",
        ),
        (
            plots.tradeoff_plot(entries, "latency_ms_p50", "single-image latency p50 (ms, 1 thread)"),
            "Accuracy vs latency on this machine's CPU",
        ),
    ]
    parts += ["<h2>Trade-offs</h2>", _figures(figures)]
    parts += [
        "<h2>Float model on the test split</h2>",
        _figures(
            [
                (plots.per_class_plot(reference["per_class_accuracy"]), "Per-class accuracy"),
                (plots.confusion_plot(reference["confusion_matrix"], manifest["labels"]), "Confusion matrix"),
            ]
        ),
    ]
    curves = plots.training_curves_plot(manifest.get("training", {}).get("history", {}))
    if curves:
        parts += ["<h2>Training</h2>", _figures([(curves, "Per-epoch loss and accuracy (train solid, val dashed)")])]
    parts += [
        _optimizations(manifest.get("optimizations") or {}),
        _dataset(manifest["dataset"]),
        _environment(manifest),
    ]
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>imgpipe report: {_e(manifest['model']['name'])}</title><style>{STYLE}</style></head>"
        "<body>" + "\n".join(parts) + "</body></html>\n"
    )


def _artifact_table(entries: list[dict], reference: dict) -> str:
    rows = artifact_rows(entries, reference)
    failed = [False] + [e.get("gates", {}).get("passed") is False for e in entries]
    head = "<tr>" + "".join(f"<th>{_e(c)}</th>" for c in COLUMNS) + "</tr>"
    body = "".join(
        f"<tr{' class=fail' if bad else ''}>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>"
        for row, bad in zip(rows, failed)
    )
    return f"<table>{head}{body}</table>"


def _figures(figures: list[tuple[bytes | None, str]]) -> str:
    items = []
    for png, caption in figures:
        if png is None:
            items.append(f"<p class=note>{_e(caption)}: nothing measured to plot.</p>")
            continue
        data = base64.b64encode(png).decode("ascii")
        items.append(
            f"<figure><img alt='{_e(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    return "<div class=figs>" + "".join(items) + "</div>"


def _optimizations(optimizations: dict) -> str:
    if not optimizations:
        return ""
    parts = ["<h2>Model-level optimizations</h2>"]
    for name, report in optimizations.items():
        parts.append(f"<h3>{_e(name)}</h3><pre>{_e(json.dumps(report, indent=2))}</pre>")
    return "".join(parts)


def _dataset(ds: dict) -> str:
    rows = "".join(
        f"<tr><td>{_e(label)}</td><td>{c['train']}</td><td>{c['val']}</td><td>{c['test']}</td></tr>"
        for label, c in ds["counts"].items()
    )
    problems = "".join(f"<li>{_e(p)}</li>" for p in ds["problems"]) or "<li>none</li>"
    return (
        f"<h2>Dataset</h2><p><code>{_e(ds['root'])}</code>: {ds['images']} images, {ds['classes']} classes</p>"
        f"<table><tr><th>class</th><th>train</th><th>val</th><th>test</th></tr>{rows}</table>"
        f"<p>Problems found:</p><ul>{problems}</ul>"
    )


def _environment(manifest: dict) -> str:
    env = manifest["environment"]
    libs = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in manifest["libraries"].items())
    threads = manifest["config"]["latency"]["threads"]
    return (
        f"<h2>Environment</h2><p>{_e(env.get('cpu') or env.get('processor') or env.get('machine'))}, "
        f"{_e(env.get('cpu_count'))} logical CPUs; latency measured with {threads} thread(s); "
        f"Python {_e(env['python'])} on {_e(env['platform'])}</p>"
        f"<table><tr><th>library</th><th>version</th></tr>{libs}</table>"
    )


def _e(value) -> str:
    return html.escape(str(value))
