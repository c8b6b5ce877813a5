"""imgpipe: a verified MobileNet image classifier for iOS, Android and ONNX from a folder of photos.

    import imgpipe
    result = imgpipe.build(dataset="pets/", targets=["tflite", "coreml", "onnx"], out="pets-build")
    for artifact in result.artifacts:
        print(artifact.name, artifact.metrics["accuracy"], artifact.path)

`imgpipe.build` takes the same options as `imgpipe build` (see `imgpipe build --help`; `--max-bytes` is
`max_bytes=`) and returns a `BuildResult`. The source tree is the import tree: `imgpipe.pipeline.build` is
`pipeline/build.py`, `imgpipe.exporters.tflite.export` is `exporters/tflite/export.py`.
"""

from .pipeline.core.version import __version__


def build(**options):
    """Build, verify and publish like `imgpipe build`; returns a `imgpipe.pipeline.api.BuildResult`."""
    from .pipeline.api import build as run

    return run(**options)


__all__ = ["__version__", "build"]
