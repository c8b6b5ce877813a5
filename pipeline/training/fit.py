"""Fitting a Keras model on images: the one route for training from scratch, fine-tuning, pruning and QAT, and
the callbacks that show each epoch as progress instead of Keras' own lines."""

from __future__ import annotations

import logging
import math
from contextlib import ExitStack
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..core.console import progress_bar
from ..core.preprocessing import Preprocessing
from ..core.tf_runtime import load_tensorflow
from ..data.photos import Photos, TrainingData
from .head_lbfgs import log_loss_and_accuracy

log = logging.getLogger(__name__)


def fit_images(
    model,
    data: TrainingData,
    preprocessing: Preprocessing,
    *,
    learning_rate: float,
    batch_size: int,
    augment: bool,
    seed: int,
    epochs: int,
    callbacks: list,
    decay_epochs: int = 0,
) -> dict[str, list[float]]:
    """Compile (Adam, sparse cross-entropy) and fit on the train images, validating on val when there is any;
    returns the per-epoch history. With `decay_epochs`, the learning rate stays constant and then falls along a
    cosine to 5% over the last epochs: a short run keeps its full rate while it learns most and ends on settled
    weights instead of wherever the last large step left them."""
    rate = learning_rate
    if 0 < decay_epochs:
        _, keras = load_tensorflow()
        steps = math.ceil(len(data.train) / batch_size)
        tail = min(decay_epochs, epochs) * steps
        rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=tail, alpha=0.05, warmup_target=learning_rate, warmup_steps=epochs * steps - tail
        )
    model.compile(optimizer=adam(rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train_ds = image_dataset(data.train, preprocessing, batch_size, augment=augment, shuffle=True, seed=seed)
    val_ds = image_dataset(data.val, preprocessing, batch_size) if len(data.val) else None
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0)
    return plain_history(history.history)


def predict_photos(model, photos: Photos, preprocessing: Preprocessing, batch_size: int = 32) -> np.ndarray:
    """A Keras model's probabilities for every photo, read from disk a batch at a time."""
    return model.predict(image_dataset(photos, preprocessing, batch_size), verbose=0)


def adam(learning_rate):
    """Adam as tf_keras' legacy optimizer: one fused update op per variable. The new optimizer builds its update
    from a dozen small ops per variable while the first training step is traced, which cost MobileNetV2 5-6 s of
    CPU before the first epoch of every fit (measured on 2 cores); the arithmetic is the same."""
    _, keras = load_tensorflow()
    return keras.optimizers.legacy.Adam(learning_rate)


def image_dataset(photos: Photos, preprocessing: Preprocessing, batch_size: int, augment=False, shuffle=False, seed=0):
    """tf.data pipeline over a split's decoded pixels, read from disk a batch at a time (a shuffled batch reads its
    photos in file order): optional augmentation in pixel space, then the normalization contract."""
    tf, _ = load_tensorflow()
    store = photos.pixels
    size = photos.image_size
    labels = tf.constant(photos.labels)
    ds = tf.data.Dataset.range(len(photos))
    if shuffle:
        ds = ds.shuffle(len(photos), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    mean = tf.constant(preprocessing.mean, tf.float32)
    std = tf.constant(preprocessing.std, tf.float32)
    augmenter = _augmenter(seed) if augment else None

    def read(indices):
        order = np.argsort(indices)
        pixels = np.empty((len(indices), size, size, 3), np.uint8)
        pixels[order] = store.take(indices[order])
        return pixels

    def prepare(indices):
        x = tf.numpy_function(read, [indices], tf.uint8, stateful=False)
        x = tf.cast(tf.ensure_shape(x, [None, size, size, 3]), tf.float32)
        if augmenter is not None:
            x = augmenter(x, training=True)
            x = tf.clip_by_value(x, 0.0, 255.0)
        return (x - mean) / std, tf.gather(labels, indices)

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _augmenter(seed: int):
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


def epoch_callbacks(
    phase: str, epochs: int, log_dir: Path | None, patience: int | None, start_from_epoch: int = 0
) -> list:
    """TensorBoard logs, early stopping on val loss (when `patience` is given) and a progress bar per epoch."""
    _, keras = load_tensorflow()
    callbacks = [epoch_progress_class()(phase, epochs)]
    if log_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, profile_batch=0))
    if patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True, start_from_epoch=start_from_epoch
            )
        )
    return callbacks


def plain_history(history: dict) -> dict[str, list[float]]:
    return {k: [float(v) for v in vals] for k, vals in history.items()}


@lru_cache(maxsize=None)
def epoch_progress_class():
    """EpochProgress, made on first use: its base class is Keras', and importing this module must not import
    TensorFlow (a rebuild whose every stage is reused never needs it)."""
    _, keras = load_tensorflow()

    class EpochProgress(keras.callbacks.Callback):
        """One bar per training phase, advanced every training step (a first epoch can take minutes on a large
        dataset), with the epoch and its latest loss and accuracy beside it; each epoch's numbers also go to the debug
        log, so `-v` shows what Keras' verbose output would have."""

        def __init__(self, phase: str, epochs: int):
            super().__init__()
            self.phase, self.epochs = phase, epochs
            self._stack = ExitStack()
            self._advance = None
            self._epoch, self._steps_done, self._last = 0, 0, ""

        def on_train_begin(self, logs=None):
            steps = (self.params or {}).get("steps") or 0
            total, unit = (self.epochs * steps, "step") if steps else (self.epochs, "epoch")
            self._per_step = bool(steps)
            self._advance = self._stack.enter_context(progress_bar(self.phase.replace("_", "-"), total, unit))

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch, self._steps_done = epoch + 1, 0

        def on_train_batch_end(self, batch, logs=None):
            # `batch` is the last step run: a model compiled with steps_per_execution runs several per call
            if self._per_step:
                self._advance(batch + 1 - self._steps_done, f"epoch {self._epoch}/{self.epochs}  {self._last}".rstrip())
                self._steps_done = batch + 1

        def on_epoch_end(self, epoch, logs=None):
            self._last = "  ".join(f"{k} {v:.3f}" for k, v in (logs or {}).items() if "loss" in k or "accuracy" in k)
            log.debug(f"{self.phase} epoch {epoch + 1}/{self.epochs}: {self._last}")
            if not self._per_step:
                self._advance(1, self._last)

        def on_train_end(self, logs=None):
            self._stack.close()

    return EpochProgress


def softmax_head_validation(dense, features: np.ndarray, labels: np.ndarray):
    """A callback that puts `val_loss` and `val_accuracy` of a softmax `dense` layer on `features` into each
    epoch's logs, for the early stopping, TensorBoard and history callbacks after it.

    Keras' own validation of the head on cached features cost 1.6 of its 2.8 s fit (40 epochs on 400 flowers:
    a data handler and a traced evaluate call per epoch); for one Dense layer the same numbers are a matrix
    product in NumPy (`softmax_head_metrics`).
    """
    return _softmax_head_validation_class()(dense, features, labels)


def softmax_head_metrics(dense, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """`val_loss` and `val_accuracy` of a softmax `dense` layer on `features`; the loss is computed from the
    logits, as Keras computes it for a softmax output."""
    kernel, bias = dense.get_weights()
    loss, accuracy = log_loss_and_accuracy(features @ kernel + bias, labels)
    return {"val_loss": loss, "val_accuracy": accuracy}


@lru_cache(maxsize=None)
def _softmax_head_validation_class():
    _, keras = load_tensorflow()

    class SoftmaxHeadValidation(keras.callbacks.Callback):
        def __init__(self, dense, features: np.ndarray, labels: np.ndarray):
            super().__init__()
            self.dense, self.features, self.labels = dense, features, labels

        def on_epoch_end(self, epoch, logs=None):
            logs.update(softmax_head_metrics(self.dense, self.features, self.labels))

    return SoftmaxHeadValidation
