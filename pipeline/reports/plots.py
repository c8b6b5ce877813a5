"""The build report's figures, as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io

import numpy as np

from ...exporters.registry import FORMATS
from .table import artifact_name


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats: smaller-or-equal cost (x) with higher-or-equal accuracy (y)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


SOURCE_MARKERS = {"float": "o", "prune": "s", "qat": "^"}


def tradeoff_plot(entries: list[dict], cost_key: str, cost_label: str, scale: float = 1.0) -> bytes | None:
    """Accuracy against a cost (size or latency) for every measured artifact. Colour is the format, shape the model
    it came from; only the Pareto front is labelled, since the table names every point and labels would collide."""
    measured = [e for e in entries if e["metrics"].get("accuracy") is not None and _cost(e, cost_key) is not None]
    if not measured:
        return None
    plt = _pyplot()
    points = [(_cost(e, cost_key) * scale, 100 * e["metrics"]["accuracy"]) for e in measured]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=100)
    seen = set()
    for i, (e, (x, y)) in enumerate(zip(measured, points)):
        rejected = e.get("gates", {}).get("passed") is False
        source = e.get("source", "float")
        key = "gate failed" if rejected else f"{e['format']} ({source})"
        style = (
            {"marker": "x", "color": "tab:red"}
            if rejected
            else {
                "marker": SOURCE_MARKERS.get(source, "D"),
                "color": FORMATS[e["format"]].plot_colour if e["format"] in FORMATS else "tab:gray",
                "edgecolors": "black" if i in front else "none",
                "linewidths": 1.2,
            }
        )
        ax.scatter(x, y, s=55, zorder=3, alpha=0.85, label=None if key in seen else key, **style)
        seen.add(key)
        if i in front:
            ax.annotate(artifact_name(e), (x, y), textcoords="offset points", xytext=(6, -10), fontsize=8)
    ax.plot(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        "--",
        color="black",
        alpha=0.5,
        label="Pareto front",
        zorder=2,
    )
    ax.set_xlim(left=0, right=max(x for x, _ in points) * 1.3)  # from zero, so the ratios between artifacts show
    ax.set_xlabel(cost_label)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    return _png(fig, plt)


def per_class_plot(per_class: dict[str, float | None]) -> bytes:
    plt = _pyplot()
    labels = list(per_class)
    values = [100 * (v or 0.0) for v in per_class.values()]
    fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(labels) + 1.2), dpi=100)
    ax.barh(labels, values, color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%) of the float model on the test split")
    for y, v in enumerate(values):
        ax.text(v + 1, y, f"{v:.0f}", va="center", fontsize=8)
    return _png(fig, plt)


def confusion_plot(matrix: list[list[int]], labels: list[str]) -> bytes:
    plt = _pyplot()
    m = np.asarray(matrix)
    size = 1.2 + 0.5 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (r, c), v in np.ndenumerate(m):
        ax.text(c, r, str(v), ha="center", va="center", fontsize=8, color="white" if v > m.max() / 2 else "black")
    return _png(fig, plt)


def training_curves_plot(history: dict[str, dict[str, list[float]]]) -> bytes | None:
    """Loss and accuracy per epoch, phases (head, fine-tune, prune, qat ...) one after another."""
    phases = [(name, h) for name, h in history.items() if h.get("loss")]
    if not phases:
        return None
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    offset = 0
    for name, h in phases:
        epochs = np.arange(offset + 1, offset + len(h["loss"]) + 1)
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            ax.plot(epochs, h[key], label=f"{name} train")
            if f"val_{key}" in h:
                ax.plot(epochs, h[f"val_{key}"], "--", label=f"{name} val")
        offset += len(h["loss"])
    ax_loss.set_title("loss", fontsize=10)
    ax_acc.set_title("accuracy", fontsize=10)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7)
    return _png(fig, plt)


def _cost(entry: dict, key: str):
    return entry.get(key) if key in ("bytes", "gzip_bytes") else entry["metrics"].get(key)


def _png(fig, plt) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
