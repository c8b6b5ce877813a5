"""imgpipe's version (read by pyproject.toml, the CLI and every artifact's metadata) and the versions of the
libraries whose results a build depends on (recorded in the manifest, part of every stage-cache key)."""

from importlib import metadata

__version__ = "0.2.0"

LIBRARIES = (
    "tensorflow",
    "tf_keras",
    "tensorflow-model-optimization",
    "ai-edge-litert",
    "onnx",
    "tf2onnx",
    "onnxruntime",
    "coremltools",
    "numpy",
    "pillow",
)


def library_versions() -> dict[str, str | None]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
