"""The Keras models a build exports besides the float one: one per model-level optimization asked for."""

from __future__ import annotations

from pathlib import Path

from ..config import BuildConfig
from ..core.preprocessing import Preprocessing
from ..data.photos import TrainingData


def optimized_model(
    name: str, model, data: TrainingData, preprocessing: Preprocessing, config: BuildConfig, log_dir: Path
):
    """(optimized copy of `model`, report) for one optimization; the float model is left unchanged."""
    if name == "prune":
        from .prune import prune_model

        return prune_model(model, data, preprocessing, config.prune, log_dir / "prune")
    from .qat import qat_model

    return qat_model(model, data, preprocessing, config.qat, log_dir / "qat")


def optimized_structure(name: str, model):
    """An untrained model of the structure `optimized_model(name, model, ...)` returns, for cached weights: the
    pruned model is the float classifier's architecture (pruning is stripped); the QAT model is tfmot's."""
    if name == "prune":
        from ..core.tf_runtime import load_tensorflow

        _, keras = load_tensorflow()
        return keras.models.clone_model(model)
    from .qat import qat_structure

    return qat_structure(model)
