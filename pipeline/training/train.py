"""Transfer learning: a head on cached bottleneck features (solved by L-BFGS, or Adam epochs), then optional
fine-tuning on augmented images.

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
from ..core.console import progress_bar
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
from .head_lbfgs import fit_softmax_head, strengths
from .model import OUTPUT_NAME, build_classifier, feature_extractor

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: object
    history: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # phase -> metric -> per-epoch
    timings: dict[str, float] = field(default_factory=dict)
    # validation accuracy after each phase ("head", "fine_tune" or "train"): what fine-tuning bought
    val_accuracy: dict[str, float] = field(default_factory=dict)
    head_l2: float | None = None  # the L2 strength the head solver chose (--head lbfgs)


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
        if config.head == "lbfgs":
            _solve_head(model, data, features, result, log_dir / "head")
        else:
            _train_head_with_adam(model, config, data, features, log_dir, result, distribution)
        if config.fine_tune_epochs > 0:
            with distribution.scope():
                _fine_tune(model, config, data, preprocessing, log_dir, result, trainable_top=config.fine_tune_layers)
    else:
        _set_batchnorm_momentum(model, 0.9)  # Keras' 0.999 leaves BN statistics stale in short from-scratch runs
        with distribution.scope():
            _fine_tune(model, config, data, preprocessing, log_dir, result, trainable_top=None)
    return result


def _solve_head(model, data: TrainingData, features, result: TrainResult, log_dir: Path) -> None:
    """The head as regularized logistic regression on the features (`head_lbfgs`): the same answer every time, in
    a fraction of a second; its regularization path goes where the epochs' history would, TensorBoard too."""
    train_f, val_f = features
    dense = model.get_layer(OUTPUT_NAME)
    labels = _train_row_labels(data, len(train_f))
    start = time.perf_counter()
    with progress_bar("head", len(strengths(len(val_f) > 0)), "strength") as advance:
        fit = fit_softmax_head(np.asarray(train_f), labels, dense.units, val_f, data.val.labels, advance)
    result.timings["train_head"] = time.perf_counter() - start
    dense.set_weights([fit.kernel, fit.bias])
    result.history["head"] = fit.path
    result.head_l2 = fit.l2
    _write_path_logs(log_dir, fit.path)
    log.info(f"head: L2 strength {fit.l2:g} of {', '.join(f'{v:g}' for v in fit.path['l2'])}")
    if len(val_f):
        result.val_accuracy["head"] = softmax_head_metrics(dense, val_f, data.val.labels)["val_accuracy"]


def _write_path_logs(folder: Path, path: dict[str, list[float]]) -> None:
    """TensorBoard scalars of the path: step i is the i-th strength tried (its value is `head/l2`)."""
    tf, _ = load_tensorflow()
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for name, values in path.items():
            for step, value in enumerate(values):
                tf.summary.scalar(f"head/{name}", value, step=step)
    writer.close()


def _train_row_labels(data: TrainingData, rows: int) -> np.ndarray:
    """The train rows are the photos, then each view of them in the same order."""
    return np.tile(data.train.labels, rows // max(1, len(data.train.labels)))


def _train_head_with_adam(model, config: TrainConfig, data: TrainingData, features, log_dir, result, distribution):
    tf, keras = load_tensorflow()
    train_f, val_f = features
    # Keras copies a NumPy array given to `fit` into a tensor of its own, and fitting on the array was slower (the
    # pets head with views: 1.8 s instead of 1.2 s).
    train_f = tf.convert_to_tensor(train_f)
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
        _train_row_labels(data, len(train_f)),
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
        decay_epochs=config.decay_epochs,
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
