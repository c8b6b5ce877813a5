"""Transfer learning: a head on cached bottleneck features, then optional fine-tuning on augmented images.

With `--weights none` the backbone's features are random, and a frozen random backbone learns nothing
(loss stays at ln(classes)), so that path trains every layer on images instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgpipe.bottlenecks import cached_features, model_key
from imgpipe.model import BackboneSpec, build_classifier, feature_extractor
from imgpipe.preprocessing import Preprocessing
from imgpipe.tf_runtime import load_tensorflow


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40  # head epochs (pretrained) or full-model epochs (--weights none); early stopping ends sooner
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 6
    dropout: float = 0.2
    fine_tune_epochs: int = 0
    fine_tune_layers: int = 30
    fine_tune_learning_rate: float = 1e-4
    augment: bool = True
    seed: int = 0


@dataclass
class SplitData:
    train_images: np.ndarray
    train_labels: np.ndarray
    train_hashes: list[str]
    val_images: np.ndarray
    val_labels: np.ndarray
    val_hashes: list[str]


@dataclass
class TrainResult:
    model: object
    history: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # phase -> metric -> per-epoch
    timings: dict[str, float] = field(default_factory=dict)
    bottlenecks_computed: int = 0


def train_classifier(
    spec: BackboneSpec,
    config: TrainConfig,
    data: SplitData,
    num_classes: int,
    preprocessing: Preprocessing,
    cache_dir: Path,
    log_dir: Path,
    progress=print,
) -> TrainResult:
    tf, keras = load_tensorflow()
    keras.utils.set_random_seed(config.seed)
    model = build_classifier(spec, num_classes, dropout=config.dropout)
    result = TrainResult(model)
    if spec.pretrained:
        _train_head_on_bottlenecks(model, spec, config, data, preprocessing, cache_dir, log_dir, result, progress)
        if config.fine_tune_epochs > 0:
            _fine_tune(
                model, config, data, preprocessing, log_dir, result, progress, trainable_top=config.fine_tune_layers
            )
    else:
        _set_batchnorm_momentum(model, 0.9)  # Keras' 0.999 leaves BN statistics stale in short from-scratch runs
        progress("weights none: training every layer from random initialisation")
        _fine_tune(model, config, data, preprocessing, log_dir, result, progress, trainable_top=None)
    return result


def _train_head_on_bottlenecks(model, spec, config, data, preprocessing, cache_dir, log_dir, result, progress):
    _, keras = load_tensorflow()
    extractor = feature_extractor(model)
    key = model_key(spec, preprocessing)
    start = time.perf_counter()
    train_f, n1 = cached_features(
        extractor, data.train_images, data.train_hashes, cache_dir, key, preprocessing, progress=progress
    )
    val_f, n2 = (
        cached_features(extractor, data.val_images, data.val_hashes, cache_dir, key, preprocessing, progress=progress)
        if len(data.val_images)
        else (None, 0)
    )
    result.bottlenecks_computed = n1 + n2
    result.timings["bottlenecks"] = time.perf_counter() - start

    dense = model.get_layer("probabilities")
    features = keras.Input(shape=train_f.shape[1:], name="features")
    x = keras.layers.Dropout(config.dropout)(features)
    head_dense = keras.layers.Dense(dense.units, activation="softmax", name="probabilities")
    head = keras.Model(features, head_dense(x))
    head.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    progress(f"training the classification head on cached features ({len(train_f)} train images)")
    start = time.perf_counter()
    history = head.fit(
        train_f,
        data.train_labels,
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_data=(val_f, data.val_labels) if val_f is not None else None,
        callbacks=_callbacks(config, log_dir / "head", val_f is not None),
        verbose=2,
        shuffle=True,
    )
    result.timings["train_head"] = time.perf_counter() - start
    result.history["head"] = _plain(history.history)
    dense.set_weights(head_dense.get_weights())


def _fine_tune(model, config, data, preprocessing, log_dir, result, progress, trainable_top):
    """Train the top `trainable_top` layers (all when None) on augmented images; BatchNorm stays frozen when
    fine-tuning a pretrained backbone so its ImageNet statistics survive small batches."""
    tf, keras = load_tensorflow()
    layers = model.layers
    first_trainable = 0 if trainable_top is None else max(0, len(layers) - trainable_top)
    for i, layer in enumerate(layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= first_trainable and not (trainable_top is not None and is_bn)
    phase = "train" if trainable_top is None else "fine_tune"
    epochs = config.epochs if trainable_top is None else config.fine_tune_epochs
    lr = config.learning_rate if trainable_top is None else config.fine_tune_learning_rate
    has_val = len(data.val_images) > 0
    progress(
        f"{phase.replace('_', '-')}: {sum(layer.trainable for layer in layers)} trainable layers, "
        f"up to {epochs} epochs on {len(data.train_images)} images" + (" with augmentation" if config.augment else "")
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
        callbacks=_callbacks(config, log_dir / phase, has_val, warmup),
    )
    result.timings[phase] = time.perf_counter() - start
    result.history[phase] = history
    for layer in layers:
        layer.trainable = True


def fit_images(
    model,
    data: SplitData,
    preprocessing: Preprocessing,
    *,
    learning_rate: float,
    batch_size: int,
    augment: bool,
    seed: int,
    epochs: int,
    callbacks: list,
) -> dict[str, list[float]]:
    """Compile (Adam, sparse cross-entropy) and fit on the train images, validating on val when there is any;
    returns the per-epoch history. Every image-level training (from scratch, fine-tune, prune, QAT) goes here."""
    _, keras = load_tensorflow()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    train_ds = image_dataset(
        data.train_images, data.train_labels, preprocessing, batch_size, augment=augment, shuffle=True, seed=seed
    )
    val_ds = (
        image_dataset(data.val_images, data.val_labels, preprocessing, batch_size) if len(data.val_images) else None
    )
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=2)
    return _plain(history.history)


def image_dataset(images, labels, preprocessing: Preprocessing, batch_size: int, augment=False, shuffle=False, seed=0):
    """tf.data pipeline over uint8 images: optional augmentation in pixel space, then the normalization contract."""
    tf, keras = load_tensorflow()
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    mean = tf.constant(preprocessing.mean, tf.float32)
    std = tf.constant(preprocessing.std, tf.float32)
    augmenter = _augmenter(preprocessing.image_size, seed) if augment else None

    def prepare(x, y):
        x = tf.cast(x, tf.float32)
        if augmenter is not None:
            x = augmenter(x, training=True)
            x = tf.clip_by_value(x, 0.0, 255.0)
        return (x - mean) / std, y

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _augmenter(image_size: int, seed: int):
    """Flip, small rotation, zoom/crop and brightness: what changes between two phone photos of the same thing."""
    _, keras = load_tensorflow()
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.05, fill_mode="reflect", seed=seed),
            keras.layers.RandomZoom((-0.2, 0.0), fill_mode="reflect", seed=seed),
            keras.layers.RandomBrightness(0.15, value_range=(0.0, 255.0), seed=seed),
        ],
        name="augmentation",
    )


def _callbacks(config: TrainConfig, log_dir: Path, has_val: bool, start_from_epoch: int = 0):
    _, keras = load_tensorflow()
    callbacks = [keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, profile_batch=0)]
    if has_val:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=config.patience,
                restore_best_weights=True,
                start_from_epoch=start_from_epoch,
            )
        )
    return callbacks


def _set_batchnorm_momentum(model, momentum: float) -> None:
    _, keras = load_tensorflow()
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _plain(history: dict) -> dict[str, list[float]]:
    return {k: [float(v) for v in vals] for k, vals in history.items()}
