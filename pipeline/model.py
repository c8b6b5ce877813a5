"""MobileNet backbones and the flat classifier built on them.

The classifier is one flat functional graph (input -> backbone layers -> pooling -> dropout -> dense softmax),
never a model nested in a model, because tensorflow-model-optimization cannot wrap nested models.
Backbones are built without their own input rescaling; normalization is the `Preprocessing` contract instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from imgpipe.errors import ConfigError, WeightsError, first_line
from imgpipe.tf_runtime import load_tensorflow

ARCHITECTURES = ("mobilenet_v2", "mobilenet_v1", "mobilenet_v3_small", "mobilenet_v3_large")
INPUT_NAME = "image"
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 96, 224


@dataclass(frozen=True)
class BackboneSpec:
    arch: str = "mobilenet_v2"
    alpha: float = 0.35
    image_size: int = 224
    weights: str = "imagenet"  # "imagenet" | "none" | path to a no-top .h5

    def validate(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"unknown --arch '{self.arch}'; valid: {', '.join(ARCHITECTURES)}")
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"--image-size {self.image_size} is outside {MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE}")
        if self.weights not in ("imagenet", "none") and not Path(self.weights).is_file():
            raise WeightsError(f"{self.weights}: weights file not found; pass an existing .h5, 'imagenet' or 'none'")

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"

    def weights_fingerprint(self) -> str:
        """What identifies the backbone's weights in cache keys: the file's hash, or the Keras name."""
        if self.weights in ("imagenet", "none"):
            return self.weights
        h = hashlib.sha256(Path(self.weights).read_bytes()).hexdigest()
        return h[:16]


def build_backbone(spec: BackboneSpec, inputs):
    """Backbone layers applied to `inputs` (flat), returning the pooled feature tensor."""
    _, keras = load_tensorflow()
    apps = keras.applications
    weights = None if spec.weights == "none" else spec.weights
    common = dict(input_tensor=inputs, include_top=False, weights=weights, pooling="avg")
    try:
        if spec.arch == "mobilenet_v2":
            base = apps.MobileNetV2(alpha=spec.alpha, **common)
        elif spec.arch == "mobilenet_v1":
            base = apps.MobileNet(alpha=spec.alpha, **common)
        elif spec.arch == "mobilenet_v3_small":
            base = apps.MobileNetV3Small(alpha=spec.alpha, include_preprocessing=False, **common)
        else:
            base = apps.MobileNetV3Large(alpha=spec.alpha, include_preprocessing=False, **common)
    except ValueError as e:
        if spec.weights not in ("imagenet", "none"):
            raise WeightsError(
                f"{spec.weights}: does not fit {spec.arch} alpha {spec.alpha} ({e}); "
                "pass the no-top .h5 made for this architecture and alpha"
            ) from None
        raise ConfigError(f"{spec.arch} alpha {spec.alpha} at {spec.image_size}px: {e}") from None
    except Exception as e:  # Keras' download raises a plain Exception("URL fetch failure ...")
        if spec.weights == "imagenet" and ("fetch" in str(e).lower() or "url" in str(e).lower()):
            raise WeightsError(
                f"could not download ImageNet weights for {spec.arch} alpha {spec.alpha} ({first_line(e)}); "
                "offline, pass --weights PATH to a Keras no-top .h5 file (or --weights none)"
            ) from None
        raise
    return base.output


def build_classifier(spec: BackboneSpec, num_classes: int, dropout: float = 0.2):
    """The flat float classifier: input named `image`, softmax output."""
    spec.validate()
    _, keras = load_tensorflow()
    inputs = keras.Input(shape=(spec.image_size, spec.image_size, 3), name=INPUT_NAME)
    features = build_backbone(spec, inputs)
    x = keras.layers.Dropout(dropout, name="head_dropout")(features)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=f"{spec.arch}_classifier")
    return model


def feature_extractor(model):
    """The backbone part of a classifier built by `build_classifier`: image -> pooled features."""
    _, keras = load_tensorflow()
    return keras.Model(model.input, model.get_layer("head_dropout").input)
