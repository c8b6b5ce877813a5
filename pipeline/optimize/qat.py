"""Quantization-aware training with tensorflow-model-optimization: an int8-ready copy of the float classifier.

Layers are annotated with `clone_model(clone_function=...)` (tfmot's `quantize_model` rejects MobileNetV3's
hard-swish layers); on V1/V2 that builds the same quantized layers as the whole-model call.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..config import QatConfig
from ..core.preprocessing import Preprocessing
from ..core.tf_runtime import load_tensorflow, seed_everything
from ..data.photos import TrainingData
from .keras_tools import (
    CALIBRATION_IMAGES,
    fine_tune,
    fit_settings,
    require_train_images,
    set_batchnorm_trainable,
    tfmot,
    trainable_copy,
)

log = logging.getLogger(__name__)
FLOAT_LAYERS_NOTE = (
    "layers left float have no trained int8 ranges: the TFLite converter needs a representative dataset to make "
    "the model full int8"
)


def qat_model(model, data: TrainingData, preprocessing: Preprocessing, config: QatConfig, log_dir: Path):
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
    require_train_images(data, "QAT")
    _, keras = load_tensorflow()
    quantization = tfmot().quantization.keras
    seed_everything(config.seed)
    work, quantized, float_layers = _quantize_aware(model)
    calibrated = calibrate_ranges(
        quantized,
        work,
        preprocessing.normalize(data.train.sample(CALIBRATION_IMAGES)),
        config.batch_size,
    )
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    log.info(
        f"QAT: {config.epochs} epochs ({steps_per_epoch} steps each) on {len(data.train)} images"
        + (f"; left float: {dict(float_layers)}" if float_layers else "")
    )
    callbacks = [keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, profile_batch=0)]
    start = time.perf_counter()
    history = fine_tune(quantized, data, preprocessing, config, "qat", callbacks)
    seconds = time.perf_counter() - start
    set_batchnorm_trainable(quantized, True)
    report = {
        "method": "tfmot quantize_annotate_layer on every layer the default 8-bit scheme supports, quantize_apply",
        **fit_settings(config, steps_per_epoch, seconds, history),
        "calibrated_ranges": calibrated,
        "quantized_layers": sum(isinstance(layer, quantization.QuantizeWrapperV2) for layer in quantized.layers),
        "float_layers": dict(float_layers),
        "needs_representative_dataset": bool(float_layers),
        "output_layer": quantized.layers[-1].name,
        "notes": [FLOAT_LAYERS_NOTE] if float_layers else [],
    }
    log.info(f"QAT: {seconds:.0f} s")
    return quantized, report


def qat_structure(model):
    """The untrained quantization-aware copy of `model`, layer for layer what `qat_model` returns: what a QAT
    model kept in the stage cache is loaded into."""
    quantized = _quantize_aware(model)[1]
    set_batchnorm_trainable(quantized, True)
    return quantized


def _quantize_aware(model):
    """(the trainable copy with BatchNorm frozen, its quantization-aware clone, the layer types left float)."""
    _, keras = load_tensorflow()
    quantization = tfmot().quantization.keras
    registry = quantization.default_8bit.Default8BitQuantizeScheme().get_quantize_registry()
    work = trainable_copy(model)
    set_batchnorm_trainable(work, False)

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
    return work, quantized, float_layers


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
