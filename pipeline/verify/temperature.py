"""Temperature scaling folded into the classifier's last layer, so every exported format ships the calibrated
probabilities with no extra op: softmax((x W + b) / T) is softmax(x (W / T) + b / T)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.preprocessing import Preprocessing
from ..data.photos import Photos
from ..training.fit import predict_photos
from ..training.model import OUTPUT_NAME
from .calibration import expected_calibration_error, fit_temperature


@dataclass
class Calibration:
    temperature: float  # 1.0: the model is exported as trained
    why: str
    val_ece_before: float | None
    val_ece_after: float | None

    def to_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "why": self.why,
            "val_ece_before": self.val_ece_before,
            "val_ece_after": self.val_ece_after,
        }


def calibrate(model, val: Photos, preprocessing: Preprocessing, val_features: np.ndarray | None = None) -> Calibration:
    """Fit a temperature on the validation photos (see `verify.calibration` for when one is used) and fold it
    into `model`'s output layer in place. `val_features`, the frozen backbone's cached features of those photos,
    spare decoding them and running the backbone again (valid while the backbone was not fine-tuned)."""
    if len(val) == 0:
        return Calibration(1.0, "no validation photos", None, None)
    if val_features is not None:
        kernel, bias = model.get_layer(OUTPUT_NAME).get_weights()
        probs = _softmax(val_features @ kernel + bias)
    else:
        probs = predict_photos(model, val, preprocessing)
    # log-probabilities are the logits up to a constant per photo, which softmax ignores
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))
    temperature, why = fit_temperature(log_probs, val.labels)
    before = expected_calibration_error(probs, val.labels)
    if temperature == 1.0:
        return Calibration(1.0, why, before, before)
    fold_temperature(model, temperature)
    after = expected_calibration_error(_softmax(log_probs / temperature), val.labels)
    return Calibration(temperature, why, before, after)


def fold_temperature(model, temperature: float) -> None:
    layer = model.get_layer(OUTPUT_NAME)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel / temperature, bias / temperature])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
