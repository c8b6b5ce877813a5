"""Keras helpers both model-level optimizations share: copies, layer walks, BatchNorm switches, the fine-tune."""

from __future__ import annotations

from ..core.errors import DatasetError
from ..core.preprocessing import Preprocessing
from ..core.tf_runtime import load_tensorflow
from ..data.photos import TrainingData
from ..training.fit import epoch_callbacks, fit_images

CALIBRATION_IMAGES = 256  # QAT's starting ranges and pruning's BN statistics: a few batches give stable values


def fine_tune(model, data: TrainingData, preprocessing: Preprocessing, config, phase: str, callbacks: list) -> dict:
    """Fit on the training images; validation images, when there are any, only for the logged metrics.

    No early stopping: restoring an earlier epoch's weights would undo pruning progress, and QAT runs too few epochs
    for it to matter.
    """
    callbacks = callbacks + epoch_callbacks(phase, config.epochs, log_dir=None, patience=None)
    return fit_images(
        model,
        data,
        preprocessing,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        augment=config.augment,
        seed=config.seed,
        epochs=config.epochs,
        callbacks=callbacks,
    )


def tfmot():
    """tensorflow_model_optimization, imported after TensorFlow is set up for tf_keras (it imports TF itself)."""
    load_tensorflow()
    import tensorflow_model_optimization

    return tensorflow_model_optimization


def trainable_copy(model):
    """A copy with its own weights (the float model is exported as well and must not change), every layer trainable
    whatever the training phases left behind."""
    _, keras = load_tensorflow()
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.trainable = True
    return copy


def set_batchnorm_trainable(model, trainable: bool) -> None:
    _, keras = load_tensorflow()
    for layer in leaf_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = trainable


def leaf_layers(model):
    """Every non-model layer, looking inside nested models and through wrappers (tfmot's prune/quantize ones)."""
    _, keras = load_tensorflow()
    for layer in model.layers:
        while isinstance(layer, keras.layers.Wrapper):
            layer = layer.layer
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def fit_settings(config, steps_per_epoch: int, seconds: float, history: dict) -> dict:
    return {
        "epochs": config.epochs,
        "steps_per_epoch": steps_per_epoch,
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "augment": config.augment,
        "seconds": round(seconds, 1),
        "history": history,
    }


def require_train_images(data: TrainingData, what: str) -> None:
    if len(data.train) == 0:
        raise DatasetError(f"{what} fine-tunes on the training split, which is empty; add images or change --split")
