"""The head solved as L2-regularized logistic regression: its gradient, its optimum, the strength it chooses."""

from __future__ import annotations

import numpy as np
import pytest

from imgpipe.pipeline.training import head_lbfgs
from imgpipe.pipeline.training.head_lbfgs import L2_PATH, L2_WITHOUT_VAL, fit_softmax_head, log_loss_and_accuracy


def _blobs(n_per_class: int, classes: int, dim: int = 24, spread: float = 1.5, seed: int = 0):
    """Non-negative features like pooled ReLU activations, one noisy centre per class."""
    centres = np.random.default_rng(0).uniform(0, 3, (classes, dim))  # the same classes in every split
    rng = np.random.default_rng(seed + 1)
    labels = np.repeat(np.arange(classes), n_per_class)
    x = np.clip(centres[labels] + rng.normal(0, spread, (len(labels), dim)), 0, 6).astype(np.float32)
    return x, labels


def test_gradient_is_the_loss_derivative():
    x, labels = _blobs(10, 3, dim=6)
    onehot = np.eye(3, dtype=np.float32)[labels]
    params = np.random.default_rng(1).normal(0, 0.3, 6 * 3 + 3)
    _, grad = head_lbfgs._loss_and_gradient(params, x, onehot, 0.05)
    step = 1e-4
    numeric = np.array(
        [
            (
                head_lbfgs._loss_and_gradient(params + step * e, x, onehot, 0.05)[0]
                - head_lbfgs._loss_and_gradient(params - step * e, x, onehot, 0.05)[0]
            )
            / (2 * step)
            for e in np.eye(len(params))
        ]
    )
    np.testing.assert_allclose(grad, numeric, rtol=1e-2, atol=1e-4)


def test_solution_is_scikit_learns_logistic_regression(monkeypatch):
    """One strength, no val: the optimum of the same objective as scikit-learn's (C = 1 / (strength * rows))."""
    from sklearn.linear_model import LogisticRegression

    monkeypatch.setattr(head_lbfgs, "GRADIENT_TOLERANCE", 1e-9)  # the optimum itself, not the build's stopping point
    monkeypatch.setattr(head_lbfgs, "MAX_ITERATIONS", 10_000)
    x, labels = _blobs(40, 4)
    fit = fit_softmax_head(x, labels, 4, np.zeros((0, x.shape[1]), np.float32), np.zeros(0, int))
    assert fit.l2 == L2_WITHOUT_VAL and fit.path["l2"] == [L2_WITHOUT_VAL] and "val_loss" not in fit.path
    reference = LogisticRegression(C=1 / (L2_WITHOUT_VAL * len(x)), tol=1e-10, max_iter=10_000).fit(x, labels)
    ours = x @ fit.kernel + fit.bias
    ours = np.exp(ours - ours.max(1, keepdims=True))
    # float32 products (ours) against float64 (theirs): probabilities within a few thousandths
    np.testing.assert_allclose(ours / ours.sum(1, keepdims=True), reference.predict_proba(x), atol=5e-3)
    assert fit.kernel.shape == (x.shape[1], 4) and fit.kernel.dtype == np.float32 and fit.bias.dtype == np.float32


def test_strength_is_the_one_with_the_lowest_val_loss():
    x, labels = _blobs(30, 3, spread=2.5)
    val_x, val_labels = _blobs(15, 3, spread=2.5, seed=7)
    steps = []
    fit = fit_softmax_head(x, labels, 3, val_x, val_labels, progress=steps.append)
    assert fit.path["l2"] == list(L2_PATH) and len(steps) == len(L2_PATH)
    assert fit.l2 == L2_PATH[int(np.argmin(fit.path["val_loss"]))]
    loss, accuracy = log_loss_and_accuracy(val_x @ fit.kernel + fit.bias, val_labels)
    assert loss == pytest.approx(min(fit.path["val_loss"]), rel=1e-5) and accuracy > 0.6  # chance: 1/3
    # stronger regularization fits the training rows less closely
    assert fit.path["train_loss"] == sorted(fit.path["train_loss"], reverse=True)


def test_two_classes_and_a_rerun_give_the_same_head():
    x, labels = _blobs(25, 2)
    val_x, val_labels = _blobs(10, 2, seed=3)
    first = fit_softmax_head(x, labels, 2, val_x, val_labels)
    second = fit_softmax_head(x, labels, 2, val_x, val_labels)
    np.testing.assert_array_equal(first.kernel, second.kernel)
    np.testing.assert_array_equal(first.bias, second.bias)
    assert ((x @ first.kernel + first.bias).argmax(1) == labels).mean() > 0.9


def test_log_loss_matches_the_softmax_definition():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [500.0, 0.0, 0.0]])
    labels = np.array([0, 2, 1])
    probs = np.exp(logits[:2] - logits[:2].max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    loss, accuracy = log_loss_and_accuracy(logits, labels)
    expected = (-np.log(probs[0, 0]) - np.log(probs[1, 2]) + 500.0) / 3  # the third: finite although exp(500) is not
    assert loss == pytest.approx(expected) and accuracy == pytest.approx(1 / 3)
