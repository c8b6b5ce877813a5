"""`imgpipe predict`: classify photos with one artifact, exactly as an app would run it.

The target is a model file (.tflite, .onnx, .mlpackage) or a bundle folder. For a bundle the artifact is the first
that can predict on this machine, float default variants before optimized ones, and TFLite before ONNX before
Core ML: the fp32 TFLite model is what Android apps ship and what every other artifact was compared with, ONNX is
the same float graph, and Core ML only runs on macOS. Labels and preprocessing come from the bundle's manifest, or
for a model file from its embedded metadata, falling back to the manifest of the bundle the file sits in.

Images are decoded with the training contract (`load_image`). A file named explicitly that cannot be read is an
error; unreadable files found inside a folder are reported and skipped, so one broken photo does not hide the
results for the rest of the folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...exporters.base import Runner, inside_bundle
from ...exporters.registry import FORMATS, FormatSpec, format_for_path, open_runner
from ..bundle.manifest import MANIFEST_NAME, read_manifest
from ..core.errors import ArtifactError, ConfigError, ImageError
from ..core.preprocessing import IMAGE_SUFFIXES, Preprocessing, load_image, unreadable_reason
from ..reports.table import format_table

log = logging.getLogger(__name__)
BATCH = 32  # images decoded and predicted at a time, so a folder of thousands of photos needs little memory


@dataclass
class _Loaded:
    runner: Runner  # one whose can_predict is True
    preprocessing: Preprocessing
    spec: FormatSpec
    name: str  # what results call the artifact: its bundle-relative path, or the path as given
    labels: list[str]


def predict(target: Path, images: list[Path], top_k: int = 3, warn: Callable[[str], None] | None = None) -> list[dict]:
    """Top-k labels for every image; `warn` receives one line per skipped file (default: a logged warning)."""
    warn = warn or log.warning
    if top_k < 1:
        raise ConfigError(f"--top-k {top_k}: must be at least 1")
    files = _expand(images)
    loaded = _load(Path(target))
    size = loaded.preprocessing.image_size
    results, skipped = [], []
    for start in range(0, len(files), BATCH):
        chunk, pixels = [], []
        for path, explicit in files[start : start + BATCH]:
            try:
                pixels.append(load_image(path, size))
                chunk.append(path)
            except Exception as e:  # PIL raises many types for broken files
                message = f"{path}: cannot read as an image ({unreadable_reason(e)})"
                if explicit:
                    raise ImageError(
                        f"{message}; check the file or pass a readable {'/'.join(sorted(IMAGE_SUFFIXES))} image"
                    ) from None
                warn(f"{message}; skipped")
                skipped.append(message)
        if chunk:
            results.extend(_top_k(loaded, chunk, loaded.runner.predict(np.stack(pixels)), top_k))
    if skipped and not results:
        raise ImageError(f"{skipped[0]}; none of the {len(skipped)} image file(s) could be read")
    return results


def format_predictions(results: list[dict]) -> str:
    """One row per image with its top-k labels and scores, under a line naming the artifact used."""
    if not results:
        return "no images"
    k = max(len(r["top_k"]) for r in results)
    rows = [[r["image"], *(f"{p['label']} {p['score']:.1%}" for p in r["top_k"])] for r in results]
    header = f"model: {results[0]['artifact']} ({results[0]['format']})"
    return header + "\n" + format_table(rows, ["image", *(f"top-{i + 1}" for i in range(k))])


def _expand(paths: list[Path]) -> list[tuple[Path, bool]]:
    """(file, named explicitly) in the given order, folders expanded recursively and sorted, duplicates dropped."""
    if not paths:
        raise ConfigError("no images given; pass image files or folders of images")
    files: dict[Path, bool] = {}
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise ImageError(
                    f"{path}: no image files inside (looked for {', '.join(sorted(IMAGE_SUFFIXES))} "
                    "in every sub-folder)"
                )
            for p in found:
                files.setdefault(p, False)
        elif path.is_file():
            files[path] = True
        else:
            raise ImageError(f"{path}: no such file or folder; pass image files or folders of images")
    return list(files.items())


def _load(target: Path) -> _Loaded:
    if not target.exists():
        raise ConfigError(
            f"{target}: no such file or folder; pass a .tflite, .onnx or .mlpackage model "
            "or a bundle folder (OUT/bundle)"
        )
    if target.is_dir() and not any(target.name.endswith(s.suffix) for s in FORMATS.values()):
        return _load_from_bundle(target)
    if target.name == MANIFEST_NAME:
        return _load_from_bundle(target.parent)
    return _load_file(target)


def _load_from_bundle(bundle: Path) -> _Loaded:
    manifest = read_manifest(bundle)
    preprocessing = Preprocessing.from_dict(manifest["preprocessing"])
    reasons = []
    for entry in _by_preference(manifest["artifacts"]):
        spec = FORMATS[entry["format"]]
        runner = open_runner(spec.name, inside_bundle(bundle, entry["path"]), preprocessing)
        if runner.can_predict:
            return _Loaded(runner, preprocessing, spec, entry["path"], list(manifest["labels"]))
        reasons.append(f"{entry['path']}: {runner.unavailable_reason}")
    raise ArtifactError(
        f"{bundle}: no artifact in this bundle can predict on this machine "
        f"({'; '.join(reasons) or 'it lists none'}); use a bundle built with tflite or onnx targets"
    )


def _by_preference(entries: list[dict]) -> list[dict]:
    """Float default variants first (the reference numbers), then by format preference, then manifest order."""

    def rank(item):
        i, e = item
        spec = FORMATS[e["format"]]
        default = e["variant"] == spec.default_variant and e.get("source", "float") == "float"
        return (not default, spec.predict_rank, i)

    known = [(i, e) for i, e in enumerate(entries) if e["format"] in FORMATS]  # a newer imgpipe's formats
    return [e for _, e in sorted(known, key=rank)]


def _load_file(path: Path) -> _Loaded:
    spec = format_for_path(path)
    module = spec.load()
    embedded = module.read_embedded(path)
    labels, preprocessing = embedded.labels, embedded.preprocessing
    if not labels or preprocessing is None:
        manifest = _enclosing_manifest(path)
        if manifest is None:
            missing = " and ".join(
                name for name, absent in (("labels", not labels), ("preprocessing", preprocessing is None)) if absent
            )
            raise ArtifactError(
                f"{path}: no {missing} embedded in the file and no {MANIFEST_NAME} beside it; "
                "predict with its bundle folder, or keep the file inside its bundle"
            )
        labels = labels or list(manifest["labels"])
        preprocessing = preprocessing or Preprocessing.from_dict(manifest["preprocessing"])
    runner = open_runner(spec.name, path, preprocessing)
    if not runner.can_predict:
        raise ArtifactError(
            f"{path}: {runner.unavailable_reason}; run `imgpipe predict` on a Mac, or pass the "
            "bundle's .tflite or .onnx model"
        )
    return _Loaded(runner, preprocessing, spec, str(path), list(labels))


def _enclosing_manifest(path: Path) -> dict | None:
    """The manifest of the bundle an artifact sits in: bundle/<platform folder>/<artifact>."""
    for folder in list(path.resolve().parents)[:2]:
        if (folder / MANIFEST_NAME).is_file():
            return read_manifest(folder)
    return None


def _top_k(loaded: _Loaded, paths: list[Path], probs: np.ndarray, k: int) -> list[dict]:
    if probs.shape[1] != len(loaded.labels):
        raise ArtifactError(
            f"{loaded.name}: the model outputs {probs.shape[1]} scores but has "
            f"{len(loaded.labels)} labels; rebuild the bundle"
        )
    results = []
    for path, p in zip(paths, probs):
        best = np.argsort(-p, kind="stable")[:k]
        results.append(
            {
                "image": str(path),
                "artifact": loaded.name,
                "format": loaded.spec.name,
                "top_k": [{"label": loaded.labels[i], "score": float(p[i])} for i in best],
            }
        )
    return results
