"""Every setting a build takes: plain dataclasses whose fields declare their default, help text and allowed range.

The command line (`imgpipe build --epochs 20`), the `--config` TOML file (`[train] epochs = 20`) and the Python API
(`imgpipe.build(epochs=20)`) all fill these classes, and `BuildConfig.validate()` checks every value against its
declaration before any work starts, so a bad number is one line naming the option and its range, never a Keras
traceback minutes later. This module imports nothing but the error types: every stage may import it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .core.errors import ConfigError

ARCHITECTURES = ("mobilenet_v2", "mobilenet_v1", "mobilenet_v3_small", "mobilenet_v3_large")
# The width multipliers Keras builds and publishes ImageNet weights for; other values fail deep inside Keras.
ALPHAS = {
    "mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    "mobilenet_v1": (0.25, 0.5, 0.75, 1.0),
    "mobilenet_v3_small": (0.75, 1.0),
    "mobilenet_v3_large": (0.75, 1.0),
}
DEFAULT_ALPHA = 1.0
OPTIMIZATIONS = ("prune", "qat")
DISTRIBUTE = ("none", "mirrored", "multi-worker")
HEAD_SOLVERS = ("lbfgs", "adam")


@dataclass(frozen=True)
class Range:
    """Inclusive bounds unless marked open; None is unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = None if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        return " and ".join(part for part in (low, high) if part)


POSITIVE = Range(0, None, low_open=True)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1)


def setting(default: Any, help: str, *, option: str | None = None, range: Range | None = None, choices=None):
    """A dataclass field with what the CLI, the config file and validation need to know about it.

    `option` is the flat name the command line (`--<option>`) and `imgpipe.build(<option>=...)` use; a field
    without one is set from the config file only. A callable default is a factory (a fresh list, a path).
    """
    metadata = {"help": help, "option": option, "range": range, "choices": choices}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class BackboneSpec:
    arch: str = setting("mobilenet_v2", "backbone architecture", option="arch", choices=ARCHITECTURES)
    alpha: float | None = setting(
        None,
        f"width multiplier (default: the width the --weights file was made for, else {DEFAULT_ALPHA:.1f})",
        option="alpha",
        range=POSITIVE,
    )
    image_size: int = setting(224, "input size in pixels (square)", option="image_size", range=Range(96, 224))
    weights: str = setting(
        "imagenet",
        "imagenet (Keras download and cache), PATH to a Keras no-top .h5, or none (random initialisation)",
        option="weights",
    )

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"

    @property
    def weights_file(self) -> Path | None:
        return None if self.weights in ("imagenet", "none") else Path(self.weights)

    def check(self) -> None:
        """Choices that depend on each other: the width multiplier must exist for the architecture."""
        if self.alpha is not None and not any(math.isclose(self.alpha, a) for a in ALPHAS[self.arch]):
            raise ConfigError(
                f"--alpha {self.alpha:g}: {self.arch} has no width multiplier {self.alpha:g}; "
                f"alpha must be one of {', '.join(f'{a:g}' for a in ALPHAS[self.arch])}"
            )
        if self.weights_file is not None and not self.weights_file.is_file():
            raise ConfigError(
                f"{self.weights}: weights file not found; pass an existing Keras no-top .h5, 'imagenet' or 'none'"
            )


@dataclass(frozen=True)
class TrainConfig:
    head: str = setting(
        "lbfgs",
        "how the head is trained on cached features: lbfgs (L2-regularized logistic regression solved exactly, its "
        "strength chosen on val loss; no epochs) or adam (mini-batch epochs: --epochs, --learning-rate, "
        "--batch-size, --dropout, --patience)",
        option="head",
        choices=HEAD_SOLVERS,
    )
    epochs: int = setting(
        40,
        "epochs of the --head adam head, early-stopped on val loss (all-layer epochs with --weights none)",
        option="epochs",
        range=AT_LEAST_ONE,
    )
    batch_size: int = setting(32, "training batch size", option="batch_size", range=Range(1, 4096))
    learning_rate: float = setting(
        1e-3,
        "learning rate of the --head adam head (of every layer with --weights none)",
        option="learning_rate",
        range=Range(0, 1, low_open=True),
    )
    patience: int = setting(6, "epochs without val-loss improvement before early stopping", range=AT_LEAST_ONE)
    decay_epochs: int = setting(
        0,
        "last epochs on images (fine-tuning, or training from random initialisation) over which the learning rate "
        "falls (cosine) to 5%% of its starting rate; 0: constant",
        option="decay_epochs",
        range=Range(0),
    )
    dropout: float = setting(
        0.2,
        "dropout before the classification layer (--head adam, fine-tuning, --weights none)",
        range=Range(0, 1, high_open=True),
    )
    fine_tune_epochs: int = setting(
        0,
        "epochs fine-tuning the top layers on augmented images after the head",
        option="fine_tune_epochs",
        range=Range(0),
    )
    fine_tune_layers: int = setting(
        30, "how many top layers fine-tuning trains", option="fine_tune_layers", range=AT_LEAST_ONE
    )
    fine_tune_learning_rate: float = setting(1e-4, "fine-tuning learning rate", range=Range(0, 1, low_open=True))
    augment: bool = setting(True, "flip/rotation/zoom/brightness augmentation of training images", option="augment")
    feature_views: int = setting(
        0,
        "augmented views (crop, mirror, colour) of each training photo whose features are cached and added to the "
        "head's training set (0: the photos alone)",
        option="feature_views",
        range=Range(0, 16),
    )
    seed: int = setting(
        0, "random seed for splits of work, shuffles and initialisation", option="seed", range=Range(0, 2**31 - 1)
    )
    distribute: str = setting(
        "none",
        "tf.distribute strategy for features and training: none (one device, the GPU when present), mirrored "
        "(every local GPU), multi-worker (the workers in TF_CONFIG)",
        option="distribute",
        choices=DISTRIBUTE,
    )


@dataclass(frozen=True)
class SplitFractions:
    train: float = setting(0.8, "fraction of each class's images for training", range=FRACTION)
    val: float = setting(0.1, "fraction for validation (early stopping, calibration)", range=FRACTION)
    test: float = setting(0.1, "fraction held out for every reported metric", range=FRACTION)

    def check(self) -> None:
        if self.train <= 0 or abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ConfigError(
                f"--split {self.train:g} {self.val:g} {self.test:g}: fractions must be >= 0, train > 0, and add up "
                "to 1 (e.g. --split 0.8 0.1 0.1)"
            )


@dataclass(frozen=True)
class ExportOptions:
    """Format options; which format reads each one, and its allowed values, are in the format table."""

    io_type: str = setting("float", "TFLite int8 input/output tensor type", option="io_type")
    palette_bits: int = setting(6, "Core ML palettization bits", option="palette_bits")
    coreml_compute: str = setting("fp16", "how verification runs an fp16 Core ML program", option="coreml_compute")
    coreml_sparsity: float = setting(0.5, "Core ML magnitude weight pruning target", range=Range(0, 1, True, True))
    calibration_images: int = setting(
        100, "train-split images that calibrate full-integer quantization", range=Range(1, 10000)
    )


@dataclass(frozen=True)
class ModelMetadata:
    """Human-facing facts embedded in every artifact (TFLite metadata, Core ML description, ONNX props)."""

    name: str = setting("ImageClassifier", "model name inside the artifacts and the Core ML file name", option="name")
    description: str = setting("MobileNet image classifier trained with imgpipe", "model description")
    version: str = setting("1", "model version string")
    author: str = setting("imgpipe", "author")
    license: str = setting("Apache-2.0", "license of the model")


@dataclass(frozen=True)
class LatencyConfig:
    warmup: int = setting(10, "untimed runs per artifact before measuring", range=Range(0, 1000))
    runs: int = setting(100, "timed single-image runs per artifact", range=Range(1, 100000))
    block: int = setting(10, "consecutive runs of one artifact before the next one's turn", range=Range(1, 100000))
    threads: int = setting(
        1, "runtime threads while timing (1: phones run one, and shared CPUs stay fair)", range=Range(1, 256)
    )


@dataclass(frozen=True)
class PruneConfig:
    target_sparsity: float = setting(
        0.5, "fraction of zeros in every Conv2D and Dense kernel", option="sparsity", range=Range(0, 1, True, True)
    )
    epochs: int | None = setting(
        None,
        "pruning fine-tune epochs; the sparsity ramps over all of them (default: 4, more on a small training split "
        "so that there are at least 100 steps)",
        option="prune_epochs",
        range=AT_LEAST_ONE,
    )
    learning_rate: float = setting(1e-4, "pruning fine-tune learning rate", range=Range(0, 1, low_open=True))
    batch_size: int = setting(32, "pruning batch size", range=Range(1, 4096))
    augment: bool = setting(True, "augment images while pruning")
    seed: int = setting(0, "pruning seed", range=Range(0, 2**31 - 1))


@dataclass(frozen=True)
class QatConfig:
    epochs: int = setting(2, "quantization-aware fine-tune epochs", option="qat_epochs", range=AT_LEAST_ONE)
    learning_rate: float = setting(1e-5, "QAT learning rate", range=Range(0, 1, low_open=True))
    batch_size: int = setting(32, "QAT batch size", range=Range(1, 4096))
    augment: bool = setting(True, "augment images during QAT")
    seed: int = setting(0, "QAT seed", range=Range(0, 2**31 - 1))


@dataclass(frozen=True)
class GateLimits:
    """Budgets an artifact must meet to be published (None: no limit)."""

    max_accuracy_drop: float | None = setting(
        0.05,
        "largest accuracy loss vs the float Keras model, 0.01 = 1 point",
        option="max_accuracy_drop",
        range=Range(0, 1),
    )
    min_accuracy: float | None = setting(None, "lowest test accuracy, e.g. 0.9", option="min_accuracy", range=FRACTION)
    max_bytes: int | None = setting(None, "largest artifact size in bytes", option="max_bytes", range=AT_LEAST_ONE)
    max_latency_ms: float | None = setting(
        None, "largest single-image p50 latency on the build machine's CPU", option="max_latency_ms", range=POSITIVE
    )


@dataclass
class GatePolicy:
    """Limits from least to most specific: defaults, [gates], [gates.<format>], [gates."<format>:<variant>"]
    (and "<format>:<source>-<variant>") in the config file, then command-line flags for every artifact."""

    default: GateLimits = field(default_factory=GateLimits)
    overrides: dict[str, dict] = field(default_factory=dict)
    command_line: dict = field(default_factory=dict)

    def limits_for(self, fmt: str, variant: str, source: str = "float") -> GateLimits:
        limits = self.default
        keys = [fmt, f"{fmt}:{variant}"] + ([] if source == "float" else [f"{fmt}:{source}-{variant}"])
        for key in keys:
            limits = replace(limits, **self.overrides.get(key, {}))
        return replace(limits, **self.command_line)

    def check(self) -> None:
        for where, values in [
            ("[gates]", asdict(self.default)),
            *self.overrides.items(),
            ("command line", self.command_line),
        ]:
            check_values(GateLimits, values, where)


def default_cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imgpipe"


SECTIONS = ("backbone", "train", "split", "export", "metadata", "latency", "prune", "qat")


@dataclass
class BuildConfig:
    out: Path = setting(lambda: Path("imgpipe-build"), "build folder (the bundle is OUT/bundle)", option="out")
    dataset: Path | None = setting(
        None,
        "folder with one sub-folder of images per class (default: the embedded generated dataset)",
        option="dataset",
    )
    groups: Path | None = setting(
        None,
        "CSV of path,group: each group of photos (a photographer, a patient, a device) stays in one split",
        option="groups",
    )
    targets: list[str] = setting(list, "formats to export, each with its default variant", option="targets")
    variants: dict[str, list[str]] = setting(dict, "variants per format, e.g. tflite:fp32,int8", option="variants")
    optimize: list[str] = setting(
        list, "model-level optimizations whose models are exported too", option="optimize", choices=OPTIMIZATIONS
    )
    cache_dir: Path = setting(
        default_cache_dir,
        "cache of backbone features and the embedded dataset (default: ~/.cache/imgpipe)",
        option="cache_dir",
    )
    allow_failures: bool = setting(
        False, "exit 0 even when an artifact fails a gate (it is still left out)", option="allow_failures"
    )
    wait: bool = setting(
        False, "when another build is writing to OUT, wait for it to finish instead of stopping", option="wait"
    )
    history: Path | None = setting(None, "build history database (default: CACHE_DIR/history.sqlite)", option="history")
    record_history: bool = setting(True, "record the build in the history database", option="record_history")
    mlflow_uri: str | None = setting(
        None,
        "also log the build to this MLflow tracking URI, e.g. http://mlflow:5000 (needs pip install 'imgpipe[mlflow]')",
        option="mlflow_uri",
    )
    mlflow_experiment: str = setting("imgpipe", "MLflow experiment the build's run goes to", option="mlflow_experiment")
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    split: SplitFractions = field(default_factory=SplitFractions)
    export: ExportOptions = field(default_factory=ExportOptions)
    metadata: ModelMetadata = field(default_factory=ModelMetadata)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    qat: QatConfig = field(default_factory=QatConfig)
    gates: GatePolicy = field(default_factory=GatePolicy)

    def validate(self) -> None:
        """Every value against its declaration, then the checks that involve several values."""
        for name in SECTIONS:
            section = getattr(self, name)
            check_values(type(section), {f.name: getattr(section, f.name) for f in fields(section)}, f"[{name}]")
        for opt in self.optimize:
            if opt not in OPTIMIZATIONS:
                raise ConfigError(f"unknown optimization '{opt}'; valid: {', '.join(OPTIMIZATIONS)}")
        self.backbone.check()
        self.split.check()
        self.gates.check()
        if self.mlflow_uri:
            import importlib.util

            if importlib.util.find_spec("mlflow") is None:
                raise ConfigError(
                    f"--mlflow-uri {self.mlflow_uri}: MLflow is not installed; pip install 'imgpipe[mlflow]' "
                    "(or leave out --mlflow-uri)"
                )

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


EMBEDDED_BACKBONE = BackboneSpec(arch="mobilenet_v3_small", alpha=0.75, image_size=96, weights="none")
EMBEDDED_TRAINING = TrainConfig(epochs=16, batch_size=16, learning_rate=3e-3, patience=8, decay_epochs=4, augment=True)

_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def check_values(cls, values: dict, where: str) -> None:
    """Types, ranges and choices of `values` for the dataclass `cls`; unknown names are errors too."""
    declared = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(declared))}")
    for name, value in values.items():
        f = declared[name]
        label = _label(f, where)
        kinds = [k.strip() for k in str(f.type).split("|")]
        if value is None:
            if "None" not in kinds:
                raise ConfigError(f"{label} needs a value")
            continue
        allowed = tuple(t for k in kinds for t in _TYPES.get(k, (object,)))
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ConfigError(f"{label} = {value!r}: expected {' or '.join(k for k in kinds if k != 'None')}")
        rng, choices = f.metadata.get("range"), f.metadata.get("choices")
        if rng is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and rng.contains(value)):
            raise ConfigError(f"{label} = {value!r}: must be {rng.describe()}")
        if choices is not None and value not in choices:
            raise ConfigError(f"{label} = {value!r}: must be one of {', '.join(map(str, choices))}")


def _label(f, where: str) -> str:
    """Both names a user may have used: the flag and the config-file key."""
    option = f.metadata.get("option")
    return f"--{option.replace('_', '-')} ({where} {f.name})" if option else f"{where} {f.name}"


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
