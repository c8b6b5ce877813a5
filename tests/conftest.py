"""Shared fixtures: tiny models and images generated on the spot, so tests need no network and no ../shared."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from imgpipe.exporters.base import ExportContext, ModelMetadata  # noqa: E402
from imgpipe.preprocessing import Preprocessing  # noqa: E402

TINY_SIZE = 96
TINY_LABELS = ["circle", "square", "stripes"]


def make_pattern_images(n_per_class: int, size: int = TINY_SIZE, seed: int = 0):
    """uint8 RGB images of three easily separated patterns, and their integer labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, labels = [], []
    for label in range(3):
        for _ in range(n_per_class):
            bg = rng.integers(0, 90, 3)
            fg = rng.integers(150, 256, 3)
            cy, cx, r = rng.integers(size // 3, 2 * size // 3, 2).tolist() + [int(rng.integers(size // 6, size // 3))]
            if label == 0:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            elif label == 1:
                mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
            else:
                period = int(rng.integers(6, 14))
                mask = (xx // (period // 2)) % 2 == 0
            img = np.where(mask[..., None], fg, bg) + rng.normal(0, 12, (size, size, 3))
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.array(labels)


def quick_build_args(data, out, cache, *extra: str) -> list[str]:
    """`imgpipe build` arguments for the quickest real build (random init, 96 px, alpha 0.35, one epoch): for tests
    about what a build does with its artifacts, not about how well it learns."""
    return [
        "build",
        "--dataset",
        str(data),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--weights",
        "none",
        "--image-size",
        "96",
        "--alpha",
        "0.35",
        "--epochs",
        "1",
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny_images():
    """(images uint8 (60, 96, 96, 3), labels int) — 20 per class."""
    return make_pattern_images(20)


@pytest.fixture(scope="session")
def tiny_model(tiny_images):
    """A flat MobileNetV2 (alpha 0.35, 96 px, random init) briefly trained on the pattern images.

    Trained just enough that its predictions are not constant, so parity and quantization checks mean something.
    """
    from imgpipe.model import BackboneSpec, build_classifier
    from imgpipe.tf_runtime import load_tensorflow

    tf, keras = load_tensorflow()
    keras.utils.set_random_seed(0)
    model = build_classifier(BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, "none"), len(TINY_LABELS))
    images, labels = tiny_images
    x = Preprocessing(TINY_SIZE).normalize(images)
    for layer in model.layers:  # Keras' 0.999 BN momentum leaves statistics stale in a run this short
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.8
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, labels, epochs=15, batch_size=8, verbose=0)
    probs = model.predict(x, verbose=0)
    assert probs.max(axis=1).mean() > 0.5 and len(set(probs.argmax(1))) > 1, "tiny model did not learn"
    return model


@pytest.fixture(scope="session")
def export_context(tiny_model, tiny_images, tmp_path_factory):
    """Everything an exporter needs, for the tiny model (session-wide, so each module converts each variant once)."""
    images, _ = tiny_images
    return ExportContext(
        model=tiny_model,
        labels=list(TINY_LABELS),
        preprocessing=Preprocessing(TINY_SIZE),
        metadata=ModelMetadata(name="TinyPatterns", description="test model", version="0.0.1"),
        workdir=tmp_path_factory.mktemp("work"),
        representative_images=images,
    )
