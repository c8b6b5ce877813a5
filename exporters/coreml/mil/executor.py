"""Run a Core ML image classifier package on Linux: the package's own program, through onnxruntime.

`open_program` reads the bytes Xcode would ship (manifest, Model protobuf, weight blobs), expands compressed
weights, translates the ML Program op by op into an ONNX graph and keeps an onnxruntime session for it. A NumPy
walk over the ops took ~350 ms per 224 px MobileNetV2 image; the onnxruntime graph takes a few ms (fp32) to
~10-15 ms (fp16 emulated) on one thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ProgramError
from .package import Package, read_package
from .program import Program, load_program
from .session import make_session
from .translate import PROBABILITIES, RUNTIME_OPS, translate

COMPUTE_MODES = ("auto", "fp32")
EMULATED = "fp16 compute emulated"
FP32 = "fp32 compute"


def open_program(package: Path, compute: str = "auto", num_threads: int = 1) -> MilExecutor:
    """compute="auto" runs an fp16 program the way the GPU / Neural Engine does (every fp16 tensor rounded to
    fp16 after each op); "fp32" runs it with fp32 tensors, as the CPU path does. fp32 programs always run fp32."""
    package = read_package(Path(package))
    return MilExecutor(package, load_program(package, set(RUNTIME_OPS)), compute, num_threads)


class MilExecutor:
    """labels / image_size / program_precision / compute / op_types describe what runs; `onnx_model` is the
    translated graph, kept for inspection."""

    def __init__(self, spec: Package, program: Program, compute: str = "auto", num_threads: int = 1):
        if compute not in COMPUTE_MODES:
            raise ValueError(f"compute must be one of {', '.join(COMPUTE_MODES)}, not {compute!r}")
        package = self.package = spec.path
        self.op_types: list[str] = program.op_types
        self.program_precision = "fp16" if any(v.dtype == "fp16" for op in program.ops for v in op.outputs) else "fp32"
        emulate = self.program_precision == "fp16" and compute == "auto"
        self.compute = EMULATED if emulate else FP32
        self._channel_order = _channel_order(spec)
        translation = translate(program, package, emulate_fp16=emulate)
        self.labels: list[str] = translation.labels
        self.image_size: tuple[int, int] = tuple(program.inputs[0].shape[2:4])
        self._input_name = translation.input_name
        self.onnx_model = translation.model
        self._session = make_session(translation.model, num_threads, package)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) -> float32 (N, len(labels)), fed as Core ML feeds a CGImage of that size:
        float pixel values 0..255, planar in the program's channel order."""
        images = np.asarray(images)
        height, width = self.image_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (height, width, 3):
            raise ValueError(
                f"expected uint8 images of shape (N, {height}, {width}, 3), got {images.dtype} {images.shape}"
            )
        planar = images[..., self._channel_order].transpose(0, 3, 1, 2).astype(np.float32)
        (probabilities,) = self._session.run([PROBABILITIES], {self._input_name: planar})
        return probabilities.astype(np.float32, copy=False)


def _channel_order(spec) -> list[int]:
    """Core ML hands the program the image in the color space the description declares."""
    inputs = spec.model.description.input
    if len(inputs) != 1 or inputs[0].type.WhichOneof("Type") != "imageType":
        raise ProgramError(spec.path, "the model's input is not an image")
    image = inputs[0].type.imageType
    space = type(image).ColorSpace.Name(image.colorSpace)
    if space not in ("RGB", "BGR"):
        raise ProgramError(spec.path, f"image color space {space} is not supported (RGB and BGR are)")
    return [0, 1, 2] if space == "RGB" else [2, 1, 0]
