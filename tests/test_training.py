"""Backbones, the bottleneck cache and the two training paths (cached-feature head + fine-tune, from scratch)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import TINY_SIZE, make_pattern_images

from imgpipe.bottlenecks import model_key
from imgpipe.errors import ConfigError, WeightsError
from imgpipe.model import ARCHITECTURES, BackboneSpec, build_classifier
from imgpipe.preprocessing import Preprocessing
from imgpipe.tf_runtime import load_tensorflow
from imgpipe.train import SplitData, TrainConfig, train_classifier


@pytest.fixture(scope="module")
def no_top_weights(tmp_path_factory):
    """A Keras no-top .h5 like the ImageNet files (random values: tests have no network)."""
    _, keras = load_tensorflow()
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_0.35_no_top.h5"
    keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, weights=None, input_shape=(TINY_SIZE, TINY_SIZE, 3)
    ).save_weights(str(path))
    return path


@pytest.fixture(scope="module")
def split_data():
    train, train_y = make_pattern_images(8, seed=1)
    val, val_y = make_pattern_images(3, seed=2)
    hashes = lambda imgs: [hashlib.sha256(img.tobytes()).hexdigest() for img in imgs]  # noqa: E731
    return SplitData(train, train_y, hashes(train), val, val_y, hashes(val))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_builds_one_flat_graph(arch):
    model = build_classifier(BackboneSpec(arch, 0.75 if "v3" in arch else 0.5, TINY_SIZE, "none"), 4)
    _, keras = load_tensorflow()
    assert not any(isinstance(layer, keras.Model) for layer in model.layers), "no model nested in the model"
    assert model.input_names == ["image"]
    assert model.get_layer("probabilities").units == 4
    assert not any(type(layer).__name__ == "Rescaling" for layer in model.layers), (
        "normalization is the preprocessing contract, not a layer"
    )


def test_pretrained_path_caches_bottlenecks_and_fine_tunes(no_top_weights, split_data, tmp_path):
    spec = BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, str(no_top_weights))
    config = TrainConfig(epochs=2, fine_tune_epochs=1, fine_tune_layers=10, batch_size=8)
    pre = Preprocessing(TINY_SIZE)
    first = train_classifier(
        spec, config, split_data, 3, pre, tmp_path / "cache", tmp_path / "logs", progress=lambda *_: None
    )
    assert first.bottlenecks_computed == len(split_data.train_images) + len(split_data.val_images)
    assert set(first.history) == {"head", "fine_tune"}
    assert len(first.history["head"]["loss"]) <= 2 and "val_loss" in first.history["head"]
    assert list((tmp_path / "logs").glob("*/train/events.out.tfevents*")), "TensorBoard logs per phase"
    second = train_classifier(
        spec, config, split_data, 3, pre, tmp_path / "cache", tmp_path / "logs2", progress=lambda *_: None
    )
    assert second.bottlenecks_computed == 0, "a rebuild reads every feature from the cache"


def test_head_weights_reach_the_full_model(no_top_weights, split_data, tmp_path):
    """The head trained on cached features must be the one inside the exported model."""
    spec = BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, str(no_top_weights))
    result = train_classifier(
        spec,
        TrainConfig(epochs=3, batch_size=8),
        split_data,
        3,
        Preprocessing(TINY_SIZE),
        tmp_path / "cache",
        tmp_path / "logs",
        progress=lambda *_: None,
    )
    kernel, _ = result.model.get_layer("probabilities").get_weights()
    fresh = build_classifier(spec, 3)
    assert not np.allclose(kernel, fresh.get_layer("probabilities").get_weights()[0])


def test_cache_key_follows_weights_content(no_top_weights, tmp_path):
    pre = Preprocessing(TINY_SIZE)
    copy = tmp_path / "copy.h5"
    copy.write_bytes(no_top_weights.read_bytes())
    same = model_key(BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, str(copy)), pre)
    assert same == model_key(BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, str(no_top_weights)), pre)
    copy.write_bytes(no_top_weights.read_bytes() + b"\0")
    assert model_key(BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, str(copy)), pre) != same
    assert model_key(BackboneSpec("mobilenet_v2", 0.35, 128, str(no_top_weights)), Preprocessing(128)) != same


def test_weights_for_another_architecture_are_a_clear_error(no_top_weights):
    with pytest.raises(WeightsError, match="mobilenet_v1"):
        build_classifier(BackboneSpec("mobilenet_v1", 0.25, TINY_SIZE, str(no_top_weights)), 3)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        (BackboneSpec("resnet", 1.0, 96, "none"), "unknown --arch"),
        (BackboneSpec("mobilenet_v2", 1.0, 64, "none"), "outside 96-224"),
        (BackboneSpec("mobilenet_v2", 1.0, 96, "/no/such.h5"), "not found"),
    ],
)
def test_bad_backbone_options(spec, fragment):
    with pytest.raises((ConfigError, WeightsError), match=fragment):
        spec.validate()
