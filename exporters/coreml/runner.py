"""Running a Core ML package: through Core ML itself on macOS; elsewhere through imgpipe's executor for the
package's ML Program (`mil/`), which reads the same bytes Xcode ships and runs them with onnxruntime.

An fp16 program runs with every fp16 tensor rounded after each op, as the GPU and Neural Engine compute
(`coreml_compute = "fp16"`, the default), or in fp32 as Core ML's CPU path does (`"fp32"`). The executor's
timings are this machine's CPU, not a phone's, so no latency is reported for Core ML off a device.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from ...pipeline.config import ExportOptions
from ...pipeline.core.errors import ArtifactError
from ...pipeline.core.preprocessing import INPUT_NAME, Preprocessing
from ..base import Runner
from .checks import structural_checks
from .mil.errors import UnsupportedOpError
from .mil.executor import MilExecutor
from .package import PROBS_OUTPUT, coremltools, embedded_info, open_package

COMPUTE = {"fp16": "auto", "fp32": "fp32"}  # coreml_compute option -> executor mode
NO_DEVICE_LATENCY = "Core ML latency needs an Apple device; the Linux executor's time is not a phone's"


def open_runner(
    path: Path, preprocessing: Preprocessing | None = None, num_threads: int = 1, options: ExportOptions | None = None
) -> CoreMLRunner:
    return CoreMLRunner(Path(path), preprocessing, num_threads, (options or ExportOptions()).coreml_compute)


class CoreMLRunner(Runner):
    def __init__(self, path: Path, preprocessing: Preprocessing | None, num_threads: int, compute: str):
        self.path = path
        self._package, self._program = open_package(path)
        self.embedded = embedded_info(self._package.model, self._program)
        self.preprocessing = preprocessing or self.embedded.preprocessing
        self._core_ml = self._executor = None
        if platform.system() == "Darwin":
            ct = coremltools()
            self._core_ml = ct.models.MLModel(str(path))
            self.runtime = f"Core ML (macOS, coremltools {ct.__version__})"
            return
        self.latency_unavailable_reason = NO_DEVICE_LATENCY
        try:
            self._executor = MilExecutor(self._package, self._program, COMPUTE[compute], num_threads)
        except UnsupportedOpError as e:
            self.can_predict, self.unavailable_reason, self.runtime = False, str(e), "none: structure checked only"
            return
        self.runtime = f"imgpipe-mil ({self._executor.compute})"

    def predict(self, images: np.ndarray) -> np.ndarray:
        if self._executor is not None:
            return self._in_label_order(self._executor.labels, self._executor.predict(np.asarray(images, np.uint8)))
        if self._core_ml is None:
            raise ArtifactError(self.unavailable_reason or f"{self.path}: cannot run here")
        return self._predict_with_core_ml(images)

    def _predict_with_core_ml(self, images: np.ndarray) -> np.ndarray:
        """One image per call, as an app calls it; the probabilities come back as a dict, put in label order."""
        from PIL import Image

        rows = []
        for image in images:
            scores = self._core_ml.predict({INPUT_NAME: Image.fromarray(np.asarray(image, dtype=np.uint8), "RGB")})
            rows.append([scores[PROBS_OUTPUT][label] for label in self.embedded.labels])
        return np.asarray(rows, dtype=np.float32)

    def _in_label_order(self, program_labels: list[str], probs: np.ndarray) -> np.ndarray:
        """Columns in the embedded label order, which every other format and the manifest use."""
        if program_labels == self.embedded.labels:
            return probs
        if sorted(program_labels) != sorted(self.embedded.labels):
            raise ArtifactError(f"{self.path}: the classify labels do not match the labels embedded in the package")
        return probs[:, [program_labels.index(label) for label in self.embedded.labels]]

    def structural_checks(self) -> dict[str, bool]:
        return structural_checks(self._package.model, self._program, self.embedded, self.preprocessing)
