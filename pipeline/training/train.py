"""Transfer learning: a head on cached bottleneck features, then optional fine-tuning on augmented images.

With `--weights none` the backbone's features are random, and a frozen random backbone learns nothing
(loss stays at ln(classes)), so that path trains every layer on images instead.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import BackboneSpec, TrainConfig
from ..core.preprocessing import Preprocessing
from ..core.tf_runtime import load_tensorflow, seed_everything
from ..data.photos import Photos, TrainingData
from .distribute import ONE_DEVICE, Distribution
from .features import Features, cached_features, model_key
from .fit import (
    adam,
    epoch_callbacks,
    fit_images,
    plain_history,
    predict_photos,
    softmax_head_metrics,
    softmax_head_validation,
)
from .model import OUTPUT_NAME, build_classifier, feature_extractor

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: object
    history: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # phase -> metric -> per-epoch
    timings: dict[str, float] = field(default_factory=dict)
    # validation accuracy after each phase ("head", "fine_tune" or "train"): what fine-tuning bought
    val_accuracy: dict[str, float] = field(default_factory=dict)


def new_classifier(spec: BackboneSpec, config: TrainConfig, num_classes: int, distribution: Distribution = ONE_DEVICE):
    """The untrained classifier, its backbone holding the pretrained weights; seeded, in a fresh session so a
    second build in one process names its layers the same way; its variables live where `distribution` puts
    them."""
    _, keras = load_tensorflow()
    keras.backend.clear_session()
    seed_everything(config.seed)
    with distribution.scope():
        return build_classifier(spec, num_classes, dropout=config.dropout)


def backbone_features(
    model,
    photos: Photos,
    spec: BackboneSpec,
    preprocessing: Preprocessing,
    features_dir: Path,
    distribution: Distribution = ONE_DEVICE,
    views: int = 0,
    views_of: np.ndarray | None = None,
) -> Features:
    """The frozen backbone's features of `photos` (and of `views` augmented views of those in `views_of`), cached
    per photo; spread over the replicas of a mirrored strategy when there are several."""
    folder = features_dir / model_key(spec, preprocessing)
    extractor = feature_extractor(model)
    engine = None
    if distribution.name == "mirrored" and distribution.replicas > 1:
        engine = (lambda batch: extractor.predict(batch, verbose=0), f"keras predict ({distribution.describe()})")
    return cached_features(extractor, photos, folder, preprocessing, engine, views, views_of)


def train_classifier(
    model,
    spec: BackboneSpec,
    config: TrainConfig,
    data: TrainingData,
    preprocessing: Preprocessing,
    log_dir: Path,
    features: tuple[np.ndarray, np.ndarray] | None = None,
    distribution: Distribution = ONE_DEVICE,
) -> TrainResult:
    """Train `model` (from `new_classifier`): with pretrained weights, the head on the backbone's `features` of
    the train and val photos, then fine-tuning when asked; without, every layer on the photos."""
    result = TrainResult(model)
    if spec.pretrained:
        if features is None:
            raise ValueError("a pretrained backbone trains its head on features: compute them with backbone_features")
        _train_head_on_features(model, config, data, features, log_dir, result, distribution)
        if config.fine_tune_epochs > 0:
            with distribution.scope():
                _fine_tune(model, config, data, preprocessing, log_dir, result, trainable_top=config.fine_tune_layers)
    else:
        _set_batchnorm_momentum(model, 0.9)  # Keras' 0.999 leaves BN statistics stale in short from-scratch runs
        with distribution.scope():
            _fine_tune(model, config, data, preprocessing, log_dir, result, trainable_top=None)
    return result


def _train_head_on_features(model, config: TrainConfig, data: TrainingData, features, log_dir, result, distribution):
    _, keras = load_tensorflow()
    train_f, val_f = features
    has_val = len(val_f) > 0
    dense = model.get_layer(OUTPUT_NAME)
    with distribution.scope():
        inputs = keras.Input(shape=train_f.shape[1:], name="features")
        x = keras.layers.Dropout(config.dropout)(inputs)
        head_dense = keras.layers.Dense(dense.units, activation="softmax", name=OUTPUT_NAME)
        head = keras.Model(inputs, head_dense(x))
        head.compile(
            optimizer=adam(config.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            # One traced call per epoch instead of one per step: a step of one Dense layer is microseconds of
            # arithmetic behind milliseconds of Python and tracing (head 1.17 -> 1.01 s on 400 flowers + views).
            steps_per_execution=math.ceil(len(train_f) / config.batch_size),
        )
    start = time.perf_counter()
    validation = [softmax_head_validation(head_dense, val_f, data.val.labels)] if has_val else []
    history = head.fit(
        train_f,
        np.tile(data.train.labels, len(train_f) // max(1, len(data.train.labels))),  # photos, then their views
        epochs=config.epochs,
        batch_size=config.batch_size,
        callbacks=validation
        + epoch_callbacks("head", config.epochs, log_dir / "head", config.patience if has_val else None),
        verbose=0,
        shuffle=True,
    )
    result.timings["train_head"] = time.perf_counter() - start
    result.history["head"] = plain_history(history.history)
    dense.set_weights(head_dense.get_weights())
    if has_val:
        result.val_accuracy["head"] = softmax_head_metrics(head_dense, val_f, data.val.labels)["val_accuracy"]


def _fine_tune(model, config: TrainConfig, data: TrainingData, preprocessing, log_dir, result, trainable_top):
    """Train the top `trainable_top` layers (all when None) on augmented images; BatchNorm stays frozen when
    fine-tuning a pretrained backbone so its ImageNet statistics survive small batches."""
    _, keras = load_tensorflow()
    layers = model.layers
    first_trainable = 0 if trainable_top is None else max(0, len(layers) - trainable_top)
    for i, layer in enumerate(layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= first_trainable and not (trainable_top is not None and is_bn)
    phase = "train" if trainable_top is None else "fine_tune"
    epochs = config.epochs if trainable_top is None else config.fine_tune_epochs
    lr = config.learning_rate if trainable_top is None else config.fine_tune_learning_rate
    has_val = len(data.val) > 0
    what = "training every layer from random initialisation" if trainable_top is None else "fine-tuning"
    log.info(
        f"{what}: {sum(layer.trainable for layer in layers)} trainable layers, up to {epochs} epoch"
        f"{'' if epochs == 1 else 's'} on "
        f"{len(data.train)} images" + (" with augmentation" if config.augment else "")
    )
    start = time.perf_counter()
    # From scratch, val loss swings wildly while BatchNorm statistics settle: no early stop in the first half.
    warmup = epochs // 2 if trainable_top is None else 0
    history = fit_images(
        model,
        data,
        preprocessing,
        learning_rate=lr,
        batch_size=config.batch_size,
        augment=config.augment,
        seed=config.seed,
        epochs=epochs,
        callbacks=epoch_callbacks(phase, epochs, log_dir / phase, config.patience if has_val else None, warmup),
        decay_epochs=config.decay_epochs if trainable_top is None else 0,
    )
    result.timings[phase] = time.perf_counter() - start
    result.history[phase] = history
    if has_val:
        probs = predict_photos(model, data.val, preprocessing)
        result.val_accuracy[phase] = float((probs.argmax(1) == data.val.labels).mean())
    for layer in layers:
        layer.trainable = True


def _set_batchnorm_momentum(model, momentum: float) -> None:
    _, keras = load_tensorflow()
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
