"""`imgpipe compare A B` and the "vs last build" lines of `imgpipe build`: per artifact, what changed between two
builds (accuracy, size, latency, and which test photos are now predicted differently)."""

from __future__ import annotations

import datetime as dt

from ..reports.table import format_ms, format_percent, format_table
from ..verify.metrics import exact_mcnemar_p

REFERENCE = "keras:float"


def compare_builds(a: dict, b: dict) -> dict:
    """Differences from build `a` (earlier) to build `b` (later), JSON-ready."""
    photos = _common_photos(a, b)
    rows = [_row(REFERENCE, _reference(a), _reference(b), photos, a, b)]
    names = list(dict.fromkeys([x["name"] for x in a["artifacts"]] + [x["name"] for x in b["artifacts"]]))
    by_name = [{x["name"]: x for x in build["artifacts"]} for build in (a, b)]
    rows += [_row(name, by_name[0].get(name), by_name[1].get(name), photos, a, b) for name in names]
    return {
        "a": _describe(a),
        "b": _describe(b),
        "same_dataset": a["dataset"]["digest"] == b["dataset"]["digest"],
        "settings_changed": _settings_changed(a.get("config") or {}, b.get("config") or {}),
        "photos_compared": len(photos) if photos is not None else None,
        "photos_note": _photos_note(a, b, photos),
        "artifacts": rows,
    }


def _reference(build: dict) -> dict:
    return {
        "name": REFERENCE,
        "accuracy": build["reference"].get("accuracy"),
        "predictions": build.get("reference_predictions"),
        "published": None,
    }


def _describe(build: dict) -> dict:
    return {
        "id": build.get("id"),
        "created": build.get("created"),
        "where": build.get("out") or build.get("source"),
        "model": build.get("model"),
        "dataset": build["dataset"],
        "seconds": build.get("seconds"),
    }


def _common_photos(a: dict, b: dict) -> list[tuple[int, int, list]] | None:
    """(index in a, index in b, [path, sha256, label]) of the test photos both builds held, same path and bytes."""
    if not a.get("test_photos") or not b.get("test_photos"):
        return None
    in_b = {(p[0], p[1]): i for i, p in enumerate(b["test_photos"])}
    return [(i, in_b[(p[0], p[1])], p) for i, p in enumerate(a["test_photos"]) if (p[0], p[1]) in in_b]


def _photos_note(a: dict, b: dict, photos) -> str | None:
    if photos is not None:
        return None
    missing = [_label(x) for x in (a, b) if not x.get("test_photos")]
    return f"per-photo predictions are not recorded for {' and '.join(missing)} (not in the build history)"


def _row(name: str, x: dict | None, y: dict | None, photos, a: dict, b: dict) -> dict:
    row = {"artifact": name, "status": "both" if x and y else "new" if y else "gone"}
    for key in ("accuracy", "bytes", "gzip_bytes", "latency_ms_p50"):
        va, vb = (x or {}).get(key), (y or {}).get(key)
        row[key] = {"a": va, "b": vb, "change": None if va is None or vb is None else vb - va}
    row["published"] = {"a": (x or {}).get("published"), "b": (y or {}).get("published")}
    row["changed_photos"] = changed = _changed(x, y, photos, a["labels"], b["labels"])
    if changed is not None:  # the photos B got right and A wrong, and the other way round: McNemar's test
        row["now_right"] = sum(c["b"] == c["true"] for c in changed)
        row["now_wrong"] = sum(c["a"] == c["true"] for c in changed)
        row["mcnemar_p"] = exact_mcnemar_p(row["now_right"], row["now_wrong"])
    return row


def _changed(x, y, photos, labels_a, labels_b) -> list[dict] | None:
    if not x or not y or photos is None or x.get("predictions") is None or y.get("predictions") is None:
        return None
    changed = []
    for i, j, (path, _, truth) in photos:
        pa, pb = labels_a[x["predictions"][i]], labels_b[y["predictions"][j]]
        if pa != pb:
            changed.append({"photo": path, "true": labels_b[truth], "a": pa, "b": pb})
    return changed


def _settings_changed(a: dict, b: dict, prefix: str = "") -> list[dict]:
    changed = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            changed += _settings_changed(va, vb, f"{prefix}{key}.")
        elif va != vb:
            changed.append({"setting": f"{prefix}{key}", "a": va, "b": vb})
    return changed


def format_comparison(diff: dict, photos: int = 20) -> str:
    a, b = diff["a"], diff["b"]
    lines = [f"A: {_headline(a)}", f"B: {_headline(b)}"]
    lines.append("dataset: " + ("the same" if diff["same_dataset"] else "different content (digest changed)"))
    if diff["settings_changed"]:
        lines.append("settings changed:")
        lines += [f"  {s['setting']}: {_value(s['a'])} -> {_value(s['b'])}" for s in diff["settings_changed"]]
    lines += ["", format_table(_table_rows(diff), COLUMNS)]
    if diff["photos_note"]:
        lines.append(diff["photos_note"])
    elif photos:
        lines += _photo_lines(diff, photos)
    return "\n".join(lines)


COLUMNS = (
    "artifact",
    "accuracy A",
    "B",
    "change",
    "size A",
    "B",
    "change",
    "p50 ms A",
    "B",
    "change",
    "photos changed",
)


def _table_rows(diff: dict) -> list[list[str]]:
    rows = []
    for r in diff["artifacts"]:
        acc, size, p50 = r["accuracy"], r["bytes"], r["latency_ms_p50"]
        status = {"new": "new in B", "gone": "not in B"}.get(r["status"], "")
        changed = r["changed_photos"]
        photos = "" if changed is None else f"{len(changed)} of {diff['photos_compared']}{_right_and_wrong(r)}"
        rows.append(
            [
                r["artifact"],
                format_percent(acc["a"]) or "-",
                format_percent(acc["b"]) or "-",
                status or _points(acc["change"]),
                _mb(size["a"]),
                _mb(size["b"]),
                "" if status else _size_change(size["a"], size["b"]),
                _ms(p50["a"]),
                _ms(p50["b"]),
                "" if status else _ms_change(p50["change"]),
                photos,
            ]
        )
    return rows


def _right_and_wrong(row: dict) -> str:
    """ " (2 now right, 1 now wrong; p = 1.00)": whether the accuracy change is more than chance."""
    if not row["changed_photos"]:
        return ""
    return f" ({row['now_right']} now right, {row['now_wrong']} now wrong; p = {row['mcnemar_p']:.2f})"


def _photo_lines(diff: dict, limit: int) -> list[str]:
    by_photo: dict[tuple, list[str]] = {}
    for r in diff["artifacts"]:
        for c in r["changed_photos"] or []:
            by_photo.setdefault((c["photo"], c["true"], c["a"], c["b"]), []).append(r["artifact"])
    if not by_photo:
        return [f"no test photo changed prediction ({diff['photos_compared']} compared)"]
    lines = [f"test photos whose prediction changed ({len(by_photo)}; A -> B, true class in brackets):"]
    for (photo, true, pa, pb), names in list(by_photo.items())[:limit]:
        lines.append(f"  {photo} [{true}]: {pa} -> {pb}  ({', '.join(names)})")
    if len(by_photo) > limit:
        lines.append(f"  ... and {len(by_photo) - limit} more (--photos N, or --json for all)")
    return lines


def format_versus(diff: dict) -> list[str]:
    """The build summary's "vs last build" lines: only what changed, artifact by artifact."""
    a = diff["a"]
    when = _ago(a.get("created"))
    head = f"vs last build (#{a['id']}, {when}" + ("" if diff["same_dataset"] else ", different dataset") + "):"
    lines = [head]
    settings = [s["setting"] for s in diff["settings_changed"] if not s["setting"].startswith(("out", "history"))]
    if settings:
        lines.append(f"  settings changed: {', '.join(settings[:6])}" + (" ..." if len(settings) > 6 else ""))
    for r in diff["artifacts"]:
        if r["status"] != "both":
            lines.append(f"  {r['artifact']}: {'new' if r['status'] == 'new' else 'not built this time'}")
            continue
        acc, size, p50 = r["accuracy"], r["bytes"], r["latency_ms_p50"]
        parts = []
        if acc["a"] is not None and acc["b"] is not None:
            parts.append(
                f"accuracy {format_percent(acc['a'])} -> {format_percent(acc['b'])} ({_points(acc['change'])})"
            )
        if size["a"] is not None and size["b"] is not None and size["a"] != size["b"]:
            parts.append(f"size {_size_change(size['a'], size['b'])}")
        if p50["a"] is not None and p50["b"] is not None:
            parts.append(f"p50 {format_ms(p50['a'])} -> {format_ms(p50['b'])} ms")
        if r["changed_photos"] is not None:
            parts.append(
                f"{len(r['changed_photos'])} of {diff['photos_compared']} test photos changed prediction"
                + _right_and_wrong(r)
            )
        lines.append(f"  {r['artifact']}: " + ("; ".join(parts) or "unchanged"))
    return lines


def _headline(d: dict) -> str:
    ident = f"#{d['id']}" if d.get("id") is not None else "(not in history)"
    ds = d["dataset"]
    images = f", {ds['images']} images" if ds.get("images") else ""
    return f"{ident} {format_when(d.get('created'))}  {d.get('where') or ''}  ({ds.get('name')}{images})"


def _label(build: dict) -> str:
    return f"#{build['id']}" if build.get("id") is not None else str(build.get("source") or build.get("out"))


def format_when(created: str | None) -> str:
    if not created:
        return "?"
    try:
        return dt.datetime.fromisoformat(created).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return created


def _ago(created: str | None) -> str:
    try:
        then = dt.datetime.fromisoformat(created)
    except (TypeError, ValueError):
        return "earlier"
    seconds = (dt.datetime.now(dt.timezone.utc) - then).total_seconds()
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if unit == 'day' and n > 1 else ''} ago"
    return "just before"


def _points(change: float | None) -> str:
    return "" if change is None else f"{100 * change:+.1f} pt".replace("-0.0", "+0.0")


def _mb(v) -> str:
    return "-" if v is None else f"{v / 1e6:.2f} MB"


def _size_change(a, b) -> str:
    if a is None or b is None:
        return ""
    if a == b:
        return "same"
    change = f"{b - a:+d} B" if abs(b - a) < 1000 else f"{(b - a) / 1e3:+.1f} kB"
    return f"{change} ({100 * (b - a) / a:+.1f}%)" if a and abs(b - a) >= 1000 else change


def _ms(v) -> str:
    return "-" if v is None else format_ms(v)


def _ms_change(change) -> str:
    return "" if change is None else f"{change:+.2f}"


def _value(v) -> str:
    return "none" if v is None else str(v)
