"""Running an .onnx file with onnxruntime, and reading the labels and preprocessing stored inside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...pipeline.core.errors import ArtifactError, first_line
from ...pipeline.core.preprocessing import Preprocessing
from ..base import EmbeddedInfo, Runner


class OnnxRunner(Runner):
    """onnxruntime on CPU with a fixed thread count, so latency numbers are comparable across runs."""

    def __init__(self, path: Path, preprocessing: Preprocessing, num_threads: int = 1):
        import onnxruntime as ort

        self.runtime = f"onnxruntime {ort.__version__}"
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises pybind errors (InvalidProtobuf, NoSuchFile, Fail) with no common base
            raise ArtifactError(f"{path}: onnxruntime cannot load it ({first_line(e)}); export it again") from e
        self.preprocessing = preprocessing
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, images: np.ndarray) -> np.ndarray:
        (probs,) = self.session.run(None, {self.input_name: self.preprocessing.normalize(images)})
        return np.asarray(probs, dtype=np.float32)


def open_runner(
    path: Path, preprocessing: Preprocessing | None = None, num_threads: int = 1, options=None
) -> OnnxRunner:
    """Runner for an artifact; without `preprocessing`, the one embedded at export is used."""
    if preprocessing is None:
        preprocessing = read_embedded(path).preprocessing
    if preprocessing is None:
        raise ArtifactError(f"{path}: no preprocessing is embedded in this ONNX file; pass it explicitly")
    return OnnxRunner(path, preprocessing, num_threads)


def read_embedded(path: Path) -> EmbeddedInfo:
    """Labels and preprocessing from `metadata_props`; a file imgpipe did not write has no labels and is refused."""
    props = _read_props(Path(path))
    if "labels" not in props:
        raise ArtifactError(f"{path}: no 'labels' in the ONNX metadata_props; it was not exported by imgpipe")
    try:
        labels = [str(label) for label in json.loads(props["labels"])]
        pre = props.get("preprocessing")
        preprocessing = Preprocessing.from_dict(json.loads(pre)) if pre else None
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{path}: unreadable imgpipe metadata in the ONNX file ({first_line(e)})") from e
    return EmbeddedInfo(labels=labels, preprocessing=preprocessing)


def _read_props(path: Path) -> dict[str, str]:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (OSError, DecodeError, ValueError) as e:
        raise ArtifactError(f"{path}: not a loadable ONNX file ({first_line(e)}); export it again") from e
    return {p.key: p.value for p in model.metadata_props}
