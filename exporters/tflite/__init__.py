"""TFLite: the Android artifact, run with LiteRT (MediaPipe Tasks and the Task Library read its metadata)."""

from .export import export
from .readme import render_readme
from .runner import open_runner, read_embedded

__all__ = ["export", "open_runner", "read_embedded", "render_readme"]
