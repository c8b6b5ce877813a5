"""`--config imgpipe.toml`: the same settings as the command line, kept with a project.

Top-level keys set build options (dataset, out, targets, variants, optimize, cache_dir, allow_failures); each
table sets one configuration dataclass ([backbone], [train], [split], [export], [metadata], [latency], ...);
[gates] holds release budgets (see gates.py). Unknown keys are errors, so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from imgpipe.config import BuildConfig, parse_variant_specs
from imgpipe.errors import ConfigError
from imgpipe.gates import GatePolicy

TOP_LEVEL = {"dataset", "out", "targets", "variants", "optimize", "cache_dir", "allow_failures"}


def load_config_file(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; check the --config path") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e}); fix the file") from None


def apply_config_file(config: BuildConfig, data: dict, path: Path) -> BuildConfig:
    """Settings from a parsed config file layered over `config` (paths resolved against the file's folder)."""
    sections = _section_names(config)
    for key, value in data.items():
        if key == "gates" and isinstance(value, dict):
            config.gates = GatePolicy.from_table(value, str(path))
        elif isinstance(value, dict) and key in sections:
            setattr(config, key, _replace_checked(getattr(config, key), value, f"[{key}]", path))
        elif key in TOP_LEVEL:
            _apply_top_level(config, key, value, path)
        else:
            valid = sorted(TOP_LEVEL | {f"[{s}]" for s in sections})
            raise ConfigError(f"{path}: unknown setting '{key}'; valid: {', '.join(valid)}")
    return config


def _section_names(config: BuildConfig) -> set[str]:
    return {
        f.name
        for f in dataclasses.fields(config)
        if dataclasses.is_dataclass(getattr(config, f.name)) and f.name != "gates"
    }


def _replace_checked(current, values: dict, where: str, path: Path):
    names = {f.name for f in dataclasses.fields(current)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} in {where}; valid: {', '.join(sorted(names))}")
    values = {k: tuple(v) if isinstance(getattr(current, k), tuple) else v for k, v in values.items()}
    return dataclasses.replace(current, **values)


def _apply_top_level(config: BuildConfig, key: str, value, path: Path) -> None:
    base = Path(path).parent
    if key in ("dataset", "out", "cache_dir"):
        setattr(config, key, (base / Path(value).expanduser()).resolve())
    elif key == "targets":
        config.targets = list(value)
    elif key == "optimize":
        config.optimize = list(value)
    elif key == "allow_failures":
        config.allow_failures = bool(value)
    elif key == "variants":
        if isinstance(value, dict):
            config.variant_choices = {k: list(v) for k, v in value.items()}
        else:
            config.variant_choices = parse_variant_specs(list(value))
