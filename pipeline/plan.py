"""What a build will make, decided from the format table before any work starts: every (source model, format,
variant) to export, with the format choices and options checked against the table."""

from __future__ import annotations

from dataclasses import dataclass

from ..exporters.registry import FORMATS, FormatSpec, get_format
from .config import BuildConfig
from .core.errors import ConfigError


@dataclass(frozen=True)
class PlannedArtifact:
    source: str  # float | prune | qat: which Keras model
    format: str
    variant: str

    @property
    def spec(self) -> FormatSpec:
        return FORMATS[self.format]

    @property
    def name(self) -> str:
        return f"{self.format}:{self.variant}" + ("" if self.source == "float" else f" ({self.source})")


def plan_artifacts(config: BuildConfig) -> list[PlannedArtifact]:
    targets = list(dict.fromkeys(config.targets or FORMATS)) + [f for f in config.variants if f not in config.targets]
    specs = [get_format(name) for name in dict.fromkeys(targets)]
    chosen = {spec.name: _chosen_variants(spec, config.variants.get(spec.name)) for spec in specs}
    _check_options(config)
    plan = [PlannedArtifact("float", spec.name, v) for spec in specs for v in chosen[spec.name]]
    for source in config.optimize:
        made = [
            PlannedArtifact(source, spec.name, v.name)
            for spec in specs
            for v in spec.variants
            if source in v.sources and (source == "qat" or v.name in chosen[spec.name])
        ]
        if not made:
            wanted = [f"{s.name}:{v.name}" for s in FORMATS.values() for v in s.variants if source in v.sources]
            raise ConfigError(
                f"--optimize {source}: none of the chosen targets can export it; it is exported as "
                f"{', '.join(wanted)}, so add that target"
            )
        plan += made
    return plan


def _chosen_variants(spec: FormatSpec, names: list[str] | None) -> list[str]:
    if not names:
        return [spec.default_variant]
    for name in names:
        spec.variant(name)  # raises for an unknown one, listing the valid ones
    return list(dict.fromkeys(names))


def _check_options(config: BuildConfig) -> None:
    for spec in FORMATS.values():
        for option in spec.options:
            value = getattr(config.export, option.field)
            if value not in option.choices:
                raise ConfigError(
                    f"{option.flag} {value}: not a {spec.name} choice; valid: {', '.join(map(str, option.choices))}"
                )


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
