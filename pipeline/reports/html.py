"""report.html: one self-contained page (styles and figures inline, opens offline) for people deciding what
to ship."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ..core.files import write_text_atomic
from . import plots
from .summary import format_size, recommend
from .table import (
    COLUMNS,
    MISTAKE_COLUMNS,
    accuracy_interval_note,
    artifact_name,
    artifact_rows,
    format_percent,
    latency_note,
    reference_mistakes,
    unavailable_notes,
)

STYLE = """
body{font-family:-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px;max-width:100%}
th,td{border:1px solid #ccc;padding:4px 6px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child,td.text,th.text{text-align:left}td.text{overflow-wrap:anywhere}
tr.fail td{background:#fde8e8}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0;max-width:100%}
img{max-width:100%;height:auto}
figcaption{font-size:12px;color:#555;max-width:720px}code{background:#f3f3f3;padding:1px 4px}
.note{font-size:13px;color:#555}
.bar{background:#4e79a7;height:10px;display:inline-block;vertical-align:middle}
"""


def write_html_report(path: Path, manifest: dict) -> None:
    write_text_atomic(path, render_html(manifest))


def render_html(manifest: dict) -> str:
    entries = manifest["artifacts"] + manifest.get("rejected", [])
    reference = manifest["reference"]["metrics"]
    numbers = {id(e): i + 1 for i, e in enumerate(entries)}  # the same number in the table and in every plot
    parts = [
        f"<h1>imgpipe build report: {_e(manifest['model']['name'])}</h1>",
        f"<p class=note>imgpipe {_e(manifest['imgpipe_version'])}, built {_e(manifest['created'])}; "
        f"dataset digest <code>{_e(manifest['dataset']['digest'][:16])}</code></p>",
        _recommendations(manifest),
        "<h2>Artifacts</h2>",
        _artifact_table(entries, reference),
    ]
    parts += [f"<p class=note>{_e(n)}</p>" for n in [latency_note(manifest), *unavailable_notes(entries)]]
    parts += ["<h2>Trade-offs</h2>", _figures(_tradeoff_figures(entries, numbers))]
    parts.append("<h2>Float model on the test split</h2>")
    interval = accuracy_interval_note(reference)
    if interval:
        parts.append(f"<p class=note>{_e(interval)}</p>")
    parts += [
        _figures(
            [
                (plots.per_class_plot(reference["per_class_accuracy"]), "Per-class accuracy"),
                (plots.confusion_plot(reference["confusion_matrix"], manifest["labels"]), "Confusion matrix"),
            ]
        ),
    ]
    parts += _mistakes(manifest)
    parts += _calibration(manifest.get("calibration"))
    curves = _training_figures(manifest)
    if curves:
        parts += ["<h2>Training</h2>", _figures(curves)]
    parts += [
        _optimizations(manifest.get("optimizations") or {}),
        _timings(manifest.get("timings") or {}),
        _dataset(manifest["dataset"]),
        _environment(manifest),
    ]
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>imgpipe report: {_e(manifest['model']['name'])}</title><style>{STYLE}</style></head>"
        "<body>" + "\n".join(parts) + "</body></html>\n"
    )


def _recommendations(manifest: dict) -> str:
    picks = recommend(manifest)
    if not picks:
        return ""
    rows = "".join(
        f"<tr><td>{_e(p['platform'])}</td><td class=text><code>{_e(p['path'])}</code></td>"
        f"<td>{_e(format_size(p['bytes']))}</td><td>{_e(format_percent(p['accuracy']) or 'not measured')}</td>"
        f"<td class=text>{_e(p['why'])}</td></tr>"
        for p in picks.values()
    )
    return (
        "<h2>What to ship</h2><table><tr><th>platform</th><th class=text>file (in bundle/)</th><th>size</th>"
        f"<th>accuracy</th><th class=text>why this one</th></tr>{rows}</table>"
    )


def _tradeoff_figures(entries: list[dict], numbers: dict[int, int]) -> list[tuple[bytes | None, str]]:
    figures = []
    for key, label, scale, title in (
        ("bytes", "size (MB)", 1e-6, "Accuracy vs size"),
        ("latency_ms_p50", "single-image latency p50 (ms, 1 thread)", 1.0, "Accuracy vs latency on this CPU"),
    ):
        shown = {id(e) for e in plots.plotted_entries(entries, key)}
        missing = [artifact_name(e) for e in entries if id(e) not in shown]
        caption = (
            f"{title}. Numbers are the rows of the artifact table; points that coincide share a label. "
            "Dashed: the Pareto front of artifacts that passed their gates; red crosses failed a gate."
        )
        if missing:
            caption += f" Not plotted (not measured on this machine): {', '.join(missing)}."
        figures.append((plots.tradeoff_plot(entries, key, label, scale, numbers), caption))
    figures.append(
        (plots.sizes_plot(entries, numbers), "Size of every artifact: file and gzip (what a download moves)")
    )
    return figures


def _training_figures(manifest: dict) -> list[tuple[bytes | None, str]]:
    figures = []
    training = manifest.get("training", {})
    history = training.get("history", {})
    path = plots.regularization_path_plot(history.get("head") or {}, training.get("head_l2"))
    if path:
        figures.append((path, "Head: loss at each L2 strength tried, the one with the lowest val loss kept"))
    curves = plots.training_curves_plot(history)
    if curves:
        phases = ", ".join(name for name, h in history.items() if h.get("loss"))  # a solved head has no epochs
        figures.append((curves, f"Training ({phases}): per-epoch loss and accuracy, train solid, val dashed"))
    for name, report in (manifest.get("optimizations") or {}).items():
        curves = plots.training_curves_plot({name: report.get("history") or {}})
        if not curves:
            continue
        caption = f"{name}: per-epoch loss and accuracy while fine-tuning (train solid, val dashed)"
        after = report.get("val_accuracy_after_batchnorm_reestimation")
        if after is not None:
            caption += (
                ". Val accuracy falls while weights are zeroed and BatchNorm's averages lag; after re-estimating "
                f"BatchNorm the pruned model scores {format_percent(after)} on val"
            )
        figures.append((curves, caption))
    return figures


def _artifact_table(entries: list[dict], reference: dict) -> str:
    rows = artifact_rows(entries, reference)
    failed = [False] + [e.get("gates", {}).get("passed") is False for e in entries]
    numbers = [""] + [str(i + 1) for i in range(len(entries))]
    head = "<tr><th>#</th>" + "".join(f"<th>{_e(c)}</th>" for c in COLUMNS) + "</tr>"
    body = "".join(
        f"<tr{' class=fail' if bad else ''}><td>{n}</td>"
        + "".join(f"<td{' class=text' if i in (0, len(row) - 1) else ''}>{_e(c)}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row, bad, n in zip(rows, failed, numbers)
    )
    return f"<table>{head}{body}</table>"


def _mistakes(manifest: dict) -> list[str]:
    mistakes = reference_mistakes(manifest)
    if not mistakes:
        return []
    rows, caption = mistakes
    head = "".join(f"<th{'' if c == 'confidence' else ' class=text'}>{_e(c)}</th>" for c in MISTAKE_COLUMNS)
    body = "".join(
        f"<tr><td class=text><code>{_e(path)}</code></td><td class=text>{_e(label)}</td>"
        f"<td class=text>{_e(predicted)}</td><td>{_e(confidence)}</td></tr>"
        for path, label, predicted, confidence in rows
    )
    return [f"<p class=note>{_e(caption)}.</p>", f"<table><tr>{head}</tr>{body}</table>"]


def _calibration(calibration: dict | None) -> list[str]:
    if not calibration:
        return []
    ece = calibration.get("test_ece")
    text = (
        f"Expected calibration error on the test split: {'n/a' if ece is None else f'{100 * ece:.1f}%'}. "
        f"Temperature folded into the exported head: {calibration['temperature']:.3g} ({calibration['why']})."
    )
    return [
        "<h2>Calibration</h2>",
        f"<p>{_e(text)}</p>",
        _figures([(plots.reliability_plot(calibration.get("reliability") or []), "Reliability diagram")]),
    ]


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
    """Each optimization's report as tables: its settings and results, per-layer-type sparsity, notes; the
    per-epoch history is plotted under Training instead."""
    if not optimizations:
        return ""
    parts = ["<h2>Model-level optimizations</h2>"]
    for name, report in optimizations.items():
        parts.append(f"<h3>{_e(name)}</h3>")
        facts, tables = [], []
        for key, value in report.items():
            if key in ("history", "notes"):
                continue
            if key == "sparsity" and isinstance(value, dict):
                tables.append((key, _sparsity_rows(value)))
            elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
                tables.append((key, value))
            else:
                facts.append((key, _fact(value)))
        rows = "".join(f"<tr><td>{_e(k.replace('_', ' '))}</td><td class=text>{_e(v)}</td></tr>" for k, v in facts)
        parts.append(f"<table><tr><th>setting or result</th><th class=text>value</th></tr>{rows}</table>")
        for key, table in tables:
            parts.append(f"<p>{_e(key.replace('_', ' '))}:</p>" + _dict_table(table))
        notes = report.get("notes") or []
        if notes:
            parts.append("<ul class=note>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    return "".join(parts)


def _sparsity_rows(sparsity: dict) -> dict[str, dict]:
    rows = {f"{t} layers": v for t, v in (sparsity.get("by_layer_type") or {}).items()}
    for key in ("pruned_kernels", "all_weights"):
        if key in sparsity:
            rows[key.replace("_", " ")] = sparsity[key]
    return rows


def _dict_table(rows: dict[str, dict]) -> str:
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    head = "<tr><th></th>" + "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in columns) + "</tr>"
    body = "".join(
        f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{_e(_fact(row.get(c)))}</td>" for c in columns) + "</tr>"
        for name, row in rows.items()
    )
    return f"<table>{head}{body}</table>"


def _fact(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10000:
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {_fact(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(_fact(v) for v in value) or "none"
    return str(value)


def _timings(timings: dict[str, float]) -> str:
    """Every stage's wall-clock seconds with its share of the build, largest first."""
    stages = {k: v for k, v in timings.items() if "." not in k.split(" ")[0]}
    if not stages:
        return ""
    total = sum(stages.values()) or 1.0
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{seconds:.1f}</td><td>{100 * seconds / total:.0f}%</td>"
        f"<td class=text><span class=bar style='width:{max(1, round(200 * seconds / total))}px'></span></td></tr>"
        for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1])
    )
    details = {k: v for k, v in timings.items() if k not in stages}
    more = (
        "<p class=note>Inside those stages: " + ", ".join(f"{_e(k)} {v:.1f} s" for k, v in details.items()) + "</p>"
        if details
        else ""
    )
    return (
        f"<h2>Stage timings</h2><p>{total:.1f} s over {len(stages)} stages (wall clock).</p>"
        f"<table><tr><th>stage</th><th>seconds</th><th>share</th><th class=text></th></tr>{rows}</table>{more}"
    )


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
