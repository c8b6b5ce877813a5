"""The contracts every format package fulfils: what an export gets, what it returns, and how it is run.

A format package (`imgpipe.exporters.<name>`) is a `FormatModule`. Verification, evaluation, the benchmarks and
`imgpipe predict` all go through `Runner.predict`, so they measure the same thing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

from ..pipeline.config import ExportOptions, ModelMetadata
from ..pipeline.core.errors import BundleError
from ..pipeline.core.files import tree_bytes, tree_gzip_bytes, tree_sha256
from ..pipeline.core.preprocessing import Preprocessing

LABELS_FILE = "labels.txt"  # beside every artifact in a bundle, and packed inside the TFLite metadata


@dataclass
class ExportContext:
    model: Any  # flat tf_keras.Model: input "image" (N, S, S, 3) float32 normalized, output softmax (N, C)
    labels: list[str]
    preprocessing: Preprocessing
    metadata: ModelMetadata
    workdir: Path  # scratch space for intermediate files (SavedModel dirs ...), removed by the caller
    calibration_images: np.ndarray | None = None  # uint8 (N, S, S, 3) train-split images for int8 calibration
    source: str = "float"  # which Keras model: float | prune | qat
    options: ExportOptions = field(default_factory=ExportOptions)
    # Conversions every export of this same model can reuse (e.g. Core ML's fp16 program, which each compressed
    # variant starts from); the build keeps one per source model.
    memo: dict = field(default_factory=dict)

    def calibration_set(self, what: str) -> np.ndarray:
        if self.calibration_images is None or len(self.calibration_images) == 0:
            from ..pipeline.core.errors import ConfigError

            raise ConfigError(f"{what} needs representative images to calibrate activation ranges; none were given")
        return self.calibration_images


@dataclass
class Artifact:
    """One exported file (or .mlpackage folder) and what it was made from; sizes and hash are read once."""

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

    @cached_property
    def bytes(self) -> int:
        return tree_bytes(self.path)

    @cached_property
    def sha256(self) -> str:
        return tree_sha256(self.path)

    @cached_property
    def gzip_bytes(self) -> int:
        return tree_gzip_bytes(self.path)

    @classmethod
    def from_entry(cls, entry: dict, bundle: Path, labels: list[str], preprocessing: Preprocessing) -> Artifact:
        """The artifact a manifest entry describes; its path must stay inside the bundle and exist."""
        return cls(
            entry["format"],
            entry["variant"],
            inside_bundle(bundle, entry["path"]),
            list(labels),
            preprocessing,
            entry.get("source", "float"),
            entry.get("input_quantization"),
            entry.get("output_quantization"),
            entry.get("details") or {},
        )


def inside_bundle(bundle: Path, relpath: str) -> Path:
    """`bundle/relpath`, refusing paths that leave the bundle: a manifest is data, not a licence to read anywhere."""
    bundle = Path(bundle)
    rel = PurePosixPath(str(relpath))
    path = (bundle / rel).resolve()
    if rel.is_absolute() or ".." in rel.parts or not path.is_relative_to(bundle.resolve()):
        raise BundleError(f"{bundle}: the manifest lists '{relpath}', which is outside the bundle; rebuild the bundle")
    if not path.exists():
        raise BundleError(f"{bundle / rel}: listed in the manifest but missing; restore the bundle or rebuild it")
    return bundle / rel


@dataclass(frozen=True)
class EmbeddedInfo:
    labels: list[str]
    preprocessing: Preprocessing | None


class Runner(ABC):
    """Loads one artifact with its format's own runtime and predicts class probabilities."""

    can_predict: bool = True
    unavailable_reason: str | None = None  # why predict cannot run here
    latency_unavailable_reason: str | None = None  # why this machine's timing would not mean what apps see
    runtime: str = ""  # what computes the numbers, for the manifest: "onnxruntime 1.32.0", ...

    @abstractmethod
    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, S, S, 3), already resized -> float32 probabilities (N, C); normalization and
        input quantization happen inside, exactly as an app would do them."""

    def structural_checks(self) -> dict[str, bool]:
        """Named pass/fail checks of the artifact that need no prediction."""
        return {}


class FormatModule(Protocol):
    """What one format package provides; `registry.FORMATS` says everything else about the format."""

    def export(self, ctx: ExportContext, variant: str, dest: Path) -> Artifact:
        """Write exactly `dest` (nothing else) and describe it."""

    def open_runner(
        self,
        path: Path,
        preprocessing: Preprocessing | None = None,
        num_threads: int = 1,
        options: ExportOptions | None = None,
    ) -> Runner:
        """A runner for the artifact at `path`; without `preprocessing`, the one embedded in it; `options` are the
        format options that change how it runs (most formats have none)."""

    def read_embedded(self, path: Path) -> EmbeddedInfo:
        """Labels and preprocessing stored inside the artifact."""

    def render_readme(self, manifest: dict, main: dict, others: list[dict]) -> str:
        """README.md for the artifact's bundle folder: how an app uses `main` (a manifest entry)."""
