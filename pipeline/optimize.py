"""Model-level optimizations with tensorflow-model-optimization: magnitude pruning and quantization-aware training.

Each works on a copy of the trained float classifier (the float model is exported too and must stay as it was),
fine-tunes it on the training images and returns a new flat tf_keras model, input `image`, that the exporters
consume like the float one, plus a JSON-ready report for the manifest.

One route serves every backbone. tfmot's whole-model entry points reject MobileNetV3 (its hard-swish and
squeeze-excite ops are TFOpLambda/Multiply layers tfmot has no rules for), so both optimizations pick layers with
`clone_model(clone_function=...)` instead. On MobileNet V1/V2 that prunes the same weights and builds the same
quantized layers as `prune_low_magnitude(model)` / `quantize_model(model)` (checked layer by layer), so a second
code path would add nothing but a branch to test.
"""

from __future__ import annotations

import gzip
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgpipe.errors import ConfigError, DatasetError
from imgpipe.preprocessing import Preprocessing
from imgpipe.tf_runtime import load_tensorflow
from imgpipe.train import SplitData, fit_images

PRUNED_LAYER_TYPES = ("Conv2D", "Dense")  # what tfmot's magnitude pruning zeroes; its registry skips depthwise kernels
KERNEL_ATTRIBUTES = ("kernel", "depthwise_kernel", "pointwise_kernel")
CALIBRATION_IMAGES = 256  # QAT's starting ranges and pruning's BN statistics: a few batches give stable values
MASK_UPDATES = 16  # times the pruning mask is recomputed over the schedule: smooth, yet cheap on large datasets
DEPTHWISE_NOTE = (
    "tfmot does not prune DepthwiseConv2D kernels (its pruning registry lists no prunable weights for "
    "them), so they stay dense; MobileNets keep most weights in Conv2D/Dense kernels"
)
FLOAT_LAYERS_NOTE = (
    "layers left float have no trained int8 ranges: the TFLite converter needs a representative dataset to make "
    "the model full int8"
)


@dataclass(frozen=True)
class PruneConfig:
    target_sparsity: float = 0.5  # fraction of zeros in every Conv2D and Dense kernel at the end
    epochs: int = 4  # sparsity ramps up over all of them; one epoch to 50% cost .725 -> .485 accuracy (TOOLCHAIN)
    learning_rate: float = 1e-4  # flowers, V2-0.35, 4 epochs: .93 at 1e-4, .89 at 3e-4, collapse at 1e-3 (float .92)
    batch_size: int = 32
    augment: bool = True
    seed: int = 0

    def validate(self) -> None:
        if not 0.0 < self.target_sparsity < 1.0:
            raise ConfigError(
                f"pruning target sparsity {self.target_sparsity} must be between 0 and 1 (exclusive), e.g. 0.5"
            )
        _validate_fit_settings("pruning", self.epochs, self.learning_rate, self.batch_size)


@dataclass(frozen=True)
class QatConfig:
    epochs: int = 2
    learning_rate: float = 1e-5  # flowers, V2-0.35: int8 .90 at 1e-5 and 3e-5, .87 at 1e-4 (float .92)
    batch_size: int = 32
    augment: bool = True
    seed: int = 0

    def validate(self) -> None:
        _validate_fit_settings("QAT", self.epochs, self.learning_rate, self.batch_size)


def prune_model(
    model, data: SplitData, preprocessing: Preprocessing, config: PruneConfig, log_dir: Path, progress=print
):
    """(pruned copy of `model`, report): magnitude pruning of Conv2D/Dense kernels while fine-tuning.

    Sparsity follows tfmot's PolynomialDecay from 0 to the target over the whole fine-tune (cubic: most zeros come
    early, while the network still has steps left to recover), then `strip_pruning` leaves plain layers with zeros
    in their kernels. The zeros only pay off in compressed (zipped) size or with sparse-aware runtimes.

    BatchNormalization trains in batch-statistics mode here, unlike in QAT and classic fine-tuning: zeroing weights
    shifts every convolution's output statistics, and BN must follow them. Frozen BN normalized the pruned network
    with the dense network's statistics: MobileNetV2-0.35 on flowers (float .92) ended at .76-.85 even after
    re-estimating the statistics, against .89-.93 when BN trained and the statistics were re-estimated after.
    """
    config.validate()
    _require_train_images(data, "pruning")
    _, keras = load_tensorflow()
    sparsity = _tfmot().sparsity.keras
    keras.utils.set_random_seed(config.seed)
    steps_per_epoch = math.ceil(len(data.train_images) / config.batch_size)
    schedule = pruning_schedule(config.target_sparsity, config.epochs * steps_per_epoch)
    work = _copy(model)

    def wrap(layer):
        if type(layer).__name__ in PRUNED_LAYER_TYPES:
            return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    wrapped = keras.models.clone_model(work, clone_function=wrap)
    progress(
        f"pruning: {config.target_sparsity:.0%} of Conv2D/Dense weights over {config.epochs} epochs "
        f"({steps_per_epoch} steps each) on {len(data.train_images)} images"
    )
    callbacks = [
        sparsity.UpdatePruningStep(),
        sparsity.PruningSummaries(log_dir=str(log_dir), write_graph=False, profile_batch=0),
    ]
    start = time.perf_counter()
    history = _fine_tune(wrapped, data, preprocessing, config, callbacks)
    seconds = time.perf_counter() - start
    pruned = sparsity.strip_pruning(wrapped)
    statistics_images = _spread(data.train_images)
    reestimate_batchnorm(pruned, preprocessing.normalize(statistics_images), config.batch_size)
    report = {
        "method": "tfmot prune_low_magnitude on Conv2D/Dense kernels, PolynomialDecay, then strip_pruning",
        "target_sparsity": config.target_sparsity,
        "schedule": schedule.get_config()["config"],
        **_fit_settings(config, steps_per_epoch, seconds, history),
        "batchnorm": f"trained on batch statistics, re-estimated on {len(statistics_images)} training images",
        "sparsity": sparsity_report(pruned),
        "gzip_weights_bytes": {"float": gzipped_weights_size(model), "pruned": gzipped_weights_size(pruned)},
        "notes": [DEPTHWISE_NOTE],
    }
    progress(
        f"pruning: {report['sparsity']['pruned_kernels']['sparsity']:.1%} zeros in Conv2D/Dense kernels, "
        f"{report['sparsity']['all_weights']['sparsity']:.1%} of all weights, {seconds:.0f} s"
    )
    return pruned, report


def pruning_schedule(target_sparsity: float, total_steps: int):
    """PolynomialDecay from 0 to `target_sparsity`, ending on the last mask update that fits in `total_steps`.

    The mask is recomputed every `frequency` steps (tfmot's default of 100 would never fire on a small dataset's
    few dozen steps), and the end step is a multiple of it so the final update applies the full target.
    """
    frequency = max(1, total_steps // MASK_UPDATES)
    end_step = frequency * (total_steps // frequency)
    return _tfmot().sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=target_sparsity, begin_step=0, end_step=end_step, frequency=frequency
    )


def qat_model(model, data: SplitData, preprocessing: Preprocessing, config: QatConfig, log_dir: Path, progress=print):
    """(quantization-aware copy of `model`, report), fine-tuned with fake-quantized weights and activations.

    Every layer tfmot's default 8-bit scheme handles is annotated (on V1/V2 that is every layer, as
    `quantize_model` would do); BatchNormalization is annotated too because the scheme folds it into the
    preceding convolution. What is left (MobileNetV3's hard-swish TFOpLambda and squeeze-excite Multiply layers)
    stays float in the Keras graph and gets its int8 ranges from the TFLite converter's representative dataset.
    The model's layers are tfmot wrappers: the output layer is `quant_probabilities`, wrapping `probabilities`.

    BatchNormalization stays frozen: it then runs in inference mode with the trained moving statistics, which is
    what the converter folds into the int8 convolutions, so the ranges being trained are the deployed ones.
    Trainable, BN would normalize with each small batch's statistics while its moving averages (momentum 0.999)
    barely move in a few epochs, and the ranges and weights would adapt to numbers the exported model never sees.
    """
    config.validate()
    _require_train_images(data, "QAT")
    _, keras = load_tensorflow()
    quantization = _tfmot().quantization.keras
    keras.utils.set_random_seed(config.seed)
    registry = quantization.default_8bit.Default8BitQuantizeScheme().get_quantize_registry()
    work = _copy(model)
    _set_batchnorm_trainable(work, False)

    def handled(layer) -> bool:
        return registry.supports(layer) or isinstance(layer, keras.layers.BatchNormalization)

    def annotate(layer):
        return quantization.quantize_annotate_layer(layer) if handled(layer) else layer

    float_layers = Counter(
        type(layer).__name__
        for layer in work.layers
        if not (handled(layer) or isinstance(layer, keras.layers.InputLayer))
    )
    with quantization.quantize_scope():
        quantized = quantization.quantize_apply(keras.models.clone_model(work, clone_function=annotate))
    calibrated = calibrate_ranges(
        quantized, work, preprocessing.normalize(_spread(data.train_images)), config.batch_size
    )
    steps_per_epoch = math.ceil(len(data.train_images) / config.batch_size)
    progress(
        f"QAT: {config.epochs} epochs ({steps_per_epoch} steps each) on {len(data.train_images)} images"
        + (f"; left float: {dict(float_layers)}" if float_layers else "")
    )
    callbacks = [keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, profile_batch=0)]
    start = time.perf_counter()
    history = _fine_tune(quantized, data, preprocessing, config, callbacks)
    seconds = time.perf_counter() - start
    _set_batchnorm_trainable(quantized, True)
    report = {
        "method": "tfmot quantize_annotate_layer on every layer the default 8-bit scheme supports, quantize_apply",
        **_fit_settings(config, steps_per_epoch, seconds, history),
        "calibrated_ranges": calibrated,
        "quantized_layers": sum(isinstance(layer, quantization.QuantizeWrapperV2) for layer in quantized.layers),
        "float_layers": dict(float_layers),
        "needs_representative_dataset": bool(float_layers),
        "output_layer": quantized.layers[-1].name,
        "notes": [FLOAT_LAYERS_NOTE] if float_layers else [],
    }
    progress(f"QAT: {seconds:.0f} s")
    return quantized, report


def calibrate_ranges(quantized, reference, images: np.ndarray, batch_size: int) -> int:
    """Start every activation range of `quantized` where fine-tuning would take it; returns how many were set.

    tfmot starts each range at [-6, 6] and moves it by an exponential average with decay 0.999, about 1000 steps
    to forget the start (tensorflow/model-optimization#368). A small dataset's fine-tune has a few dozen steps, so
    ranges stay near +-6: wider activations of a pretrained backbone (and confident logits) are clipped, and
    MobileNetV2 on flowers fell from .92 to .48 accuracy after 2 QAT epochs. The ranges are set instead to the
    mean over batches of each tensor's min and max in the float `reference` model (what the moving average
    settles at), so fine-tuning starts from the accuracy of post-training quantization.
    """
    _, keras = load_tensorflow()
    targets = _range_targets(quantized, reference)
    probe = keras.Model(reference.input, [tensor for _, tensor in targets])
    ranges = []
    for start in range(0, len(images), batch_size):
        outputs = probe.predict_on_batch(images[start : start + batch_size])
        ranges.append([(min(float(o.min()), 0.0), max(float(o.max()), 0.0)) for o in outputs])
    for (variables, _), per_batch in zip(targets, np.mean(ranges, axis=0)):
        variables[0].assign(per_batch[0])
        variables[1].assign(per_batch[1])
    return len(targets)


def _range_targets(quantized, reference) -> list:
    """((min_var, max_var), float tensor whose range they hold) for each activation range of `quantized`.

    Weight ranges are left out: tfmot recomputes them from the weights at every training step.
    """
    targets = []
    for layer in quantized.layers:
        variables = {w.name.split("/")[-1].split(":")[0]: w for w in layer.non_trainable_weights}
        for kind in ("output", "post_activation", "pre_activation", layer.name):  # the last: the input's QuantizeLayer
            if f"{kind}_min" in variables:
                targets.append(
                    ((variables[f"{kind}_min"], variables[f"{kind}_max"]), _range_source(kind, layer, reference))
                )
    return targets


def _range_source(kind: str, layer, reference):
    if kind == layer.name:
        return reference.input
    source = reference.get_layer(layer.layer.name)
    return _pre_activation(source) if kind == "pre_activation" else source.output


def _pre_activation(layer):
    """`layer`'s output before its activation (the softmax head's logits), from a linear copy sharing its input."""
    config = layer.get_config()
    if config.get("activation", "linear") == "linear":
        return layer.output
    linear = type(layer).from_config({**config, "activation": "linear", "name": f"{layer.name}_linear"})
    output = linear(layer.input)
    linear.set_weights(layer.get_weights())
    return output


def sparsity_report(model) -> dict:
    """Zeros per kernel-carrying layer type, in the Conv2D/Dense kernels tfmot prunes, and among all weights.

    Works on any tf_keras model: nested models are walked and tfmot wrappers looked through, so the same numbers
    come out before and after `strip_pruning`.
    """
    by_type: dict[str, list[int]] = {}
    for layer in _leaf_layers(model):
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


def _spread(images: np.ndarray) -> np.ndarray:
    """Up to CALIBRATION_IMAGES images spread evenly over the set: splits often come sorted by class."""
    picks = np.unique(np.linspace(0, len(images) - 1, min(CALIBRATION_IMAGES, len(images))).round().astype(int))
    return images[picks]


def _fine_tune(model, data: SplitData, preprocessing: Preprocessing, config, callbacks) -> dict:
    """Fit on the training images; validation images, when there are any, only for the logged metrics.

    No early stopping: restoring an earlier epoch's weights would undo pruning progress, and QAT runs too few epochs
    for it to matter.
    """
    return fit_images(
        model,
        data,
        preprocessing,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        augment=config.augment,
        seed=config.seed,
        epochs=config.epochs,
        callbacks=callbacks,
    )


def _tfmot():
    """tensorflow_model_optimization, imported after TensorFlow is set up for tf_keras (it imports TF itself)."""
    load_tensorflow()
    import tensorflow_model_optimization

    return tensorflow_model_optimization


def _copy(model):
    """A copy with its own weights (the float model is exported as well and must not change), every layer trainable
    whatever the training phases left behind."""
    _, keras = load_tensorflow()
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.trainable = True
    return copy


def reestimate_batchnorm(model, images: np.ndarray, batch_size: int) -> None:
    """Replace every BatchNormalization's moving statistics by the mean of its batch statistics over `images`.

    Zeroing half of a convolution's weights shifts the mean and variance of what it outputs, so the statistics
    measured on the dense network no longer normalize the pruned one, and the error compounds through the
    backbone's 50-odd BN layers. The moving averages (momentum 0.999) cannot catch up within a short fine-tune,
    so the statistics are measured again on the final weights: pruned MobileNetV2 on flowers scored .20 with the
    lagging averages and .93 after.
    """
    _, keras = load_tensorflow()
    layers = [layer for layer in _leaf_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer.momentum, layer.trainable) for layer in layers]
    for k, start in enumerate(range(0, len(images), batch_size)):
        for layer in layers:  # a frozen BN ignores training=True; momentum k/(k+1) keeps a running mean
            layer.trainable, layer.momentum = True, k / (k + 1)
        model(images[start : start + batch_size], training=True)
    for layer, (momentum, trainable) in zip(layers, saved):
        layer.momentum, layer.trainable = momentum, trainable


def _set_batchnorm_trainable(model, trainable: bool) -> None:
    _, keras = load_tensorflow()
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = trainable


def _leaf_layers(model):
    """Every non-model layer, looking inside nested models and through wrappers (tfmot's prune/quantize ones)."""
    _, keras = load_tensorflow()
    for layer in model.layers:
        while isinstance(layer, keras.layers.Wrapper):
            layer = layer.layer
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _kernels(layer) -> list[np.ndarray]:
    return [getattr(layer, name).numpy() for name in KERNEL_ATTRIBUTES if getattr(layer, name, None) is not None]


def _fraction(total: int, zeros: int) -> dict:
    return {"weights": total, "zeros": zeros, "sparsity": round(zeros / total, 4) if total else 0.0}


def _fit_settings(config, steps_per_epoch: int, seconds: float, history: dict) -> dict:
    return {
        "epochs": config.epochs,
        "steps_per_epoch": steps_per_epoch,
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "augment": config.augment,
        "seconds": round(seconds, 1),
        "history": history,
    }


def _validate_fit_settings(what: str, epochs: int, learning_rate: float, batch_size: int) -> None:
    if epochs < 1:
        raise ConfigError(f"{what} epochs must be at least 1, got {epochs}")
    if learning_rate <= 0:
        raise ConfigError(f"{what} learning rate must be positive, got {learning_rate}")
    if batch_size < 1:
        raise ConfigError(f"{what} batch size must be at least 1, got {batch_size}")


def _require_train_images(data: SplitData, what: str) -> None:
    if len(data.train_images) == 0:
        raise DatasetError(f"{what} fine-tunes on the training split, which is empty; add images or change --split")
