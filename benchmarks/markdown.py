"""The benchmark report in Markdown: what CI prints and appends to the job summary."""

from __future__ import annotations

from ..pipeline.reports.table import format_change, format_ms, format_percent
from .suite import ACCURACY_OF, PREVIOUS_ACCURACY_OF, SPLIT_SECONDS, train_seconds


def render_markdown(suite: dict) -> str:
    lines = [
        f"# imgpipe benchmarks ({suite['profile']} profile)",
        "",
        f"{suite['machine']['cpu'] or 'unknown CPU'}, {suite['machine']['cores']} cores, "
        f"Python {suite['machine']['python']}, {suite['created']}.",
        "",
    ]
    lines += [f"> {n}" for n in suite["notices"]]
    for run in suite["runs"]:
        b = run["backbone"]
        lines += [
            "",
            f"## {run['case']}: {run['images']} images, {run['classes']} classes",
            "",
            f"{b['arch']} alpha {b['alpha']} at {b['image_size']} px, weights `{_short(b['weights'])}`; "
            f"float Keras test accuracy {format_percent(run['keras_accuracy'])}; "
            f"whole build {run['total_seconds']:.1f} s.",
            "",
            "| artifact | source | accuracy | vs float | agreement | bytes | gzip bytes | p50 ms | p95 ms |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for a in run["artifacts"]:
            cells = [
                a["artifact"],
                a["source"],
                format_percent(a["accuracy"]),
                format_change(a["accuracy_drop"]),
                format_percent(a["agreement"]),
                f"{a['bytes']:,}",
                f"{a['gzip_bytes']:,}",
                format_ms(a["latency_ms_p50"]),
                format_ms(a["latency_ms_p95"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Stage timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in run["stages"].items())]
        if "baseline" in run:
            base, ratio = run["baseline"], run["versus_baseline"]
            lines += [
                "",
                f"Versus the Keras tutorial recipe ({base['epochs']} epochs on images, frozen MobileNetV2, "
                "same train and test files):",
                "",
                "| | imgpipe | tutorial recipe | ratio |",
                "|---|---|---|---|",
                f"| training time (s) | {train_seconds(run['stages']):.1f} | {base['train_seconds']:.1f} | "
                f"{ratio['train_time_ratio']:.2f} |",
                f"| test accuracy | {format_percent(run['keras_accuracy'])} | {format_percent(base['accuracy'])} | "
                f"{ratio['accuracy_ratio'] if ratio['accuracy_ratio'] is not None else 'n/a'} |",
            ]
        if "held_out" in run:
            lines += _held_out_lines(run)
    return "\n".join(lines) + "\n"


def _held_out_lines(run: dict) -> list[str]:
    held = run["held_out"]
    splits = held["splits"]
    columns = tuple(ACCURACY_OF)

    def pooled(key: str) -> str:
        accuracy = (ACCURACY_OF | PREVIOUS_ACCURACY_OF)[key]
        return f"{format_percent(held[accuracy])} ({sum(s[key] for s in splits)}/{held['test_images']})"

    def each(key: str) -> str:
        return " · ".join(f"{s[key]}/{s['test_images']}" for s in splits)

    return [
        "",
        f"Held out by {held['groups']}: {len(splits)} splits of the groups, none with a group on both sides; "
        f"{held['test_images']} photos tested in all (a photo can be in more than one split's test set). "
        "Accuracy pooled over the splits: photos right over photos tested.",
        "",
        f"| test split | imgpipe | imgpipe `--fine-tune-epochs {held['fine_tune_epochs']}` | tutorial recipe |",
        "|---|---|---|---|",
        f"| random (per photo) | {format_percent(run['keras_accuracy'])} | not built | "
        f"{format_percent(run['baseline']['accuracy'])} |",
        f"| held-out groups, {len(splits)} splits pooled | " + " | ".join(pooled(k) for k in columns) + " |",
        "| held-out groups, each split (right/tested) | " + " | ".join(each(k) for k in columns) + " |",
        f"| held-out groups, photos only one of the two got right | {held['only_keras_right']} | "
        f"{held['only_fine_tuned_right']} (exact McNemar p = {held['mcnemar_p']:.2f}) | |",
        "| training time per held-out split (s, median; imgpipe's features cached above) | "
        + " | ".join(f"{held[k]:.1f}" for k in SPLIT_SECONDS)
        + " |",
    ] + (_previous_lines(held, pooled, each) if "previous" in held else [])


def _previous_lines(held: dict, pooled, each) -> list[str]:
    older = tuple(PREVIOUS_ACCURACY_OF)
    return [
        "",
        f"The same splits beside an older imgpipe (`{held['previous']}`), which gets each split's train and val "
        "photos as its dataset:",
        "",
        f"| test split | imgpipe | older imgpipe | older imgpipe `--fine-tune-epochs {held['fine_tune_epochs']}` |",
        "|---|---|---|---|",
        "| held-out groups, pooled | " + " | ".join(pooled(k) for k in ("keras_right", *older)) + " |",
        "| held-out groups, each split | " + " | ".join(each(k) for k in ("keras_right", *older)) + " |",
        f"| photos only this default or the older fine-tuned build got right | {held['only_keras_right_vs_previous']} "
        f"| | {held['only_previous_fine_tuned_right']} (exact McNemar p = {held['previous_mcnemar_p']:.2f}) |",
    ]


def _short(weights: str) -> str:
    return weights.rsplit("/", 1)[-1]


def render_scale_markdown(result: dict) -> str:
    lines = [
        "# imgpipe benchmarks (scale profile)",
        "",
        f"Generated photos from {result['source']}; backbone options `{' '.join(result['backbone'])}`; targets tflite, "
        "onnx. Each build is its own process (peak RSS is its own).",
        "",
        "| photos | first build (s) | peak RSS (MiB) | feature ms/photo | unchanged rebuild (s, ratio) | "
        "photos added: rebuild (s, features computed) |",
        "|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        first, same, added = run["first"], run["unchanged_rebuild"], run["rebuild_after_adding"]
        lines.append(
            f"| {run['photos']:,} | {first['seconds']:.1f} | {first['peak_rss_mib']:.0f} | "
            f"{first['feature_ms_per_photo'] or 0:.1f} | {same['seconds']:.1f} "
            f"({run['unchanged_rebuild_ratio']:.2f}) | +{added['photos_added']}: {added['seconds']:.1f} "
            f"({added['features_computed']}) |"
        )
    return "\n".join(lines) + "\n"
