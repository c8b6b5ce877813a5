"""Picking a small, representative subset: calibration sets for int8 quantization, QAT ranges, BN statistics."""

from __future__ import annotations

import numpy as np


def spread_evenly(items: np.ndarray, limit: int) -> np.ndarray:
    """Up to `limit` items spread evenly over `items`: splits come sorted by class, and the first N would cover
    the first classes only."""
    if len(items) <= limit:
        return items
    picks = np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))
    return items[picks]
