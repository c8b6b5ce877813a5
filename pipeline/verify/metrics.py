"""Classification metrics from probabilities, in plain numpy so every runner is scored identically."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from .calibration import expected_calibration_error

Z_95 = NormalDist().inv_cdf(0.975)  # 1.96: the normal quantile of a two-sided 95 % interval


def classification_metrics(probs: np.ndarray, y_true: np.ndarray, labels: list[str]) -> dict:
    """accuracy with its 95 % interval, macro-F1, log-loss, per-class accuracy, the confusion matrix (rows: true,
    cols: predicted) and the expected calibration error."""
    n = len(labels)
    pred = probs.argmax(axis=1)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (y_true, pred), 1)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    tp = np.diag(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        f1 = np.where(precision + np.nan_to_num(recall) > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    right = int(tp.sum())
    eps = 1e-7
    picked = np.clip(probs[np.arange(len(y_true)), y_true], eps, 1.0)
    return {
        "accuracy": float((pred == y_true).mean()) if len(y_true) else None,
        "accuracy_interval": accuracy_interval(right, len(y_true)) if len(y_true) else None,
        "macro_f1": float(np.mean(f1[present])) if present.any() else None,
        "log_loss": float(-np.mean(np.log(picked))) if len(y_true) else None,
        "per_class_accuracy": {labels[i]: (float(recall[i]) if present[i] else None) for i in range(n)},
        "confusion_matrix": confusion.tolist(),
        "samples": int(len(y_true)),
        "ece": expected_calibration_error(probs, y_true) if len(y_true) else None,
    }


def accuracy_interval(right: int, tested: int) -> list[float]:
    """The 95 % Wilson score interval of an accuracy measured on `tested` photos: where the accuracy on more photos
    like these is likely to be. On a test split of 50 photos one photo is 2 points, and 45 right means anything
    from 79 to 96 %; the Wilson interval stays inside 0-100 % and is sound at 0 or all right, unlike p ± 1.96 SE."""
    p, z = right / tested, Z_95
    centre = (p + z * z / (2 * tested)) / (1 + z * z / tested)
    half = z / (1 + z * z / tested) * math.sqrt(p * (1 - p) / tested + z * z / (4 * tested * tested))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def exact_mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar test on the photos only one of two models got right (on the same photos): the chance
    of a split at least this uneven if either model were as likely to be the one right. Photos both got right or
    wrong say nothing; a difference of a photo or two is no evidence either way."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    # the binomial(n, 1/2) tail up to the smaller count, in logs: exact integers cost minutes at 40,000 photos
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in range(min(only_a, only_b) + 1)]
    top = max(logs)
    tail = math.exp(top - n * math.log(2)) * math.fsum(math.exp(v - top) for v in logs)
    return min(1.0, 2 * tail)


MISTAKES_KEPT = 1000  # the manifest's list; a real test split's mistakes fit, a huge one's most confident do


def mistakes_of(probs: np.ndarray, y_true: np.ndarray, labels: list[str], paths: list[str]) -> dict:
    """The photos the model got wrong, most confident first: where mislabelled photos and the model's blind spots
    show up, and what lets two builds on one split be compared photo by photo. `total` counts them all; `listed`
    keeps the first MISTAKES_KEPT."""
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    confidence = probs[wrong, pred[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:MISTAKES_KEPT]
    return {
        "total": int(len(wrong)),
        "listed": [
            {
                "path": paths[i],
                "label": labels[y_true[i]],
                "predicted": labels[pred[i]],
                "confidence": float(probs[i, pred[i]]),
            }
            for i in order
        ],
    }


def agreement_metrics(probs: np.ndarray, reference: np.ndarray) -> dict:
    """How closely an artifact reproduces the float Keras model on the same images."""
    return {
        "agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
        "max_abs_prob_diff": float(np.abs(probs - reference).max()),
    }
