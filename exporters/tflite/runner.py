"""Running a .tflite file with LiteRT the way an Android app does: uint8 pixels in, probabilities out."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np

from ...pipeline.core.errors import ArtifactError, first_line
from ...pipeline.core.preprocessing import Preprocessing
from ..base import LABELS_FILE, EmbeddedInfo, Runner
from .metadata import read_metadata

MAX_BATCH = 32  # larger batches only grow activation memory; LiteRT gains nothing past this on a phone-sized model


class TFLiteRunner(Runner):
    """Runs a .tflite file with LiteRT the way an Android app would: uint8 pixels in, probabilities out."""

    def __init__(self, interpreter, preprocessing: Preprocessing, path: Path):
        self.runtime = f"ai-edge-litert {version('ai-edge-litert')}"
        self.path = Path(path)
        self.preprocessing = preprocessing
        self._interpreter = interpreter
        self._batch = None
        self.input_details = interpreter.get_input_details()[0]
        self.output_details = interpreter.get_output_details()[0]
        self._pixel_table = _pixel_table(preprocessing, self.input_details)

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.uint8)
        if len(images) == 0:
            return np.zeros((0, self.output_details["shape"][-1]), dtype=np.float32)
        return np.concatenate([self._invoke(images[i : i + MAX_BATCH]) for i in range(0, len(images), MAX_BATCH)])

    def _invoke(self, images: np.ndarray) -> np.ndarray:
        self._fit_batch(len(images))
        inp, out = self.input_details, self.output_details
        self._interpreter.set_tensor(inp["index"], self._pixel_table[images, _CHANNELS])
        self._interpreter.invoke()
        return _dequantize(self._interpreter.get_tensor(out["index"]), out)

    def _fit_batch(self, n: int) -> None:
        """Resize the input only when the batch changes, so repeated single-image calls stay allocation-free."""
        if n == self._batch:
            return
        self._interpreter.resize_tensor_input(self.input_details["index"], [n, *self.input_details["shape"][1:]])
        self._interpreter.allocate_tensors()
        self._batch = n


_CHANNELS = np.arange(3)


def _pixel_table(preprocessing: Preprocessing, details: dict) -> np.ndarray:
    """What each channel's pixel value 0..255 becomes in the input tensor: normalized, then quantized with the
    tensor's own scale and zero point. Looking pixels up costs a tenth of computing them, and single-image latency
    is what apps feel; the values are the same as computing them pixel by pixel."""
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    return _quantize(preprocessing.normalize(levels[None])[0], details)


def open_runner(
    path: Path, preprocessing: Preprocessing | None = None, num_threads: int = 1, options=None
) -> TFLiteRunner:
    """A runner for `path`; without `preprocessing`, the one embedded in the file."""
    interpreter = _load_interpreter(path, num_threads)
    if preprocessing is None:
        preprocessing = read_embedded(path).preprocessing
    if preprocessing is None:
        raise ArtifactError(
            f"{path}: no preprocessing embedded in this TFLite file; pass the preprocessing "
            "(mean, std, image size) it was trained with"
        )
    return TFLiteRunner(interpreter, preprocessing, path)


def read_embedded(path: Path) -> EmbeddedInfo:
    """Labels and preprocessing from the file's TFLite metadata when it has some, else labels.txt beside it."""
    path = Path(path)
    _load_interpreter(path, 1)
    metadata = read_metadata(path) or {}  # files from other tools may have none: labels.txt then
    labels = metadata.get("labels") or _labels_beside(path)
    preprocessing = metadata.get("preprocessing")
    return EmbeddedInfo(
        labels=list(labels), preprocessing=Preprocessing.from_dict(preprocessing) if preprocessing else None
    )


def _labels_beside(path: Path) -> list[str]:
    labels_file = path.with_name(LABELS_FILE)
    if not labels_file.is_file():
        return []
    return [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]


def _load_interpreter(path: Path, num_threads: int):
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path}: LiteRT cannot load this file as a TFLite model ({first_line(e)})") from None
    return interpreter


def io_details(flatbuffer: bytes) -> tuple[dict, dict]:
    """Input and output tensor details as the converter wrote them, the source of truth for quantization."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    return interpreter.get_input_details()[0], interpreter.get_output_details()[0]


def quantization(details: dict) -> dict | None:
    if np.dtype(details["dtype"]) == np.float32:
        return None
    scale, zero_point = details["quantization"]
    return {"dtype": np.dtype(details["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}


def _quantize(x: np.ndarray, details: dict) -> np.ndarray:
    """Float input -> the tensor's integer type with its own scale and zero point (round, then clip).

    With mean = std = 127.5 calibration yields scale 2/255, which puts every pixel exactly halfway between two
    steps, so the rounding rule decides every value. Halves round up (the 1e-3 absorbs float32 error) so that a
    uint8 input is the raw pixel and an int8 input is pixel - 128: what an app feeds the model.
    """
    dtype = np.dtype(details["dtype"])
    if dtype == np.float32:
        return x
    scale, zero_point = details["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.floor(x / scale + zero_point + 0.5 + 1e-3), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, details: dict) -> np.ndarray:
    if np.dtype(details["dtype"]) == np.float32:
        return y.astype(np.float32, copy=True)
    scale, zero_point = details["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
