"""ONNX: a portable float or QDQ-int8 graph, run with onnxruntime."""

from .export import export
from .readme import render_readme
from .runner import open_runner, read_embedded

__all__ = ["export", "open_runner", "read_embedded", "render_readme"]
