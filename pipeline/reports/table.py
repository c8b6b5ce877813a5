"""The artifact table, as the console, report.md, report.html and `imgpipe inspect` show it."""

from __future__ import annotations

COLUMNS = (
    "artifact",
    "accuracy",
    "vs float",
    "macro-F1",
    "agree",
    "max|Δp|",
    "bytes",
    "gzip",
    "p50 ms",
    "p95 ms",
    "gate",
)


def artifact_rows(entries: list[dict], reference: dict | None = None) -> list[list[str]]:
    """One row per artifact (manifest entries), plus the float Keras reference when given."""
    rows = []
    if reference is not None:
        name, accuracy, macro_f1 = "keras:float (reference)", reference.get("accuracy"), reference.get("macro_f1")
        rows.append([name, format_percent(accuracy), "", _num(macro_f1)] + [""] * (len(COLUMNS) - 4))
    for e in entries:
        m = e.get("metrics", {})
        name = artifact_name(e)
        rows.append(
            [
                name,
                format_percent(m.get("accuracy")),
                format_change(m.get("accuracy_drop")),
                _num(m.get("macro_f1")),
                format_percent(m.get("agreement")),
                _sci(m.get("max_abs_prob_diff")),
                _bytes(e.get("bytes")),
                _bytes(e.get("gzip_bytes")),
                format_ms(m.get("latency_ms_p50")),
                format_ms(m.get("latency_ms_p95")),
                _gate(e),
            ]
        )
    return rows


def _gate(entry: dict) -> str:
    gates = entry.get("gates")
    if gates is None:
        return ""
    if not gates["passed"]:
        return "FAIL: " + "; ".join(entry.get("rejected_because", []))
    unmeasured = [c["gate"] for c in gates["checks"] if c["passed"] is None]
    return "pass" + (f" ({', '.join(unmeasured)} not measured)" if unmeasured else "")


def drop_empty_columns(rows: list[list[str]], columns=COLUMNS) -> tuple[list[list[str]], tuple[str, ...]]:
    """The rows and columns without the columns that are empty (or n/a) in every row: a table of a bundle on new
    photos has no gate or float-model column to show."""
    keep = [i for i, _ in enumerate(columns) if i == 0 or any(row[i] not in ("", "n/a") for row in rows)]
    return [[row[i] for i in keep] for row in rows], tuple(columns[i] for i in keep)


def format_table(rows: list[list[str]], columns=COLUMNS) -> str:
    widths = [max(len(str(c)), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_table(rows: list[list[str]], columns=COLUMNS) -> str:
    """A GitHub-flavoured Markdown table; pipes inside cells (`max|Δp|`) are escaped so the table still renders."""

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|") or " "

    out = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(out)


def artifact_name(entry: dict) -> str:
    """`format:variant`, plus the model-level optimization it came from when it is not the float model."""
    source = entry.get("source", "float")
    return f"{entry['format']}:{entry['variant']}" + ("" if source == "float" else f" ({source})")


def unavailable_notes(entries: list[dict]) -> list[str]:
    """One line per reason why metrics were not measured, naming the artifacts and their structural checks."""
    groups: dict[str, list[str]] = {}
    for e in entries:
        reason = e.get("metrics_unavailable_reason")
        if reason:
            checks = e.get("structural_checks") or {}
            failed = [k for k, v in checks.items() if not v]
            verdict = f"{len(checks) - len(failed)}/{len(checks)} structural checks passed" + (
                f" (failed: {', '.join(failed)})" if failed else ""
            )
            groups.setdefault(reason, []).append(f"{artifact_name(e)} ({verdict})")
    return [
        f"Accuracy and latency not measured: {reason}. Checked instead: {'; '.join(names)}."
        for reason, names in groups.items()
    ]


MISTAKES_SHOWN = 10
MISTAKE_COLUMNS = ("photo", "class", "predicted", "confidence")
MISTAKES_NOTE = "a confident mistake is often a mislabelled photo; the manifest lists them under reference.mistakes"


def mistake_table(mistakes: dict | None) -> tuple[list[list[str]], str] | None:
    """The first MISTAKES_SHOWN of a `mistakes_of` list as rows, and how many of how many they are ("all of 3",
    "the 10 most confident of 12"); None when there is none to show (no mistakes, or a manifest from before they
    were kept)."""
    if not mistakes or not mistakes["total"]:
        return None
    shown = mistakes["listed"][:MISTAKES_SHOWN]
    rows = [[m["path"], m["label"], m["predicted"], format_percent(m["confidence"])] for m in shown]
    which = "all" if len(shown) == mistakes["total"] else f"the {len(shown)} most confident"
    return rows, f"{which} of {mistakes['total']}, most confident first"


def reference_mistakes(manifest: dict) -> tuple[list[list[str]], str] | None:
    """The float model's test mistakes as both reports show them: rows and the sentence above them."""
    mistakes = mistake_table(manifest["reference"].get("mistakes"))
    if not mistakes:
        return None
    rows, how_many = mistakes
    return rows, f"Test photos the float model got wrong: {how_many} ({MISTAKES_NOTE})"


def accuracy_interval_note(metrics: dict) -> str | None:
    """The float model's test accuracy with its 95 % interval, as one sentence (None for a manifest without it)."""
    interval = metrics.get("accuracy_interval")
    if interval is None:
        return None
    low, high = interval
    return (
        f"Accuracy {format_percent(metrics['accuracy'])} on {metrics['samples']} photos; 95% interval "
        f"{format_percent(low)} to {format_percent(high)} (Wilson): where the accuracy on more photos like these "
        "is likely to be."
    )


def format_percent(v):
    return "" if v is None else f"{100 * v:.1f}%"


def format_change(drop):
    """Accuracy against the float model as a signed change: "-1.9 pt" lost, "+1.9 pt" gained."""
    return "" if drop is None else f"{-100 * drop:+.1f} pt".replace("-0.0", "+0.0")


def _num(v):
    return "" if v is None else f"{v:.3f}"


def _sci(v):
    return "" if v is None else f"{v:.1e}"


def format_ms(v):
    return "n/a" if v is None else f"{v:.2f}"


def _bytes(v):
    if v is None:
        return ""
    return f"{v / 1e6:.2f} MB" if v >= 1e5 else f"{v / 1e3:.1f} kB"


def latency_note(manifest: dict) -> str:
    """What the latency columns are, in one sentence every report uses."""
    latency, env = manifest["config"].get("latency", {}), manifest.get("environment", {})
    flags = ", ".join(env.get("cpu_flags") or []) or "flags unknown"
    runs = f"{latency['runs']} runs per artifact interleaved with the others" if "runs" in latency else "after warm-up"
    return (
        f"Latency: one image, {latency.get('threads', 1)} thread(s), {runs}, on the build machine's CPU "
        f"({env.get('cpu') or 'unknown'}; {flags}), not on a phone."
    )
