"""The contracts every format module fulfils: what an export gets, what it returns, and how it is run.

A format module (`imgpipe.exporters.<name>`) provides:
  export(ctx: ExportContext, variant: str, dest: Path) -> Artifact   write exactly `dest`, nothing else
  open_runner(path: Path, preprocessing: Preprocessing | None = None, num_threads: int = 1) -> Runner
  read_embedded(path: Path) -> EmbeddedInfo       labels and preprocessing stored inside the artifact
Verification, benchmarks and `imgpipe predict` all go through `Runner.predict`, so they measure the same thing.
"""

from __future__ import annotations

import gzip
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgpipe.errors import ConfigError
from imgpipe.preprocessing import Preprocessing


@dataclass(frozen=True)
class ModelMetadata:
    """Human-facing facts embedded in every artifact (TFLite metadata, Core ML description, ONNX props)."""

    name: str = "ImageClassifier"
    description: str = "MobileNet image classifier trained with imgpipe"
    version: str = "1"
    author: str = "imgpipe"
    license: str = "Apache-2.0"


@dataclass(frozen=True)
class ExportOptions:
    io_type: str = "float"  # TFLite int8 input/output type: float | int8 | uint8
    palette_bits: int = 6  # Core ML palettization: 4 | 6 | 8
    coreml_sparsity: float = 0.5  # Core ML magnitude weight pruning target
    calibration_images: int = 100  # representative / calibration set size for full-integer quantization


@dataclass
class ExportContext:
    model: Any  # flat tf_keras.Model: input "image" (N, S, S, 3) float32 normalized, output softmax (N, C)
    labels: list[str]
    preprocessing: Preprocessing
    metadata: ModelMetadata
    workdir: Path  # scratch space for intermediate files (SavedModel dirs ...), removed by the caller
    representative_images: np.ndarray | None = None  # uint8 (N, S, S, 3) from the train split
    source: str = "float"  # which Keras model: float | prune | qat
    options: ExportOptions = field(default_factory=ExportOptions)

    def calibration_set(self, what: str) -> np.ndarray:
        """Up to `options.calibration_images` uint8 images spread evenly over the representative set: train splits
        come sorted by class, and the first N would calibrate activation ranges on the first classes only."""
        images = self.representative_images
        if images is None or len(images) == 0:
            raise ConfigError(f"{what} needs representative images to calibrate activation ranges; none were given")
        limit = self.options.calibration_images
        if limit < 1:
            raise ConfigError(f"calibration_images must be at least 1, got {limit}")
        return images[np.unique(np.linspace(0, len(images) - 1, min(limit, len(images))).round().astype(int))]


@dataclass
class Artifact:
    format: str
    variant: str
    path: Path
    labels: list[str]
    preprocessing: Preprocessing
    source: str = "float"
    input_quantization: dict | None = None  # {"dtype": "int8", "scale": s, "zero_point": z} when not float
    output_quantization: dict | None = None
    details: dict = field(default_factory=dict)  # format-specific facts for the manifest (opset, precision ...)

    @property
    def name(self) -> str:
        return f"{self.format}:{self.variant}" + ("" if self.source == "float" else f" ({self.source})")

    @property
    def bytes(self) -> int:
        return tree_bytes(self.path)

    @property
    def sha256(self) -> str:
        return tree_sha256(self.path)

    @property
    def gzip_bytes(self) -> int:
        return tree_gzip_bytes(self.path)


@dataclass(frozen=True)
class EmbeddedInfo:
    labels: list[str]
    preprocessing: Preprocessing | None


class Runner(ABC):
    """Loads one artifact with its format's own runtime and predicts class probabilities."""

    can_predict: bool = True
    unavailable_reason: str | None = None  # why predict cannot run here (e.g. Core ML off macOS)

    @abstractmethod
    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, S, S, 3), already resized -> float32 probabilities (N, C); normalization and
        input quantization happen inside, exactly as an app would do them."""

    def structural_checks(self) -> dict[str, bool]:
        """Named pass/fail checks of the artifact that need no prediction (used where predict is unavailable)."""
        return {}


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in _files(path))


def tree_sha256(path: Path) -> str:
    """sha256 of a file; for a directory (an .mlpackage), of its relative paths and contents in sorted order."""
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for p in _files(path):
        h.update(p.relative_to(path).as_posix().encode() + b"\0")
        h.update(bytes.fromhex(file_sha256(p)))
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_gzip_bytes(path: Path) -> int:
    """What the artifact costs inside a compressed app download (pruning only pays off here)."""
    return sum(len(gzip.compress(p.read_bytes(), compresslevel=9)) for p in _files(path))
