"""The format table: one row per artifact format drives CLI choices, the build loop, bundle layout and reports.

Adding a format is one module in `exporters/` plus one row here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from imgpipe.errors import ConfigError


@dataclass(frozen=True)
class FormatSpec:
    name: str
    suffix: str
    variants: tuple[str, ...]
    default_variant: str
    module: str
    bundle_dir: str  # folder inside the bundle: what app platform it is for
    runtime: str

    def load(self):
        return importlib.import_module(self.module)


FORMATS: dict[str, FormatSpec] = {
    "tflite": FormatSpec(
        "tflite",
        ".tflite",
        ("fp32", "fp16", "dynamic", "int8"),
        "fp32",
        "imgpipe.exporters.tflite",
        "android",
        "ai_edge_litert",
    ),
    "coreml": FormatSpec(
        "coreml",
        ".mlpackage",
        ("fp16", "fp32", "int8", "palettize", "pruned"),
        "fp16",
        "imgpipe.exporters.coreml",
        "ios",
        "coremltools",
    ),
    "onnx": FormatSpec("onnx", ".onnx", ("fp32", "int8"), "fp32", "imgpipe.exporters.onnx", "onnx", "onnxruntime"),
}


def get_format(name: str) -> FormatSpec:
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(f"unknown target '{name}'; valid targets: {', '.join(FORMATS)}") from None


def format_for_path(path: Path) -> FormatSpec:
    """Which format an artifact file is, from its suffix."""
    for spec in FORMATS.values():
        if path.name.endswith(spec.suffix):
            return spec
    raise ConfigError(
        f"{path}: not a model file imgpipe knows (expected {', '.join(s.suffix for s in FORMATS.values())})"
    )
