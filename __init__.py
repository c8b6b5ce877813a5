"""imgpipe: a verified MobileNet image classifier for iOS, Android and ONNX from a folder of photos.

    import imgpipe
    result = imgpipe.build(dataset="pets/", targets=["tflite", "coreml", "onnx"], out="pets-build")
    for artifact in result.artifacts:
        print(artifact.name, artifact.metrics["accuracy"], artifact.path)

`imgpipe.build` takes the same options as `imgpipe build` (see `imgpipe build --help`; `--max-bytes` is
`max_bytes=`) and returns a `BuildResult`. The source tree is the import tree: `imgpipe.pipeline.build` is
`pipeline/build.py`, `imgpipe.exporters.tflite.export` is `exporters/tflite/export.py`.
"""


def __getattr__(name: str):
    """`imgpipe.__version__`, imported when asked for: pytest imports this file as a stand-alone module when it
    collects the tests beside it, under the checkout folder's name, and a module-level relative import would fail
    there (the folder name can be anything, "imgpipe-main" included)."""
    if name == "__version__":
        from .pipeline.core.version import __version__

        return __version__
    raise AttributeError(f"module 'imgpipe' has no attribute {name!r}")


def build(**options):
    """Build, verify and publish like `imgpipe build`; returns a `imgpipe.pipeline.api.BuildResult`."""
    from .pipeline.api import build as run

    return run(**options)


def export(build_folder, **options):
    """Re-export a finished build like `imgpipe export BUILD`, training nothing; returns a `BuildResult`."""
    from .pipeline.api import export as run

    return run(build_folder, **options)


__all__ = ["__version__", "build", "export"]
