"""MobileNet backbones and the flat classifier built on them.

The classifier is one flat functional graph (input -> backbone layers -> pooling -> dropout -> dense softmax),
never a model nested in a model, because tensorflow-model-optimization cannot wrap nested models.
Backbones are built without their own input rescaling; normalization is the `Preprocessing` contract instead.
"""

from __future__ import annotations

from ..config import BackboneSpec
from ..core.errors import ConfigError, WeightsError, first_line
from ..core.preprocessing import INPUT_NAME
from ..core.tf_runtime import load_tensorflow

HEAD_INPUT = "head_dropout"  # the layer whose input is the pooled backbone feature vector
OUTPUT_NAME = "probabilities"


def build_backbone(spec: BackboneSpec, inputs):
    """Backbone layers applied to `inputs` (flat), returning the pooled feature tensor."""
    _, keras = load_tensorflow()
    try:
        base = backbone_model(spec, weights=None if spec.weights == "none" else spec.weights, input_tensor=inputs)
    except ValueError as e:  # Keras' own refusals: an alpha or size its ImageNet files do not cover
        raise ConfigError(f"{spec.arch} alpha {spec.alpha:g} at {spec.image_size}px: {first_line(e)}") from None
    except Exception as e:  # Keras' download raises a plain Exception("URL fetch failure ...")
        if spec.weights == "imagenet" and ("fetch" in str(e).lower() or "url" in str(e).lower()):
            raise WeightsError(
                f"could not download ImageNet weights for {spec.arch} alpha {spec.alpha:g} ({first_line(e)}); "
                "offline, pass --weights PATH to a Keras no-top .h5 file (or --weights none)"
            ) from None
        raise
    return base.output


def backbone_model(spec: BackboneSpec, weights, input_tensor=None, input_shape=None):
    """The Keras application for `spec`, no top, average-pooled; `weights` None, "imagenet" or a file."""
    _, keras = load_tensorflow()
    apps = keras.applications
    common = dict(input_tensor=input_tensor, input_shape=input_shape, include_top=False, weights=weights, pooling="avg")
    if spec.arch == "mobilenet_v2":
        return apps.MobileNetV2(alpha=spec.alpha, **common)
    if spec.arch == "mobilenet_v1":
        return apps.MobileNet(alpha=spec.alpha, **common)
    v3 = apps.MobileNetV3Small if spec.arch == "mobilenet_v3_small" else apps.MobileNetV3Large
    return v3(alpha=spec.alpha, include_preprocessing=False, **common)


def build_classifier(spec: BackboneSpec, num_classes: int, dropout: float = 0.2):
    """The flat float classifier: input named `image`, softmax output named `probabilities`."""
    if spec.alpha is None:
        raise ValueError("resolve the backbone (weights.resolve_backbone) before building it")
    _, keras = load_tensorflow()
    inputs = keras.Input(shape=(spec.image_size, spec.image_size, 3), name=INPUT_NAME)
    features = build_backbone(spec, inputs)
    x = keras.layers.Dropout(dropout, name=HEAD_INPUT)(features)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=f"{spec.arch}_classifier")


def feature_extractor(model):
    """The backbone part of a classifier built by `build_classifier`: image -> pooled features."""
    _, keras = load_tensorflow()
    return keras.Model(model.input, model.get_layer(HEAD_INPUT).input)
