"""The Python API: `imgpipe.build(...)` takes the command line's options by name and returns a typed result, so
notebooks and other tools need no subprocess. The CLI goes through the same two functions."""

from __future__ import annotations

from pathlib import Path

from .build import ArtifactResult, BuildResult, run_build
from .settings import export_config, make_config

__all__ = ["ArtifactResult", "BuildResult", "build", "export"]


def build(config: str | Path | None = None, **options) -> BuildResult:
    """`imgpipe build` as a function: `build(dataset="pets/", targets=["tflite"], max_bytes=3_000_000)`.

    `config` is an optional TOML file; options win over it, as flags do on the command line. Raises
    `imgpipe.pipeline.core.errors.ImgpipeError` subclasses for anything the caller can fix.
    """
    return run_build(make_config(options, Path(config) if config is not None else None))


def export(build_folder: str | Path, config: str | Path | None = None, **options) -> BuildResult:
    """`imgpipe export` as a function: `export("pets-build", targets=["onnx"])` re-exports a finished build with
    training (and every unchanged artifact) taken from the stage cache; it never trains."""
    settings = export_config(Path(build_folder), options, Path(config) if config is not None else None)
    return run_build(settings, export_only=True)
