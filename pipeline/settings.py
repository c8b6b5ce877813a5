"""Where a build's settings come from: the dataclass defaults, then an optional TOML file (`--config`), then
options given by name: the command line's flags and `imgpipe.build(**options)` use the same names.

The file's top-level keys set build options (dataset, out, targets, variants, optimize, cache_dir,
allow_failures, wait); each table sets one settings dataclass ([backbone], [train], [split], [export], [metadata],
[latency], [prune], [qat]); [gates] holds release budgets, per format or variant in sub-tables. Unknown names are
errors, so a typo never silently falls back to a default. Paths in the file are relative to the file.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

from .config import (
    EMBEDDED_BACKBONE,
    EMBEDDED_TRAINING,
    SECTIONS,
    BuildConfig,
    GateLimits,
    GatePolicy,
    SplitFractions,
    check_values,
)
from .core.errors import ConfigError, filesystem_error
from .plan import parse_variant_specs

PATH_OPTIONS = ("dataset", "groups", "out", "cache_dir", "history")
RECORD_FILE = "build.json"  # in OUT: the settings of the build that made it, read by `imgpipe export`
TOP_LEVEL = tuple(f.name for f in dataclasses.fields(BuildConfig) if f.name not in (*SECTIONS, "gates"))


def make_config(options: dict | None = None, config_file: Path | None = None) -> BuildConfig:
    """Defaults (the embedded dataset's when no dataset is named anywhere), then the file, then the options."""
    file_data = load_config_file(config_file) if config_file else {}
    return _config_from(options, file_data, config_file)


def _config_from(options: dict | None, file_data: dict, config_file: Path | None) -> BuildConfig:
    options = {k: v for k, v in (options or {}).items() if v is not None}
    config = BuildConfig()
    embedded = "dataset" not in options and "dataset" not in file_data
    if embedded:
        config.backbone, config.train = EMBEDDED_BACKBONE, EMBEDDED_TRAINING
    if file_data:
        apply_config_file(config, file_data, config_file)
    config = apply_options(config, options)
    given = set(options) | set(file_data.get("backbone", {}))
    if embedded and "weights" in given and "alpha" not in given:
        # The quick recipe's width is for its random initialisation; weights decide their own width.
        config.backbone = dataclasses.replace(config.backbone, alpha=None)
    return config


def option_names() -> dict[str, tuple[str | None, dataclasses.Field]]:
    """Every named option: {name: (section or None for top level, its dataclass field)}."""
    found = {f.metadata["option"]: (None, f) for f in dataclasses.fields(BuildConfig) if f.metadata.get("option")}
    for section in (*SECTIONS, "gates"):
        cls = GateLimits if section == "gates" else type(getattr(BuildConfig(), section))
        for f in dataclasses.fields(cls):
            if f.metadata.get("option"):
                found[f.metadata["option"]] = (section, f)
    return found


def apply_options(config: BuildConfig, options: dict) -> BuildConfig:
    names = option_names()
    for name, value in options.items():
        if name == "split":
            config.split = SplitFractions(*(float(v) for v in value))
            continue
        if name not in names:
            raise ConfigError(f"unknown option '{name}'; valid: {', '.join(sorted([*names, 'split']))}")
        section, f = names[name]
        if section is None:
            _set_top_level(config, f.name, value, base=None)
        elif section == "gates":
            check_values(GateLimits, {f.name: value}, "[gates]")
            config.gates.command_line[f.name] = value
        else:
            setattr(config, section, dataclasses.replace(getattr(config, section), **{f.name: value}))
    return config


def load_config_file(path: Path) -> dict:
    """A TOML settings file, or the JSON record a build leaves in OUT (the same tables and keys)."""
    try:
        if Path(path).suffix == ".json":
            return json.loads(Path(path).read_text(encoding="utf-8"))
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; check the --config path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; --config takes a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e}); fix the file") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); rebuild, or pass the settings again") from None
    except OSError as e:  # a permission, a file that is not readable
        error = filesystem_error(e)
        if error is None:
            raise
        raise ConfigError(f"--config {error}") from None


def apply_config_file(config: BuildConfig, data: dict, path: Path) -> BuildConfig:
    for key, value in data.items():
        if key == "gates" and isinstance(value, dict):
            config.gates = gate_policy_from_table(value, str(path))
        elif key in SECTIONS and isinstance(value, dict):
            setattr(config, key, _replace_checked(getattr(config, key), value, f"{path} [{key}]"))
        elif key in TOP_LEVEL:
            _set_top_level(config, key, value, base=Path(path).parent)
        else:
            valid = sorted([*TOP_LEVEL, *(f"[{s}]" for s in (*SECTIONS, "gates"))])
            raise ConfigError(f"{path}: unknown setting '{key}'; valid: {', '.join(valid)}")
    return config


def recorded_config(config: BuildConfig) -> dict:
    """`config` as a settings file holds it (absolute paths, no unset values): what `export_config` reads back."""
    record = {}
    for key in TOP_LEVEL:
        value = getattr(config, key)
        if key in PATH_OPTIONS and value is not None:
            value = str(Path(value).resolve())
        if value is not None and key not in ("out", "wait"):
            record[key] = value
    for section in SECTIONS:
        values = {k: v for k, v in dataclasses.asdict(getattr(config, section)).items() if v is not None}
        if section == "backbone" and config.backbone.weights_file is not None:
            values["weights"] = str(config.backbone.weights_file.resolve())
        record[section] = values
    limits = config.gates.command_line  # the command line's limits win over every table: fold them into each
    gates = {k: v for k, v in {**dataclasses.asdict(config.gates.default), **limits}.items() if v is not None}
    for key, table in config.gates.overrides.items():
        gates[key] = {k: v for k, v in {**table, **limits}.items() if v is not None}
    record["gates"] = gates
    return record


def export_config(build_folder: Path, options: dict, config_file: Path | None = None) -> BuildConfig:
    """The settings of the build in `build_folder`, then `config_file`'s, then `options`. New targets or variants
    replace the recorded formats rather than adding to them; the output goes back into `build_folder` unless
    --out."""
    record = Path(build_folder) / RECORD_FILE
    if not record.is_file():
        raise ConfigError(
            f"{record}: not found; {build_folder} is not a finished imgpipe build folder (run imgpipe build --out "
            f"{build_folder})"
        )
    options = {k: v for k, v in options.items() if v is not None}
    data = load_config_file(record)
    given = load_config_file(config_file) if config_file else {}
    if {"targets", "variants"} & (set(options) | set(given)):
        data.pop("targets", None)
        data.pop("variants", None)
        variants = options.get("variants", given.get("variants"))
        if variants and "targets" not in options and "targets" not in given:  # only the formats named
            data["targets"] = list(
                dict.fromkeys(parse_variant_specs(list(variants)) if isinstance(variants, list) else variants)
            )
    for key, value in given.items():
        merged = isinstance(value, dict) and isinstance(data.get(key), dict) and key != "variants"
        data[key] = {**data[key], **value} if merged else value
    config = _config_from(options, data, record)
    if "out" not in options:
        config.out = Path(build_folder)
    return config


def gate_policy_from_table(table: dict, where: str) -> GatePolicy:
    """[gates] from a config file: plain keys are defaults, sub-tables are per format or format:variant."""
    plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
    check_values(GateLimits, plain, f"{where} [gates]")
    overrides = {}
    for key, sub in table.items():
        if isinstance(sub, dict):
            check_values(GateLimits, sub, f'{where} [gates."{key}"]')
            overrides[key] = dict(sub)
    return GatePolicy(dataclasses.replace(GateLimits(), **plain), overrides)


def _replace_checked(current, values: dict, where: str):
    """A section with the file's values, checked first so an unknown key or a wrong type names the file."""
    values = {k: tuple(v) if isinstance(getattr(current, k, None), tuple) else v for k, v in values.items()}
    check_values(type(current), values, where)
    return dataclasses.replace(current, **values)


def _set_top_level(config: BuildConfig, key: str, value, base: Path | None) -> None:
    expected = _TOP_LEVEL_TYPES.get(key)
    if expected is not None and not _is(value, expected[0]):
        raise ConfigError(f"{key} = {value!r}: expected {expected[1]}")
    if key in PATH_OPTIONS:
        path = Path(value).expanduser()
        setattr(config, key, (base / path).resolve() if base is not None else path)
    elif key == "variants":
        config.variants = (
            {k: list(v) for k, v in value.items()} if isinstance(value, dict) else parse_variant_specs(list(value))
        )
    elif key in ("targets", "optimize"):
        setattr(config, key, list(dict.fromkeys(value)))
    else:
        setattr(config, key, value)


_TOP_LEVEL_TYPES = {
    **{key: ("path", "a path (a string)") for key in PATH_OPTIONS},
    "targets": ("names", "a list of format names"),
    "optimize": ("names", "a list of optimization names"),
    "variants": ("variants", 'a table such as {tflite = ["fp32", "int8"]} or a list such as ["tflite:fp32,int8"]'),
    "allow_failures": ("bool", "true or false"),
    "wait": ("bool", "true or false"),
    "record_history": ("bool", "true or false"),
    "mlflow_uri": ("str", "a string"),
    "mlflow_experiment": ("str", "a string"),
}


def _is(value, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "path":
        return isinstance(value, (str, Path))
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "names":
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if isinstance(value, dict):  # variants
        return all(isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v) for v in value.values())
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
