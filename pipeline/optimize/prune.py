"""Magnitude pruning with tensorflow-model-optimization: sparse Conv2D/Dense kernels that shrink the download.

It works on a copy of the trained float classifier (the float model is exported too and must stay as it was),
fine-tunes it on the training images and returns a new flat tf_keras model, input `image`, that the exporters
consume like the float one, plus a JSON-ready report for the manifest. Layers are picked with
`clone_model(clone_function=...)` because tfmot's whole-model entry point rejects MobileNetV3 (its hard-swish and
squeeze-excite layers have no pruning rules); on V1/V2 that prunes the same weights as `prune_low_magnitude(model)`.
"""

from __future__ import annotations

import gzip
import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import PruneConfig
from ..core.preprocessing import Preprocessing
from ..core.tf_runtime import load_tensorflow, seed_everything
from ..data.photos import TrainingData
from ..training.fit import predict_photos
from .keras_tools import (
    CALIBRATION_IMAGES,
    fine_tune,
    fit_settings,
    leaf_layers,
    require_train_images,
    tfmot,
    trainable_copy,
)

log = logging.getLogger(__name__)
PRUNED_LAYER_TYPES = ("Conv2D", "Dense")  # what tfmot's magnitude pruning zeroes; its registry skips depthwise kernels
KERNEL_ATTRIBUTES = ("kernel", "depthwise_kernel", "pointwise_kernel")
MASK_UPDATES = 16  # times the pruning mask is recomputed over the schedule: smooth, yet cheap on large datasets
DEFAULT_EPOCHS = 4
MIN_STEPS = 100  # the default epochs stretch to this many steps on a small training split (see `pruning_epochs`)
DEPTHWISE_NOTE = (
    "tfmot does not prune DepthwiseConv2D kernels (its pruning registry lists no prunable weights for "
    "them), so they stay dense; MobileNets keep most weights in Conv2D/Dense kernels"
)


def prune_model(model, data: TrainingData, preprocessing: Preprocessing, config: PruneConfig, log_dir: Path):
    """(pruned copy of `model`, report): magnitude pruning of Conv2D/Dense kernels while fine-tuning.

    Sparsity follows tfmot's PolynomialDecay from 0 to the target over the whole fine-tune (cubic: most zeros come
    early, while the network still has steps left to recover), then `strip_pruning` leaves plain layers with zeros
    in their kernels. The zeros only pay off in compressed (zipped) size or with sparse-aware runtimes.

    BatchNormalization trains in batch-statistics mode here, unlike in QAT and classic fine-tuning: zeroing weights
    shifts every convolution's output statistics, and BN must follow them. Frozen BN normalized the pruned network
    with the dense network's statistics: MobileNetV2-0.35 on flowers (float .92) ended at .76-.85 even after
    re-estimating the statistics, against .89-.93 when BN trained and the statistics were re-estimated after.
    """
    require_train_images(data, "pruning")
    sparsity = tfmot().sparsity.keras
    seed_everything(config.seed)
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    config = replace(config, epochs=pruning_epochs(config.epochs, steps_per_epoch))
    schedule = pruning_schedule(config.target_sparsity, config.epochs * steps_per_epoch)
    wrapped = with_pruning_wrappers(trainable_copy(model), schedule)
    log.info(
        f"pruning: {config.target_sparsity:.0%} of Conv2D/Dense weights over {config.epochs} epochs "
        f"({steps_per_epoch} steps each) on {len(data.train)} images; val accuracy drops while weights are "
        "zeroed (BatchNorm's averages lag behind) and recovers when BatchNorm is re-estimated at the end"
    )
    callbacks = [
        sparsity.UpdatePruningStep(),
        sparsity.PruningSummaries(log_dir=str(log_dir), write_graph=False, profile_batch=0),
    ]
    start = time.perf_counter()
    history = fine_tune(wrapped, data, preprocessing, config, "prune", callbacks)
    seconds = time.perf_counter() - start
    pruned = sparsity.strip_pruning(wrapped)
    statistics_images = data.train.sample(CALIBRATION_IMAGES)
    before = history.get("val_accuracy", [None])[-1]
    reestimate_batchnorm(pruned, preprocessing.normalize(statistics_images), config.batch_size)
    after = _val_accuracy(pruned, data, preprocessing, config.batch_size)
    if before is not None and after is not None:
        log.info(
            f"pruning: val accuracy {before:.1%} at the last pruning epoch -> {after:.1%} after re-estimating "
            f"BatchNorm statistics on {len(statistics_images)} training images"
        )
    report = {
        "method": "tfmot prune_low_magnitude on Conv2D/Dense kernels, PolynomialDecay, then strip_pruning",
        "target_sparsity": config.target_sparsity,
        "schedule": schedule.get_config()["config"],
        **fit_settings(config, steps_per_epoch, seconds, history),
        "batchnorm": f"trained on batch statistics, re-estimated on {len(statistics_images)} training images",
        "val_accuracy_before_batchnorm_reestimation": before,
        "val_accuracy_after_batchnorm_reestimation": after,
        "sparsity": sparsity_report(pruned),
        "gzip_weights_bytes": {"float": gzipped_weights_size(model), "pruned": gzipped_weights_size(pruned)},
        "notes": [DEPTHWISE_NOTE],
    }
    log.info(
        f"pruning: {report['sparsity']['pruned_kernels']['sparsity']:.1%} zeros in Conv2D/Dense kernels, "
        f"{report['sparsity']['all_weights']['sparsity']:.1%} of all weights, {seconds:.0f} s"
    )
    return pruned, report


def pruning_epochs(asked: int | None, steps_per_epoch: int) -> int:
    """The epochs asked for, or by default 4, stretched to at least `MIN_STEPS` optimizer steps.

    Four epochs are plenty on thousands of photos, but on 400 flowers (13 steps an epoch) the sparsity ramped from 0
    to 50 % in 52 steps: pruned int8 models then agreed with the float model on 90 % of the test photos and lost
    2-4 points (3 seeds); over 104 steps they agreed on 94 % and lost 0-2 points (measured on MobileNetV2-0.5).
    """
    if asked is not None:
        return asked
    return max(DEFAULT_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch))


def with_pruning_wrappers(model, schedule):
    """A clone of `model` whose Conv2D/Dense layers are wrapped by tfmot's `prune_low_magnitude`, layer by layer:
    the route that also takes MobileNetV3 (see the module docstring)."""
    _, keras = load_tensorflow()
    sparsity = tfmot().sparsity.keras

    def wrap(layer):
        if type(layer).__name__ in PRUNED_LAYER_TYPES:
            return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    return keras.models.clone_model(model, clone_function=wrap)


def _val_accuracy(model, data: TrainingData, preprocessing: Preprocessing, batch_size: int) -> float | None:
    if not len(data.val):
        return None
    probs = predict_photos(model, data.val, preprocessing, batch_size)
    return float(np.mean(probs.argmax(1) == data.val.labels))


def pruning_schedule(target_sparsity: float, total_steps: int):
    """PolynomialDecay from 0 to `target_sparsity`, ending on the last mask update that fits in `total_steps`.

    The mask is recomputed every `frequency` steps (tfmot's default of 100 would never fire on a small dataset's
    few dozen steps), and the end step is a multiple of it so the final update applies the full target.
    """
    frequency = max(1, total_steps // MASK_UPDATES)
    end_step = frequency * (total_steps // frequency)
    return tfmot().sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=target_sparsity, begin_step=0, end_step=end_step, frequency=frequency
    )


def sparsity_report(model) -> dict:
    """Zeros per kernel-carrying layer type, in the Conv2D/Dense kernels tfmot prunes, and among all weights.

    Works on any tf_keras model: nested models are walked and tfmot wrappers looked through, so the same numbers
    come out before and after `strip_pruning`.
    """
    by_type: dict[str, list[int]] = {}
    for layer in leaf_layers(model):
        for kernel in _kernels(layer):
            counts = by_type.setdefault(type(layer).__name__, [0, 0, 0])
            counts[0] += 1
            counts[1] += kernel.size
            counts[2] += int(np.count_nonzero(kernel == 0))
    pruned = [by_type[t] for t in PRUNED_LAYER_TYPES if t in by_type]
    weights = model.get_weights()
    return {
        "by_layer_type": {t: {"layers": n, **_fraction(total, zeros)} for t, (n, total, zeros) in by_type.items()},
        "pruned_kernels": _fraction(sum(c[1] for c in pruned), sum(c[2] for c in pruned)),
        "all_weights": _fraction(sum(w.size for w in weights), sum(int(np.count_nonzero(w == 0)) for w in weights)),
    }


def gzipped_weights_size(model) -> int:
    """Bytes of all weights after gzip: what pruning saves in an app download, where files travel compressed."""
    raw = b"".join(np.ascontiguousarray(w).tobytes() for w in model.get_weights())
    return len(gzip.compress(raw, compresslevel=6, mtime=0))


def reestimate_batchnorm(model, images: np.ndarray, batch_size: int) -> None:
    """Replace every BatchNormalization's moving statistics by the mean of its batch statistics over `images`.

    Zeroing half of a convolution's weights shifts the mean and variance of what it outputs, so the statistics
    measured on the dense network no longer normalize the pruned one, and the error compounds through the
    backbone's 50-odd BN layers. The moving averages (momentum 0.999) cannot catch up within a short fine-tune,
    so the statistics are measured again on the final weights: pruned MobileNetV2 on flowers scored .20 with the
    lagging averages and .93 after.
    """
    _, keras = load_tensorflow()
    layers = [layer for layer in leaf_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer.momentum, layer.trainable) for layer in layers]
    for k, start in enumerate(range(0, len(images), batch_size)):
        for layer in layers:  # a frozen BN ignores training=True; momentum k/(k+1) keeps a running mean
            layer.trainable, layer.momentum = True, k / (k + 1)
        model(images[start : start + batch_size], training=True)
    for layer, (momentum, trainable) in zip(layers, saved):
        layer.momentum, layer.trainable = momentum, trainable


def _kernels(layer) -> list[np.ndarray]:
    return [getattr(layer, name).numpy() for name in KERNEL_ATTRIBUTES if getattr(layer, name, None) is not None]


def _fraction(total: int, zeros: int) -> dict:
    return {"weights": total, "zeros": zeros, "sparsity": round(zeros / total, 4) if total else 0.0}
