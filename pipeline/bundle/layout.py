"""Where things go in a bundle: one folder per format's platform, file names that say what a file is, the labels
file beside each artifact, and taking out what failed its gates."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ...exporters.base import LABELS_FILE, Artifact
from ...exporters.registry import FormatSpec
from ..core.files import write_text_atomic


def artifact_path(bundle: Path, spec: FormatSpec, variant: str, source: str, model_name: str) -> Path:
    """`android/model.tflite` / `ios/<Name>.mlpackage` for a format's default float variant; otherwise the
    variant (and the model-level optimization it came from) is in the name, so a file name never hides what it is."""
    stem = "model"
    if spec.name == "coreml":  # Xcode names the generated Swift class after the file
        stem = re.sub(r"[^A-Za-z0-9]", "", model_name) or "Model"
    tags = ([] if source == "float" else [source]) + ([] if variant == spec.default_variant else [variant])
    folder = Path(bundle) / spec.bundle_dir
    folder.mkdir(exist_ok=True)
    return folder / ("_".join([stem, *tags]) + spec.suffix)


def write_labels(artifacts: list[Artifact], labels: list[str]) -> None:
    for folder in {a.path.parent for a in artifacts}:
        write_text_atomic(folder / LABELS_FILE, "\n".join(labels) + "\n")


def remove_artifact(artifact: Artifact) -> None:
    """Take a rejected artifact out of the staged bundle (and its folder, if it was the last thing in it), so
    nothing over budget can be shipped by accident."""
    path = artifact.path
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    if not any(path.parent.iterdir()):
        path.parent.rmdir()
