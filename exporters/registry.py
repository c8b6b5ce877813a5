"""The format table: everything imgpipe knows about a format that is not inside its own module.

One row per format drives the CLI choices and format options, the build plan (which variants, from which Keras
models), verification's parity tolerances, the bundle layout, `imgpipe predict`'s preference, the README of each
platform folder, the report's plot colours and the benchmark profiles. Adding a format is one package in
`exporters/` (implementing `FormatModule`) plus one row here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..pipeline.core.errors import ConfigError

if TYPE_CHECKING:
    from ..pipeline.config import ExportOptions
    from ..pipeline.core.preprocessing import Preprocessing
    from .base import FormatModule, Runner

SOURCES = ("float", "prune", "qat")  # the Keras models a build can export: trained, pruned, quantization-aware


@dataclass(frozen=True)
class Parity:
    """How closely a float artifact must reproduce the Keras model it was exported from, on the test split.

    Beyond it the conversion changed the model, so verification fails the artifact instead of reporting a number.
    """

    min_agreement: float
    max_abs_prob_diff: float


@dataclass(frozen=True)
class Variant:
    name: str
    summary: str  # one line for help texts and the README
    parity: Parity | None = None  # None: a quantized variant, judged by the accuracy-drop gate instead
    sources: tuple[str, ...] = ("float", "prune")
    calibrated: bool = False  # needs representative train images


@dataclass(frozen=True)
class Option:
    """A format option: an `ExportOptions` field, its command-line flag and its allowed values."""

    field: str
    choices: tuple
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


@dataclass(frozen=True)
class FormatSpec:
    name: str
    suffix: str
    module: str  # the package implementing FormatModule
    bundle_dir: str  # folder inside the bundle: the app platform it is for
    variants: tuple[Variant, ...]
    default_variant: str
    options: tuple[Option, ...] = ()
    predict_rank: int = 0  # `imgpipe predict BUNDLE` tries lower ranks first
    plot_colour: str = "tab:gray"
    benchmark_variants: dict | None = None  # profile -> variant names

    def load(self) -> FormatModule:
        return importlib.import_module(self.module, __package__)

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise ConfigError(
            f"unknown {self.name} variant '{name}'; valid {self.name} variants: {', '.join(self.variant_names)}"
        )


FLOAT_EXACT = Parity(min_agreement=1.0, max_abs_prob_diff=1e-4)
# fp16 weights (and, on Core ML, fp16 arithmetic) move probabilities by up to a few hundredths and can flip a
# near-tie; measured: TFLite fp16 max|dp| 2e-2 on the tiny test model, Core ML fp16 3.1e-2 on flowers.
HALF = Parity(min_agreement=0.97, max_abs_prob_diff=5e-2)

FORMATS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (
        FormatSpec(
            name="tflite",
            suffix=".tflite",
            module=".tflite",
            bundle_dir="android",
            variants=(
                Variant("fp32", "float model", FLOAT_EXACT),
                Variant("fp16", "float16 weights, float compute", HALF),
                Variant("dynamic", "int8 weights, float activations (often slower than fp32 on x86)"),
                Variant(
                    "int8",
                    "full integer, calibrated on train-split images; --io-type sets the input/output tensors",
                    sources=SOURCES,
                    calibrated=True,
                ),
            ),
            default_variant="fp32",
            options=(
                Option(
                    "io_type",
                    ("float", "int8", "uint8"),
                    "TFLite int8 input/output type (MediaPipe and the Task Library take float or uint8)",
                ),
            ),
            predict_rank=0,
            plot_colour="tab:blue",
            benchmark_variants={"quick": ("fp32", "int8"), "full": ("fp32", "fp16", "dynamic", "int8")},
        ),
        FormatSpec(
            name="coreml",
            suffix=".mlpackage",
            module=".coreml",
            bundle_dir="ios",
            variants=(
                Variant("fp16", "ML Program, float16 weights and compute", HALF),
                Variant("fp32", "ML Program, float32", FLOAT_EXACT),
                Variant("int8", "linear int8 weight quantization (per channel)"),
                Variant("palettize", "k-means weight palettization (--palette-bits)"),
                Variant("pruned", "magnitude weight pruning (sparse weights)"),
            ),
            default_variant="fp16",
            options=(
                Option("palette_bits", (4, 6, 8), "Core ML palettization bits"),
                Option(
                    "coreml_compute",
                    ("fp16", "fp32"),
                    "how verification runs an fp16 Core ML program on Linux: fp16 rounds every tensor after each op "
                    "as the GPU and Neural Engine do, fp32 computes as Core ML's CPU path",
                ),
            ),
            predict_rank=2,
            plot_colour="tab:green",
            benchmark_variants={
                "quick": ("fp16", "palettize"),
                "full": ("fp16", "fp32", "int8", "palettize", "pruned"),
            },
        ),
        FormatSpec(
            name="onnx",
            suffix=".onnx",
            module=".onnx",
            bundle_dir="onnx",
            variants=(
                Variant("fp32", "tf2onnx float graph", FLOAT_EXACT),
                Variant(
                    "int8", "static QDQ quantization, per-channel int8 weights, uint8 activations", calibrated=True
                ),
            ),
            default_variant="fp32",
            predict_rank=1,
            plot_colour="tab:orange",
            benchmark_variants={"quick": ("fp32", "int8"), "full": ("fp32", "int8")},
        ),
    )
}


def get_format(name: str) -> FormatSpec:
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(f"unknown target '{name}'; valid targets: {', '.join(FORMATS)}") from None


def format_for_path(path: Path) -> FormatSpec:
    """Which format an artifact file is, from its suffix."""
    for spec in FORMATS.values():
        if Path(path).name.endswith(spec.suffix):
            return spec
    raise ConfigError(
        f"{path}: not a model file imgpipe knows (expected {', '.join(s.suffix for s in FORMATS.values())})"
    )


def open_runner(
    fmt: str,
    path: Path,
    preprocessing: Preprocessing | None = None,
    num_threads: int = 1,
    options: ExportOptions | None = None,
) -> Runner:
    """The runner of an artifact: what verification, evaluation, predict and the benchmarks all use. `options`
    carries format options that change how an artifact is run (Core ML's compute precision)."""
    return get_format(fmt).load().open_runner(Path(path), preprocessing, num_threads=num_threads, options=options)
