"""Reports: the artifact table renders in Markdown (pipes escaped), the Pareto front, the plots' inputs."""

from __future__ import annotations

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
