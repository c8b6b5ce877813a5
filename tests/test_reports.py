"""Reports: the artifact table renders in Markdown (pipes escaped), the Pareto front, the plots' inputs."""

from __future__ import annotations

import numpy as np
import pytest
from markdown_it import MarkdownIt

from imgpipe.pipeline.reports.plots import pareto_front
from imgpipe.pipeline.reports.table import COLUMNS, artifact_rows, markdown_table


def parsed_tables(text: str) -> list[list[list[str]]]:
    """Every table a CommonMark+GFM renderer sees in `text`, as rows of cell texts."""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    tables, rows, cells, in_cell = [], None, None, False
    for t in tokens:
        if t.type == "table_open":
            rows = []
        elif t.type == "tr_open":
            cells = []
        elif t.type in ("th_open", "td_open"):
            in_cell = True
        elif t.type == "inline" and in_cell:
            cells.append(t.content)
        elif t.type in ("th_close", "td_close"):
            in_cell = False
        elif t.type == "tr_close":
            rows.append(cells)
        elif t.type == "table_close":
            tables.append(rows)
    return tables


ENTRY = {
    "format": "tflite",
    "variant": "int8",
    "source": "float",
    "bytes": 960_000,
    "gzip_bytes": 700_000,
    "metrics": {
        "accuracy": 0.9,
        "accuracy_drop": 0.019,
        "macro_f1": 0.88,
        "agreement": 0.98,
        "max_abs_prob_diff": 0.03,
        "latency_ms_p50": 2.0,
        "latency_ms_p95": 2.5,
    },
    "gates": {"passed": False, "checks": []},
    "rejected_because": ["960,000 bytes > max_bytes 500,000"],
}


def test_markdown_table_renders_with_every_column_although_a_header_holds_a_pipe():
    text = markdown_table(artifact_rows([ENTRY], {"accuracy": 0.92, "macro_f1": 0.9}))
    (table,) = parsed_tables(text)
    assert table[0][COLUMNS.index("max|Δp|")] == "max|Δp|"
    assert all(len(row) == len(COLUMNS) for row in table)
    assert table[2][0] == "tflite:int8" and table[2][-1].startswith("FAIL: 960,000 bytes > max_bytes")


def test_accuracy_against_float_reads_as_a_signed_change():
    gain = artifact_rows([{**ENTRY, "metrics": {**ENTRY["metrics"], "accuracy_drop": -0.019}}])[0]
    loss = artifact_rows([ENTRY])[0]
    same = artifact_rows([{**ENTRY, "metrics": {**ENTRY["metrics"], "accuracy_drop": 0.0}}])[0]
    column = COLUMNS.index("vs float")
    assert (gain[column], loss[column], same[column]) == ("+1.9 pt", "-1.9 pt", "+0.0 pt")


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 80.0), (2.0, 90.0), (3.0, 85.0), (0.5, 70.0), (2.0, 89.0)]
    assert pareto_front(points) == [3, 0, 1]


def _entry(fmt, variant, size, accuracy, latency, source="float", passed=True, **extra):
    metrics = dict(ENTRY["metrics"], accuracy=accuracy, latency_ms_p50=latency)
    if accuracy is None:
        metrics.update(accuracy_drop=None, agreement=None, max_abs_prob_diff=None, macro_f1=None)
    return {
        "format": fmt,
        "variant": variant,
        "source": source,
        "path": None if not passed else f"x/{fmt}_{variant}_{source}",
        "bytes": size,
        "gzip_bytes": int(size * 0.8),
        "metrics": metrics,
        "gates": {"passed": passed, "checks": [], "limits": {"max_accuracy_drop": 0.05}},
        **extra,
    }


# Points that coincide (tflite:fp32 and onnx:fp32 are the same float graph), a rejected point that would otherwise
# sit on the Pareto front, Core ML with measured numbers and one without.
REPORT_ENTRIES = [
    _entry("tflite", "fp32", 1_600_000, 0.92, 0.55),
    _entry("tflite", "int8", 450_000, 0.91, 0.40),
    _entry("coreml", "fp16", 920_000, 0.92, 0.50),
    _entry("coreml", "palettize", 700_000, None, None, metrics_unavailable_reason="Core ML needs macOS"),
    _entry("onnx", "fp32", 1_590_000, 0.92, 0.56),
    _entry("tflite", "int8", 440_000, 0.91, 0.41, source="prune"),
    _entry("tflite", "int8", 445_000, 0.90, 0.40, source="qat"),
    _entry("onnx", "int8", 100_000, 0.95, 0.10, passed=False, rejected_because=["100,000 bytes > max_bytes 1,000"]),
]


def test_the_pareto_front_goes_through_gate_passing_points_only(monkeypatch):
    from imgpipe.pipeline.reports import plots

    drawn = {}
    real = plots.pareto_front

    def spy(points):
        drawn["points"] = points
        return real(points)

    monkeypatch.setattr(plots, "pareto_front", spy)
    assert plots.tradeoff_plot(REPORT_ENTRIES, "bytes", "size", 1e-6) is not None
    assert (0.1, 95.0) not in drawn["points"], "the rejected onnx:int8 is plotted but not on the front"
    assert len(drawn["points"]) == 6


def test_every_plotted_point_gets_a_label_and_no_two_labels_overlap():
    from imgpipe.pipeline.reports import plots

    plt = plots._pyplot()
    for key, scale in (("bytes", 1e-6), ("latency_ms_p50", 1.0)):
        measured = plots.plotted_entries(REPORT_ENTRIES, key)
        fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=100)
        points = [(plots._cost(e, key) * scale, 100 * e["metrics"]["accuracy"]) for e in measured]
        for x, y in points:
            ax.scatter(x, y)
        ax.set_xlim(0, max(x for x, _ in points) * 1.3)
        ax.set_ylim(80, 100)
        numbers = list(range(1, len(points) + 1))
        texts = plots.place_labels(ax, points, numbers)
        renderer = fig.canvas.get_renderer()
        labelled = sorted(int(n) for t in texts for n in t.get_text().split(","))
        assert labelled == numbers, "every point is named, coinciding ones in a shared label"
        boxes = [t.get_window_extent(renderer) for t in texts]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not a.overlaps(b), f"labels overlap in the {key} plot"
        plt.close(fig)


def report_manifest() -> dict:
    """A manifest with everything report.html can show: prune and QAT, a rejection, Core ML with numbers."""
    history = {"loss": [1.0, 0.8, 0.9], "accuracy": [0.6, 0.7, 0.5], "val_loss": [1.1, 1.4, 1.2]}
    history["val_accuracy"] = [0.8, 0.3, 0.27]
    labels = ["cat", "dog", "fox"]
    reference = {
        "accuracy": 0.92,
        "macro_f1": 0.9,
        "samples": 30,
        "per_class_accuracy": {k: 0.9 for k in labels},
        "confusion_matrix": [[9, 1, 0], [0, 10, 0], [1, 0, 9]],
    }
    return {
        "imgpipe_version": "0.2",
        "created": "2026-05-01T10:00:00+00:00",
        "model": {"name": "Pets"},
        "labels": labels,
        "preprocessing": {"resize": "bilinear", "mean": [127.5] * 3, "std": [127.5] * 3, "channel_order": "RGB"},
        "dataset": {
            "root": "pets",
            "digest": "d" * 64,
            "images": 300,
            "classes": 3,
            "counts": {k: {"train": 80, "val": 10, "test": 10} for k in labels},
            "problems": [],
        },
        "config": {"latency": {"threads": 1}, "backbone": {"arch": "mobilenet_v2", "alpha": 0.35, "image_size": 96}}
        | {"backbone": {"arch": "mobilenet_v2", "alpha": 0.35, "image_size": 96, "weights": "none"}},
        "reference": {"metrics": reference},
        "training": {"history": {"head": {"loss": [1.0, 0.5], "accuracy": [0.5, 0.9]}}},
        "optimizations": {
            "prune": {
                "method": "tfmot prune_low_magnitude",
                "target_sparsity": 0.5,
                "schedule": {"initial_sparsity": 0.0, "final_sparsity": 0.5, "begin_step": 0, "end_step": 120},
                "epochs": 3,
                "history": history,
                "val_accuracy_after_batchnorm_reestimation": 0.89,
                "sparsity": {
                    "by_layer_type": {
                        "Conv2D": {"layers": 35, "weights": 1_200_000, "zeros": 600_000, "sparsity": 0.5}
                    },
                    "pruned_kernels": {"weights": 1_200_000, "zeros": 600_000, "sparsity": 0.5},
                    "all_weights": {"weights": 1_400_000, "zeros": 600_000, "sparsity": 0.43},
                },
                "gzip_weights_bytes": {"float": 1_300_000, "pruned": 800_000},
                "notes": ["tfmot does not prune DepthwiseConv2D kernels"],
            },
            "qat": {"method": "tfmot quantize_apply", "epochs": 2, "history": history, "float_layers": {}},
        },
        "timings": {
            "scan": 1.2,
            "train": 40.0,
            "train.features": 3.0,
            "export tflite:fp32": 2.0,
            "verify tflite:fp32": 0.4,
        },
        "environment": {"cpu": "test CPU", "cpu_count": 2, "python": "3.11", "platform": "Linux"},
        "libraries": {"tensorflow": "2.21.0"},
        "artifacts": [e for e in REPORT_ENTRIES if e["gates"]["passed"]],
        "rejected": [e for e in REPORT_ENTRIES if not e["gates"]["passed"]],
    }


def test_report_html_shows_optimizations_as_tables_curves_and_timings():
    from imgpipe.pipeline.reports.html import render_html

    html = render_html(report_manifest())
    assert "<pre>" not in html, "no raw JSON dump"
    section = html[html.index("<h2>Model-level optimizations</h2>") :]
    assert "<td>target sparsity</td><td class=text>0.5</td>" in section
    assert "<td>Conv2D layers</td>" in section and "600,000" in section
    assert "prune: per-epoch loss and accuracy" in html and "qat: per-epoch loss and accuracy" in html
    assert "pruned model scores 89.0% on val" in html
    assert "<h2>Stage timings</h2>" in html and "<td>train</td><td>40.0</td>" in html
    assert "Not plotted (not measured on this machine): coreml:palettize" in html
    assert "<h2>What to ship</h2>" in html


def test_report_md_renders_every_section_as_tables(tmp_path):
    from imgpipe.pipeline.reports.markdown import write_markdown_report

    write_markdown_report(tmp_path / "report.md", report_manifest())
    tables = parsed_tables((tmp_path / "report.md").read_text())
    headers = [t[0][0] for t in tables]
    assert headers[:2] == ["platform", "artifact"]
    assert "stage" in headers and headers.count("setting or result") == 2
    for table in tables:
        assert len({len(row) for row in table}) == 1, table[0]


def test_a_solved_head_shows_its_strength_and_only_epoch_phases_are_plotted(tmp_path):
    """A `--head lbfgs` build: report.md names the L2 strength chosen and the val loss of each tried; the HTML
    curves caption names only the phases that have epochs."""
    from imgpipe.pipeline.reports.html import render_html
    from imgpipe.pipeline.reports.markdown import write_markdown_report

    manifest = report_manifest()
    path = {"l2": [0.1, 0.01, 0.001], "train_loss": [0.5, 0.2, 0.1], "val_loss": [0.41, 0.35, 0.38]}
    manifest["training"] = {
        "history": {"head": path, "fine_tune": {"loss": [0.4, 0.3], "accuracy": [0.8, 0.9]}},
        "head_l2": 0.01,
    }
    write_markdown_report(tmp_path / "report.md", manifest)
    text = (tmp_path / "report.md").read_text()
    assert "- head: logistic regression, L2 strength 0.01; tried 0.1 (val loss 0.410), 0.01 (val loss 0.350), " in text
    html = render_html(manifest)
    assert "Training (fine_tune): per-epoch loss" in html and "Head: loss at each L2 strength tried" in html


def test_mistakes_are_the_wrong_photos_most_confident_first_kept_up_to_the_cap(monkeypatch):
    from imgpipe.pipeline.verify import metrics

    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    y = np.array([0, 0, 0, 1, 0])
    paths = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    found = metrics.mistakes_of(probs, y, ["cat", "dog"], paths)
    assert found["total"] == 4
    assert [m["path"] for m in found["listed"]] == ["c.jpg", "b.jpg", "d.jpg", "e.jpg"]
    assert found["listed"][0] == {"path": "c.jpg", "label": "cat", "predicted": "dog", "confidence": 0.8}
    monkeypatch.setattr(metrics, "MISTAKES_KEPT", 2)
    capped = metrics.mistakes_of(probs, y, ["cat", "dog"], paths)
    assert capped["total"] == 4 and [m["path"] for m in capped["listed"]] == ["c.jpg", "b.jpg"]
    assert metrics.mistakes_of(probs[:1], y[:1], ["cat", "dog"], paths[:1]) == {"total": 0, "listed": []}


def test_reports_show_the_most_confident_mistakes_and_say_how_many_of_how_many(tmp_path):
    from imgpipe.pipeline.reports.html import render_html
    from imgpipe.pipeline.reports.markdown import write_markdown_report
    from imgpipe.pipeline.reports.table import MISTAKES_SHOWN

    manifest = report_manifest()
    listed = [
        {"path": f"cat/{i}.jpg", "label": "cat", "predicted": "dog", "confidence": 0.99 - i / 100}
        for i in range(MISTAKES_SHOWN + 2)
    ]
    manifest["reference"]["mistakes"] = {"total": len(listed), "listed": listed}
    write_markdown_report(tmp_path / "report.md", manifest)
    text = (tmp_path / "report.md").read_text()
    assert f"the {MISTAKES_SHOWN} most confident of {len(listed)}, most confident first" in text
    table = next(t for t in parsed_tables(text) if t[0] == ["photo", "class", "predicted", "confidence"])
    assert table[1] == ["`cat/0.jpg`", "cat", "dog", "99.0%"] and len(table) == 1 + MISTAKES_SHOWN
    html = render_html(manifest)
    assert f"<code>cat/{MISTAKES_SHOWN - 1}.jpg</code>" in html and f"cat/{MISTAKES_SHOWN}.jpg" not in html

    manifest["reference"]["mistakes"] = {"total": 1, "listed": listed[:1]}
    write_markdown_report(tmp_path / "report.md", manifest)
    assert "got wrong: all of 1," in (tmp_path / "report.md").read_text()
    for none in ({"total": 0, "listed": []}, None):  # none made, or a manifest from before they were kept
        manifest["reference"]["mistakes"] = none
        write_markdown_report(tmp_path / "report.md", manifest)
        assert "got wrong" not in (tmp_path / "report.md").read_text() and "got wrong" not in render_html(manifest)


def test_the_accuracy_interval_is_wilsons_and_classification_metrics_carry_it():
    from scipy.stats import binomtest

    from imgpipe.pipeline.verify.metrics import accuracy_interval, classification_metrics

    for right, tested in ((45, 50), (50, 50), (0, 10), (238, 272), (1, 1)):
        wilson = binomtest(right, tested).proportion_ci(method="wilson")
        assert accuracy_interval(right, tested) == pytest.approx([wilson.low, wilson.high], abs=1e-12)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    metrics = classification_metrics(probs, np.array([0, 1, 1, 1]), ["cat", "dog"])
    assert metrics["accuracy_interval"] == accuracy_interval(3, 4)
    assert classification_metrics(probs[:0], np.array([], np.int64), ["cat", "dog"])["accuracy_interval"] is None


def test_reports_give_the_float_models_accuracy_with_its_interval(tmp_path):
    from imgpipe.pipeline.reports.html import render_html
    from imgpipe.pipeline.reports.markdown import write_markdown_report

    manifest = report_manifest()
    manifest["reference"]["metrics"]["accuracy_interval"] = [0.7866, 0.9737]
    sentence = "Accuracy 92.0% on 30 photos; 95% interval 78.7% to 97.4% (Wilson)"
    write_markdown_report(tmp_path / "report.md", manifest)
    assert sentence in (tmp_path / "report.md").read_text() and sentence in render_html(manifest)
    del manifest["reference"]["metrics"]["accuracy_interval"]  # a manifest from before it was kept
    write_markdown_report(tmp_path / "report.md", manifest)
    assert "95% interval" not in (tmp_path / "report.md").read_text() and "95% interval" not in render_html(manifest)
