"""The benchmark report in Markdown: what CI prints and appends to the job summary."""

from __future__ import annotations


def render_markdown(suite: dict) -> str:
    lines = [f"# imgpipe benchmarks ({suite['profile']} profile)", "",
             f"{suite['machine']['cpu'] or 'unknown CPU'}, {suite['machine']['cores']} cores, "
             f"Python {suite['machine']['python']}, {suite['created']}.", ""]
    lines += [f"> {n}" for n in suite["notices"]]
    for run in suite["runs"]:
        b = run["backbone"]
        lines += ["", f"## {run['case']}: {run['images']} images, {run['classes']} classes", "",
                  f"{b['arch']} alpha {b['alpha']} at {b['image_size']} px, weights `{_short(b['weights'])}`; "
                  f"float Keras test accuracy {_pct(run['keras_accuracy'])}; whole build {run['total_seconds']:.1f} s.",
                  "", "| artifact | source | accuracy | drop | agreement | bytes | gzip bytes | p50 ms | p95 ms |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for a in run["artifacts"]:
            lines.append(f"| {a['artifact']} | {a['source']} | {_pct(a['accuracy'])} | {_pts(a['accuracy_drop'])} | "
                         f"{_pct(a['agreement'])} | {a['bytes']:,} | {a['gzip_bytes']:,} | {_ms(a['latency_ms_p50'])} | "
                         f"{_ms(a['latency_ms_p95'])} |")
        lines += ["", "Stage timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in run["stages"].items())]
        if "baseline" in run:
            base, ratio = run["baseline"], run["versus_baseline"]
            lines += ["", f"Versus the Keras tutorial recipe ({base['epochs']} epochs on images, frozen MobileNetV2, "
                          "same train and test files):", "",
                      "| | imgpipe | tutorial recipe | ratio |", "|---|---|---|---|",
                      f"| training time (s) | {_train_seconds(run):.1f} | {base['train_seconds']:.1f} | "
                      f"{ratio['train_time_ratio']:.2f} |",
                      f"| test accuracy | {_pct(run['keras_accuracy'])} | {_pct(base['accuracy'])} | "
                      f"{ratio['accuracy_ratio'] if ratio['accuracy_ratio'] is not None else 'n/a'} |"]
    return "\n".join(lines) + "\n"


def _train_seconds(run: dict) -> float:
    return sum(v for k, v in run["stages"].items() if k in ("scan", "train"))


def _short(weights: str) -> str:
    return weights.rsplit("/", 1)[-1]


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _pts(v):
    return "" if v is None else f"{100 * v:+.1f} pt"


def _ms(v):
    return "n/a" if v is None else f"{v:.2f}"
