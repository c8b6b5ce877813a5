"""Build configuration: plain dataclasses filled from defaults, an optional TOML file, then the command line."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from imgpipe.bottlenecks import default_cache_dir
from imgpipe.dataset import SplitFractions
from imgpipe.errors import ConfigError
from imgpipe.exporters.base import ExportOptions, ModelMetadata
from imgpipe.exporters.registry import FORMATS, get_format
from imgpipe.gates import GatePolicy
from imgpipe.model import BackboneSpec
from imgpipe.optimize import PruneConfig, QatConfig
from imgpipe.train import TrainConfig
from imgpipe.verify import LatencyConfig

OPTIMIZATIONS = ("prune", "qat")
EMBEDDED_BACKBONE = BackboneSpec(arch="mobilenet_v2", alpha=0.35, image_size=96, weights="none")
EMBEDDED_TRAINING = TrainConfig(epochs=50, learning_rate=2e-3, patience=8, augment=True)


@dataclass
class BuildConfig:
    out: Path
    dataset: Path | None = None  # None: the embedded generated dataset
    targets: list[str] = field(default_factory=lambda: ["tflite", "coreml", "onnx"])
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    split: SplitFractions = field(default_factory=SplitFractions)
    export: ExportOptions = field(default_factory=ExportOptions)
    metadata: ModelMetadata = field(default_factory=ModelMetadata)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    cache_dir: Path = field(default_factory=default_cache_dir)
    variant_choices: dict[str, list[str]] = field(default_factory=dict)  # format -> variants (else its default)
    optimize: list[str] = field(default_factory=list)  # model-level optimizations: prune, qat
    prune: PruneConfig = field(default_factory=PruneConfig)
    qat: QatConfig = field(default_factory=QatConfig)
    gates: GatePolicy = field(default_factory=GatePolicy)
    allow_failures: bool = False  # publish what passed and exit 0 even when an artifact fails a gate

    def validate(self) -> None:
        if not self.targets:
            raise ConfigError("--targets is empty; choose from " + ", ".join(FORMATS))
        for name in self.targets:
            get_format(name)
        self.backbone.validate()
        self.split.validate()
        self.prune.validate()
        self.qat.validate()
        for name, chosen in self.variant_choices.items():
            spec = get_format(name)
            for v in chosen:
                if v not in spec.variants:
                    raise ConfigError(
                        f"unknown {name} variant '{v}'; valid {name} variants: {', '.join(spec.variants)}"
                    )
        for opt in self.optimize:
            if opt not in OPTIMIZATIONS:
                raise ConfigError(f"unknown optimization '{opt}'; valid: {', '.join(OPTIMIZATIONS)}")
        if self.export.io_type not in ("float", "int8", "uint8"):
            raise ConfigError(f"--io-type {self.export.io_type}: valid values are float, int8, uint8")

    def variants(self) -> list[tuple[str, str]]:
        """(format, variant) pairs to build from the float model, in a stable order."""
        return [
            (name, v)
            for name in self.targets
            for v in self.variant_choices.get(name) or [get_format(name).default_variant]
        ]

    def to_dict(self) -> dict:
        d = asdict(self)
        return _jsonable(d)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def parse_variant_specs(specs: list[str]) -> dict[str, list[str]]:
    """`["tflite:fp32,int8", "onnx:int8"]` -> {"tflite": ["fp32", "int8"], "onnx": ["int8"]}."""
    chosen: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, variants = spec.partition(":")
        if not sep or not variants:
            raise ConfigError(f"--variants {spec}: expected FORMAT:VARIANT[,VARIANT...], e.g. tflite:fp32,int8")
        get_format(name)
        chosen.setdefault(name, [])
        chosen[name] += [v for v in variants.split(",") if v and v not in chosen[name]]
    return chosen
