"""Calibration: the expected calibration error, the temperature and when it is used, and the fold into the head
that makes every exported format give the calibrated probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from imgpipe.pipeline.verify.calibration import (
    MIN_VAL_ERRORS,
    MIN_VAL_PHOTOS,
    TEMPERATURE_RANGE,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_ece_is_the_gap_between_confidence_and_accuracy():
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]] * 2), labels) == 0.0
    overconfident = np.array([[0.9, 0.1]] * 4)  # 90% sure of class 0, right half the time
    assert expected_calibration_error(overconfident, labels) == pytest.approx(0.4)


def test_reliability_bins_cover_every_prediction_once():
    rng = np.random.default_rng(0)
    probs = _softmax(rng.normal(size=(200, 4)) * 3)
    labels = rng.integers(0, 4, 200)
    bins = reliability_bins(probs, labels)
    assert sum(b["count"] for b in bins) == 200
    assert all(b["low"] <= b["confidence"] <= b["high"] for b in bins if b["count"])


def test_an_overconfident_model_gets_a_temperature_above_one_that_lowers_the_loss():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3))
    logits[np.arange(300), labels] += 1.0
    temperature, why = fit_temperature(logits * 3.0, labels)  # the same ranking, three times too sure
    assert 1.0 < temperature <= TEMPERATURE_RANGE[1] and "lowers the validation log-loss" in why
    before = expected_calibration_error(_softmax(logits * 3.0), labels)
    after = expected_calibration_error(_softmax(logits * 3.0 / temperature), labels)
    assert after < before


def test_too_few_validation_errors_leave_the_model_as_trained():
    labels = np.arange(MIN_VAL_PHOTOS) % 3
    logits = np.eye(3)[labels] * 5
    logits[0] = np.eye(3)[1] * 5  # one error
    temperature, why = fit_temperature(logits, labels)
    assert temperature == 1.0 and f"1 error(s), fewer than {MIN_VAL_ERRORS}" in why


def test_too_few_validation_photos_leave_the_model_as_trained():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, MIN_VAL_PHOTOS - 1)
    temperature, why = fit_temperature(rng.normal(size=(len(labels), 3)) * 4, labels)
    assert temperature == 1.0 and f"fewer than {MIN_VAL_PHOTOS}" in why


def test_the_temperature_folded_into_the_head_divides_the_logits():
    from imgpipe.pipeline.core.tf_runtime import load_tensorflow
    from imgpipe.pipeline.training.model import OUTPUT_NAME
    from imgpipe.pipeline.verify.temperature import fold_temperature

    _, keras = load_tensorflow()
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name=OUTPUT_NAME)(inputs))
    x = np.random.default_rng(2).normal(size=(8, 5)).astype(np.float32)
    kernel, bias = model.get_layer(OUTPUT_NAME).get_weights()
    fold_temperature(model, 1.7)
    expected = _softmax((x @ kernel + bias) / 1.7)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)


def test_val_probabilities_from_cached_features_are_the_models_own(tiny_model, tiny_images):
    """`calibrate` reads the frozen backbone's cached features instead of running the model on the photos: the
    head on those features must be the whole model's output."""
    from imgpipe.pipeline.core.preprocessing import Preprocessing
    from imgpipe.pipeline.training.model import OUTPUT_NAME, feature_extractor

    images = tiny_images[0][:12]
    x = Preprocessing(images.shape[1]).normalize(images)
    features = feature_extractor(tiny_model).predict(x, verbose=0)
    kernel, bias = tiny_model.get_layer(OUTPUT_NAME).get_weights()
    np.testing.assert_allclose(_softmax(features @ kernel + bias), tiny_model.predict(x, verbose=0), atol=1e-5)
