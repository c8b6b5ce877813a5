"""Running a Core ML package: through Core ML itself on macOS; elsewhere only its structure can be checked."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from ...pipeline.core.errors import ArtifactError
from ...pipeline.core.preprocessing import INPUT_NAME, Preprocessing
from ..base import Runner
from .checks import structural_checks
from .package import (
    PROBS_OUTPUT,
    classify_labels,
    coremltools,
    embedded_info,
    load_mlmodel,
    load_program,
    load_spec_only,
)

UNAVAILABLE_REASON = "Core ML prediction needs macOS (coremltools cannot run models on Linux)"


def open_runner(path: Path, preprocessing: Preprocessing | None = None, num_threads: int = 1) -> "CoreMLRunner":
    """`num_threads` is ignored: Core ML schedules its own work over CPU, GPU and Neural Engine."""
    return CoreMLRunner(Path(path), preprocessing)


class CoreMLRunner(Runner):
    """Predicts through Core ML itself on macOS; elsewhere it can only inspect the package."""

    def __init__(self, path: Path, preprocessing: Preprocessing | None = None):
        ct = coremltools()
        self.path = path
        self._spec_model = load_spec_only(ct, path)
        self._program_cache = None
        self.embedded = embedded_info(self._spec_model.get_spec(), lambda: classify_labels(self._program()))
        self.preprocessing = preprocessing or self.embedded.preprocessing
        self._model = None
        if platform.system() == "Darwin":
            self._model = load_mlmodel(ct, path, skip_model_load=False)
            self.runtime = f"Core ML (macOS, coremltools {ct.__version__})"
        else:
            self.can_predict = False
            self.unavailable_reason = UNAVAILABLE_REASON
            self.runtime = "none: structure checked only"

    def predict(self, images: np.ndarray) -> np.ndarray:
        """One image per call, as an app calls it; the probabilities come back as a dict, put in label order."""
        if self._model is None:
            raise ArtifactError(f"{self.path}: {self.unavailable_reason}")
        from PIL import Image

        rows = []
        for image in images:
            scores = self._model.predict({INPUT_NAME: Image.fromarray(np.asarray(image, dtype=np.uint8), "RGB")})
            rows.append([scores[PROBS_OUTPUT][label] for label in self.embedded.labels])
        return np.asarray(rows, dtype=np.float32)

    def structural_checks(self) -> dict[str, bool]:
        return structural_checks(self._spec_model.get_spec(), self._program(), self.embedded, self.preprocessing)

    def _program(self):
        """The pyMIL program is loaded on demand: building it reads every weight."""
        if self._program_cache is None:
            self._program_cache = load_program(self._spec_model)
        return self._program_cache
