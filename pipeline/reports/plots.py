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
LABEL_OFFSETS = [(7, 5), (7, -12), (-7, 5), (-7, -12), (0, 10), (0, -16), (12, -3), (-12, -3), (16, 12), (-16, 12)]


def plotted_entries(entries: list[dict], cost_key: str) -> list[dict]:
    """The artifacts a trade-off plot can show: those with a measured accuracy and cost."""
    return [e for e in entries if e["metrics"].get("accuracy") is not None and _cost(e, cost_key) is not None]


def tradeoff_plot(
    entries: list[dict], cost_key: str, cost_label: str, scale: float = 1.0, numbers: dict[int, int] | None = None
) -> bytes | None:
    """Accuracy against a cost (size or latency) for every measured artifact, each point numbered (the number
    is the artifact's row in the report's key, the same in every plot). Colour is the format, shape the model it
    came from, red crosses failed a gate. Points that fall on top of each other share one label ("1,3"), and
    labels are placed where they overlap neither another label nor a point. The Pareto front joins only
    artifacts that passed their gates."""
    measured = plotted_entries(entries, cost_key)
    if not measured:
        return None
    plt = _pyplot()
    numbers = numbers or {id(e): i + 1 for i, e in enumerate(entries)}
    points = [(_cost(e, cost_key) * scale, 100 * e["metrics"]["accuracy"]) for e in measured]
    passed = [i for i, e in enumerate(measured) if e.get("gates", {}).get("passed") is not False]
    front = [passed[k] for k in pareto_front([points[i] for i in passed])]
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=100)
    seen = set()
    for i, (e, (x, y)) in enumerate(zip(measured, points)):
        rejected = i not in passed
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
    if front:
        ax.plot(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            "--",
            color="black",
            alpha=0.5,
            label="Pareto front (passed gates)",
            zorder=2,
        )
    xmax = max(x for x, _ in points)
    ax.set_xlim(left=0, right=xmax * 1.3 if xmax > 0 else 1)  # from zero, so the ratios between artifacts show
    ys = [y for _, y in points]
    ax.set_ylim(max(0, min(ys) - 8), min(105, max(ys) + 6) if max(ys) - min(ys) < 90 else 105)
    ax.set_xlabel(cost_label)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    place_labels(ax, points, [numbers[id(e)] for e in measured])
    return _png(fig, plt, layout=False)


def place_labels(ax, points: list[tuple[float, float]], numbers: list[int], merge_px: float = 9.0) -> list:
    """Number every point legibly: points closer than `merge_px` share one label; each label takes the first
    offset whose box overlaps no placed label, no point and stays inside the axes. Returns the text objects."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    pixels = [tuple(to_px(p)) for p in points]
    groups: list[list[int]] = []
    for i, (px, py) in enumerate(pixels):
        for group in groups:
            gx, gy = pixels[group[0]]
            if abs(px - gx) <= merge_px and abs(py - gy) <= merge_px:
                group.append(i)
                break
        else:
            groups.append([i])
    inside = ax.get_window_extent(renderer)
    placed_boxes, texts = [], []
    marker_boxes = [(x - 5, y - 5, x + 5, y + 5) for x, y in pixels]
    for group in sorted(groups, key=lambda g: pixels[g[0]]):
        label = ",".join(str(numbers[i]) for i in sorted(group, key=lambda i: numbers[i]))
        anchor = points[group[0]]
        text = None
        for dx, dy in LABEL_OFFSETS:
            if text is not None:
                text.remove()
            text = ax.annotate(
                label,
                anchor,
                textcoords="offset points",
                xytext=(dx, dy),
                fontsize=8,
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                zorder=4,
            )
            box = text.get_window_extent(renderer)
            rect = (box.x0, box.y0, box.x1, box.y1)
            clear = not any(_overlap(rect, other) for other in placed_boxes + marker_boxes)
            if clear and box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= inside.y0 and box.y1 <= inside.y1:
                break
        placed_boxes.append(rect)
        texts.append(text)
    return texts


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def sizes_plot(entries: list[dict], numbers: dict[int, int] | None = None) -> bytes | None:
    """Raw and gzip size of every artifact, published or not, Core ML included (its size is always known)."""
    sized = [e for e in entries if e.get("bytes")]
    if not sized:
        return None
    plt = _pyplot()
    numbers = numbers or {id(e): i + 1 for i, e in enumerate(entries)}
    names = [f"{numbers[id(e)]}  {artifact_name(e)}" for e in sized]
    raw = [e["bytes"] / 1e6 for e in sized]
    packed = [(e.get("gzip_bytes") or 0) / 1e6 for e in sized]
    fig, ax = plt.subplots(figsize=(7.2, 0.42 * len(sized) + 1.3), dpi=100)
    rows = np.arange(len(sized))
    ax.barh(rows - 0.2, raw, height=0.4, color="tab:blue", label="file")
    ax.barh(rows + 0.2, packed, height=0.4, color="tab:gray", label="gzip (download)")
    for y, (r, g) in enumerate(zip(raw, packed)):
        ax.text(r, y - 0.2, f" {r:.2f}", va="center", fontsize=7)
        ax.text(g, y + 0.2, f" {g:.2f}", va="center", fontsize=7)
    ax.set_yticks(rows, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(raw) * 1.2)
    ax.set_xlabel("MB")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=7, frameon=False)
    ax.grid(axis="x", alpha=0.3)
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
    """Loss and accuracy per epoch, phases (head then fine-tune; or prune; or qat) one after another."""
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


def regularization_path_plot(path: dict[str, list[float]], chosen: float | None) -> bytes | None:
    """The solved head's loss at each L2 strength tried (train solid, val dashed), the chosen one marked: where
    an epoch history would be for a head trained in epochs."""
    if not path.get("l2"):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 3.4), dpi=100)
    ax.plot(path["l2"], path["train_loss"], marker="o", label="train loss (with penalty)")
    if path.get("val_loss"):
        ax.plot(path["l2"], path["val_loss"], "--", marker="o", label="val loss")
    if chosen is not None:
        ax.axvline(chosen, color="grey", linewidth=1, label=f"chosen {chosen:g}")
    ax.set_xscale("log")
    ax.set_xlabel("L2 strength")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig, plt)


def _cost(entry: dict, key: str):
    return entry.get(key) if key in ("bytes", "gzip_bytes") else entry["metrics"].get(key)


def reliability_plot(bins: list[dict]) -> bytes | None:
    """The reliability diagram: accuracy per confidence bin against the diagonal a calibrated model sits on."""
    filled = [b for b in bins if b["count"]]
    if not filled:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=100)
    width = filled[0]["high"] - filled[0]["low"]
    ax.bar(
        [b["low"] for b in filled],
        [b["accuracy"] for b in filled],
        width=width,
        align="edge",
        color="tab:blue",
        edgecolor="white",
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for b in filled:
        ax.text(b["low"] + width / 2, min(b["accuracy"] + 0.02, 0.97), str(b["count"]), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy on the test split")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig, plt)


def _png(fig, plt, layout: bool = True) -> bytes:
    buf = io.BytesIO()
    if layout:
        fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
