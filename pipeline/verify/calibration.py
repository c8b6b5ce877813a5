"""Confidence that means something: expected calibration error, the reliability diagram's bins, and a
temperature fitted on the validation split when it helps.

Measured on the shared flowers and pets (10 folds): the head trained on cached features is already well calibrated
(ECE 3.3% and 2.1%), and a temperature fitted on ~45 validation photos made flowers worse (3.3% -> 4.9%) and, on
pets folds with no validation errors, ran to its bound and tripled the test log-loss. So a temperature is fitted
only when validation has enough errors to say something, kept within [0.5, 2], and used only if it lowers the
validation loss; otherwise it is 1 and the model is exported as trained.

Measured again with group-aware folds (10 per dataset, ~100 test photos, ~50 validation photos each): a temperature
chosen that way still raised the mean test ECE (flowers 8.7% -> 8.9%, pets 5.2% -> 5.8%), so it is also not fitted on
fewer than MIN_VAL_PHOTOS validation photos, where the val log-loss cannot tell a temperature from noise.
"""

from __future__ import annotations

import numpy as np

BINS = 15
MIN_VAL_ERRORS = 3
MIN_VAL_PHOTOS = 200
TEMPERATURE_RANGE = (0.5, 2.0)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Average |accuracy - confidence| over confidence bins, weighted by how many predictions fall in each."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per confidence bin: its range, how many predictions, their mean confidence and accuracy (the diagram)."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    return [
        {
            "low": float(edges[b]),
            "high": float(edges[b + 1]),
            "count": int((which == b).sum()),
            "confidence": float(confidence[which == b].mean()) if (which == b).any() else None,
            "accuracy": float(correct[which == b].mean()) if (which == b).any() else None,
        }
        for b in range(bins)
    ]


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> tuple[float, str]:
    """(temperature, why): the T minimizing validation log-loss of softmax(logits / T), or 1 with the reason."""
    errors = int((logits.argmax(axis=1) != labels).sum())
    if len(labels) < MIN_VAL_PHOTOS:
        return 1.0, f"validation has {len(labels)} photos, fewer than {MIN_VAL_PHOTOS}: too few to fit a temperature"
    if errors < MIN_VAL_ERRORS:
        return 1.0, f"validation has {errors} error(s), fewer than {MIN_VAL_ERRORS}: too few to fit a temperature"
    grid = np.exp(np.linspace(np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1]), 121))
    losses = [_log_loss(logits / t, labels) for t in grid]
    best = float(grid[int(np.argmin(losses))])
    if _log_loss(logits / best, labels) >= _log_loss(logits, labels) - 1e-4:
        return 1.0, "no temperature in [0.5, 2] lowers the validation log-loss"
    return best, f"lowers the validation log-loss from {_log_loss(logits, labels):.3f} to {min(losses):.3f}"


def _log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())
