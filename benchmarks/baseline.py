"""The usual recipe, as the Keras transfer-learning tutorial writes it, run on the same files as imgpipe.

`image_dataset_from_directory`, a frozen MobileNetV2 called with training=False behind augmentation layers and
the model's own rescaling, 10 epochs of `fit` on images, then `TFLiteConverter.from_keras_model`. It trains on
imgpipe's train split and is scored on imgpipe's test split, so the two accuracies are comparable.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path, PurePosixPath

import numpy as np

from ..pipeline.config import BackboneSpec
from ..pipeline.core.preprocessing import load_image
from ..pipeline.core.tf_runtime import load_tensorflow

log = logging.getLogger(__name__)


def run_baseline(
    dataset_root: Path,
    train_relpaths: list[str],
    test_relpaths: list[str],
    labels: list[str],
    backbone: BackboneSpec,
    epochs: int = 10,
    convert: bool = True,
) -> dict:
    """Train the recipe on `train_relpaths` and score it on `test_relpaths`, both inside `dataset_root`; the test
    photos are decoded with imgpipe's own contract, as imgpipe's test split is. `convert=False` skips the TFLite
    conversion (about 13 s) where only the accuracy is wanted."""
    tf, keras = load_tensorflow()
    keras.utils.set_random_seed(0)
    size = backbone.image_size
    with tempfile.TemporaryDirectory(prefix="imgpipe-baseline-") as tmp:
        train_dir = _link_split(Path(dataset_root), train_relpaths, Path(tmp) / "train", labels)
        start = time.perf_counter()
        train_ds = keras.utils.image_dataset_from_directory(
            train_dir, image_size=(size, size), batch_size=32, class_names=labels, shuffle=True, seed=0
        )
        model = _tutorial_model(keras, len(labels), backbone)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=["accuracy"],
        )
        log.info(f"baseline: Keras tutorial recipe, {epochs} epochs on {len(train_relpaths)} images")
        model.fit(train_ds.prefetch(tf.data.AUTOTUNE), epochs=epochs, verbose=0)
        train_seconds = time.perf_counter() - start
    test_images = np.stack([load_image(Path(dataset_root) / rel, size) for rel in test_relpaths])
    test_labels = np.array([labels.index(PurePosixPath(rel).parts[0]) for rel in test_relpaths])
    probs = model.predict(test_images.astype(np.float32), verbose=0)
    accuracy = float((probs.argmax(1) == test_labels).mean())
    result = {
        "recipe": "keras-tutorial-mobilenetv2",
        "epochs": epochs,
        "train_seconds": round(train_seconds, 2),
        "accuracy": accuracy,
    }
    if convert:
        start = time.perf_counter()
        result["tflite_bytes"] = len(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        result["convert_seconds"] = round(time.perf_counter() - start, 2)
    return result


def _tutorial_model(keras, num_classes: int, backbone: BackboneSpec):
    augmentation = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)])
    base = keras.applications.MobileNetV2(
        input_shape=(backbone.image_size, backbone.image_size, 3),
        include_top=False,
        weights=None if backbone.weights == "none" else backbone.weights,
        alpha=backbone.alpha,
    )
    base.trainable = False
    inputs = keras.Input(shape=(backbone.image_size, backbone.image_size, 3))
    x = augmentation(inputs)
    x = keras.applications.mobilenet_v2.preprocess_input(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def _link_split(root: Path, relpaths: list[str], dest: Path, labels: list[str]) -> Path:
    """A class-folder tree of symlinks holding only the given files, for image_dataset_from_directory."""
    for label in labels:
        (dest / label).mkdir(parents=True, exist_ok=True)
    for rel in relpaths:
        os.symlink((root / rel).resolve(), dest / rel)
    return dest
