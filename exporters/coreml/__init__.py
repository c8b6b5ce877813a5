"""Core ML: the iOS artifact, an ML Program `.mlpackage`."""

from .export import export
from .package import read_embedded
from .readme import render_readme
from .runner import open_runner

__all__ = ["export", "open_runner", "read_embedded", "render_readme"]
