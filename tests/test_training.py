"""Backbones, the bottleneck cache and the two training paths (cached-feature head + fine-tune, from scratch)."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest
from conftest import TINY_SIZE, make_pattern_images

from imgpipe.pipeline.config import ARCHITECTURES, BackboneSpec, TrainConfig
from imgpipe.pipeline.core.errors import ConfigError, WeightsError
from imgpipe.pipeline.core.preprocessing import Preprocessing
from imgpipe.pipeline.core.tf_runtime import load_tensorflow
from imgpipe.pipeline.data.photos import Photos, TrainingData
from imgpipe.pipeline.training import litert_backbone
from imgpipe.pipeline.training.features import cached_features, model_key
from imgpipe.pipeline.training.model import build_classifier, feature_extractor
from imgpipe.pipeline.training.train import backbone_features, new_classifier, train_classifier
from imgpipe.pipeline.training.weights import resolve_backbone

pytestmark = pytest.mark.slow


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
    return TrainingData(Photos.from_array(train, train_y, hashes(train)), Photos.from_array(val, val_y, hashes(val)))


def _train(spec, config, data, pre, cache, logs):
    """What a build does: features of the train and val photos, then the head (and fine-tuning)."""
    model = new_classifier(spec, config, 3)
    train_f = backbone_features(model, data.train, spec, pre, cache)
    val_f = backbone_features(model, data.val, spec, pre, cache)
    result = train_classifier(model, spec, config, data, pre, logs, (train_f.values, val_f.values))
    return result, train_f.computed + val_f.computed


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
    config = TrainConfig(head="adam", epochs=2, fine_tune_epochs=1, fine_tune_layers=10, batch_size=8)
    pre = Preprocessing(TINY_SIZE)
    first, computed = _train(spec, config, split_data, pre, tmp_path / "cache", tmp_path / "logs")
    assert computed == len(split_data.train) + len(split_data.val)
    assert set(first.history) == {"head", "fine_tune"}
    assert set(first.val_accuracy) == {"head", "fine_tune"} and all(0 <= v <= 1 for v in first.val_accuracy.values())
    assert len(first.history["head"]["loss"]) <= 2 and "val_loss" in first.history["head"]
    assert list((tmp_path / "logs").glob("*/train/events.out.tfevents*")), "TensorBoard logs per phase"
    second, computed = _train(spec, config, split_data, pre, tmp_path / "cache", tmp_path / "logs2")
    assert computed == 0, "a rebuild reads every feature from the cache"
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b, "same seed, same weights: head and augmented fine-tune are repeatable")


def test_fine_tuning_ends_its_decay_epochs_at_five_percent_of_its_rate(no_top_weights, split_data, tmp_path):
    spec = BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, str(no_top_weights))
    config = TrainConfig(fine_tune_epochs=2, decay_epochs=1, fine_tune_layers=10, batch_size=8, patience=5)
    result, _ = _train(spec, config, split_data, Preprocessing(TINY_SIZE), tmp_path / "cache", tmp_path / "logs")
    optimizer = result.model.optimizer
    steps = int(optimizer.iterations.numpy())
    assert steps == 2 * -(-len(split_data.train) // 8) and len(result.history["fine_tune"]["loss"]) == 2
    rate_at = lambda step: float(optimizer.learning_rate(step))  # noqa: E731
    assert rate_at(steps // 2) == pytest.approx(config.fine_tune_learning_rate), "constant through the first epoch"
    assert rate_at(steps) == pytest.approx(0.05 * config.fine_tune_learning_rate), "then down a cosine to 5%"


def test_head_weights_reach_the_full_model(no_top_weights, split_data, tmp_path):
    """The head solved on cached features (the default, L-BFGS) must be the one inside the exported model: the
    full model's probabilities are the softmax of the features through the solved weights."""
    spec = BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, str(no_top_weights))
    pre = Preprocessing(TINY_SIZE)
    result, _ = _train(spec, TrainConfig(), split_data, pre, tmp_path / "cache", tmp_path)
    assert set(result.history["head"]) >= {"l2", "train_loss", "val_loss"} and "loss" not in result.history["head"]
    assert 0 <= result.val_accuracy["head"] <= 1
    kernel, bias = result.model.get_layer("probabilities").get_weights()
    fresh = build_classifier(spec, 3)
    assert not np.allclose(kernel, fresh.get_layer("probabilities").get_weights()[0])
    features = backbone_features(result.model, split_data.val, spec, pre, tmp_path / "cache").values
    logits = features @ kernel + bias
    expected = np.exp(logits - logits.max(1, keepdims=True))
    images = pre.normalize(split_data.val.pixels.take(np.arange(len(split_data.val))))
    np.testing.assert_allclose(
        result.model.predict(images, verbose=0), expected / expected.sum(1, keepdims=True), atol=1e-4
    )


def test_litert_backbone_gives_the_keras_features(no_top_weights, split_data, tmp_path, monkeypatch):
    """Many photos to compute go through the backbone converted for LiteRT; its features are Keras' within the
    module's tolerance, and the converted file is cached for the next build."""
    spec = resolve_backbone(BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, str(no_top_weights)))
    pre = Preprocessing(TINY_SIZE)
    extractor = feature_extractor(build_classifier(spec, 3))
    graph = cached_features(extractor, split_data.train, tmp_path / "graph", pre)
    monkeypatch.setattr(litert_backbone, "WORTH_CONVERTING", 1)
    converted = cached_features(extractor, split_data.train, tmp_path / "litert", pre)
    assert (graph.engine, converted.engine) == ("tensorflow graph", "litert (xnnpack)")
    assert converted.conversion_seconds > 0 and (tmp_path / "litert" / litert_backbone.FILE).is_file()
    np.testing.assert_allclose(converted.values, graph.values, atol=litert_backbone.TOLERANCE)


def test_cache_key_follows_weights_content(no_top_weights, tmp_path):
    pre = Preprocessing(TINY_SIZE)
    copy = tmp_path / "copy.h5"
    copy.write_bytes(no_top_weights.read_bytes())
    same = model_key(BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, str(copy)), pre)
    assert same == model_key(BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, str(no_top_weights)), pre)
    copy.write_bytes(no_top_weights.read_bytes() + b"\0")
    assert model_key(BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, str(copy)), pre) != same
    assert model_key(BackboneSpec("mobilenet_v2", 0.35, 128, str(no_top_weights)), Preprocessing(128)) != same


def test_weights_file_decides_the_width_and_a_misfit_names_the_right_one(no_top_weights):
    """The file was made for mobilenet_v2 alpha 0.35: without --alpha that is the width; with another arch or
    alpha the error says which one the file fits, before any photo is decoded."""
    assert resolve_backbone(BackboneSpec("mobilenet_v2", None, TINY_SIZE, str(no_top_weights))).alpha == 0.35
    with pytest.raises(WeightsError, match="made for mobilenet_v2 alpha 0.35: pass --arch mobilenet_v2 --alpha 0.35"):
        resolve_backbone(BackboneSpec("mobilenet_v1", 0.25, TINY_SIZE, str(no_top_weights)))
    with pytest.raises(WeightsError, match="--alpha 0.35"):
        resolve_backbone(BackboneSpec("mobilenet_v2", 0.5, TINY_SIZE, str(no_top_weights)))


def test_a_weights_file_checked_once_is_not_checked_again_until_it_changes(no_top_weights, tmp_path, monkeypatch):
    weights = tmp_path / "weights.h5"
    shutil.copy2(no_top_weights, weights)
    fitted: dict = {}
    spec = BackboneSpec("mobilenet_v2", None, TINY_SIZE, str(weights))
    assert resolve_backbone(spec, fitted).alpha == 0.35 and len(fitted) == 1
    checks = []
    stand_in = lambda path, prefer: checks.append(path) or ("mobilenet_v2", 0.5)  # noqa: E731
    monkeypatch.setattr("imgpipe.pipeline.training.weights.identify", stand_in)
    assert resolve_backbone(spec, fitted).alpha == 0.35 and checks == []  # trusted: same file, size and time
    os.utime(weights, ns=(0, 0))  # touched: checked again
    assert resolve_backbone(spec, fitted).alpha == 0.5 and checks == [weights]


@pytest.mark.parametrize("content", [b"", b"not hdf5 at all", None])
def test_a_file_that_is_not_keras_weights_is_a_clear_error(no_top_weights, tmp_path, content):
    path = tmp_path / "weights.h5"
    path.write_bytes(no_top_weights.read_bytes()[:5000] if content is None else content)  # None: truncated
    with pytest.raises(WeightsError, match="weights.h5: not a Keras weights file"):
        resolve_backbone(BackboneSpec("mobilenet_v2", None, TINY_SIZE, str(path)))


def test_without_a_weights_file_the_default_width_applies():
    assert resolve_backbone(BackboneSpec("mobilenet_v2", None, TINY_SIZE, "none")).alpha == 1.0


def test_a_missing_weights_file_is_a_config_error():
    with pytest.raises(ConfigError, match="/no/such.h5: weights file not found"):
        BackboneSpec("mobilenet_v2", 1.0, 96, "/no/such.h5").check()


def test_the_heads_validation_numbers_are_keras_own():
    """The head's per-epoch validation is computed in NumPy (see `softmax_head_validation`): the same val_loss and
    val_accuracy as Keras' evaluate on the same weights."""
    from imgpipe.pipeline.training.fit import softmax_head_validation

    _, keras = load_tensorflow()
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(50, 16)).astype(np.float32), rng.integers(0, 3, 50)
    inputs = keras.Input((16,))
    dense = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.Dropout(0.2)(inputs)))
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    logs = {}
    softmax_head_validation(dense, features, labels).on_epoch_end(0, logs)
    loss, accuracy = model.evaluate(features, labels, verbose=0)
    assert logs["val_loss"] == pytest.approx(loss, rel=1e-5) and logs["val_accuracy"] == pytest.approx(accuracy)
