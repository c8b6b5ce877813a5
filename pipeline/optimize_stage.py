"""Which models a build exports: the float model plus each model-level optimization asked for, and which
format variants each of them gets."""

from __future__ import annotations

from pathlib import Path

from imgpipe.config import BuildConfig
from imgpipe.exporters.registry import get_format

# A QAT model carries trained int8 ranges that only the TFLite converter turns into an integer model: tf2onnx keeps
# its weights float (fp32 size) and coremltools turns the fake-quant ops into float arithmetic, so QAT is exported as
# TFLite int8 alone. ONNX and Core ML get their integer variants from the float or pruned model.
QAT_VARIANTS = {"tflite": "int8"}


def optimize_model(name: str, model, data, preprocessing, config: BuildConfig, log_dir: Path, progress):
    """(optimized model, report) for one model-level optimization; the float model is left unchanged."""
    from imgpipe import optimize

    if name == "prune":
        return optimize.prune_model(model, data, preprocessing, config.prune, log_dir / "prune", progress)
    return optimize.qat_model(model, data, preprocessing, config.qat, log_dir / "qat", progress)


def variants_for_source(config: BuildConfig, source: str) -> list[tuple[str, str]]:
    if source != "qat":
        return config.variants()
    return [
        (fmt, QAT_VARIANTS[fmt])
        for fmt in config.targets
        if fmt in QAT_VARIANTS and QAT_VARIANTS[fmt] in get_format(fmt).variants
    ]
