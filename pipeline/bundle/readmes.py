"""README.md for each platform folder of a bundle, with code that uses this build's file names, labels and input
size, so an app developer can paste it as is. Each format package renders its own (`render_readme`)."""

from __future__ import annotations

from pathlib import Path

from ...exporters.registry import FORMATS
from ..core.files import write_text_atomic

README_NAME = "README.md"


def write_platform_readmes(bundle: Path, manifest: dict) -> list[Path]:
    """One README.md beside each format's default artifact (android/, ios/, onnx/); run before zipping the
    platform folders so the zips carry them."""
    written = []
    for spec in FORMATS.values():
        entries = [e for e in manifest["artifacts"] if e["format"] == spec.name]
        if not entries:
            continue
        main = default_entry(entries, spec.default_variant)
        others = [e for e in entries if e is not main]
        path = (Path(bundle) / main["path"]).parent / README_NAME
        written.append(write_text_atomic(path, spec.load().render_readme(manifest, main, others)))
    return written


def default_entry(entries: list[dict], default_variant: str) -> dict:
    """The float default variant (`model.tflite`, `<Name>.mlpackage`, `model.onnx`) when the build made it."""
    return next(
        (e for e in entries if e["variant"] == default_variant and e.get("source", "float") == "float"), entries[0]
    )
