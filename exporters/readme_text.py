"""Pieces every format's README shares: the one-line summary of an artifact, its other variants, sizes."""

from __future__ import annotations

from pathlib import PurePosixPath

MAX_RESULTS = 3  # labels the snippets return


def summary(manifest: dict, entry: dict) -> str:
    p = manifest["preprocessing"]
    labels = manifest["labels"]
    return (
        f"`{file_name(entry)}` ({entry['variant']}, {mb(entry.get('bytes'))}) classifies a photo into "
        f"{len(labels)} labels: {', '.join(f'`{label}`' for label in labels)}. Input: RGB "
        f"{p['image_size']}x{p['image_size']}, the whole image resized (no crop), then "
        f"(pixel - {same(p['mean'])}) / {same(p['std'])}."
    )


def other_variants(others: list[dict], how: str) -> list[str]:
    if not others:
        return []
    lines = ["", f"Other variants in this folder ({how}):", ""]
    for e in others:
        accuracy = (e.get("metrics") or {}).get("accuracy")
        measured = f", test accuracy {accuracy:.1%}" if accuracy is not None else ""
        source = "" if e.get("source", "float") == "float" else f" from the {e['source']} model"
        lines.append(f"- `{file_name(e)}`: {e['variant']}{source}, {mb(e.get('bytes'))}{measured}")
    return lines


def title(manifest: dict) -> str:
    model = manifest.get("model", {})
    return f"{model.get('name', 'image classifier')} {model.get('version', '')}".rstrip()


def file_name(entry: dict) -> str:
    return PurePosixPath(entry["path"]).name


def mb(n) -> str:
    return "size unknown" if n is None else f"{n / 1e6:.2f} MB"


def deployment(target: str) -> str:
    """coremltools' target names ("iOS15") as Apple writes them ("iOS 15")."""
    return target.replace("iOS", "iOS ").replace("macOS", "macOS ")


def same(values: list[float]):
    return values[0] if len(set(values)) == 1 else list(values)
