"""`imgpipe build`'s options, generated from the settings dataclasses and the format table, so every flag has the
same name, help text, default and allowed values as the config file key and the `imgpipe.build()` argument."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ...exporters.registry import FORMATS
from ..config import EMBEDDED_BACKBONE, EMBEDDED_TRAINING, OPTIMIZATIONS, SplitFractions
from ..settings import option_names

GROUPS = {
    None: "what to build",
    "backbone": "backbone",
    "train": "training",
    "split": "split",
    "export": "format options",
    "metadata": "model metadata",
    "prune": "model-level optimizations",
    "qat": "model-level optimizations",
    "gates": "release gates (every artifact; the config file can set them per format and variant)",
}
FORMAT_CHOICES = {o.field: o.choices for spec in FORMATS.values() for o in spec.options}
SPECIAL = {
    "dataset": dict(type=Path, metavar="FOLDER"),
    "out": dict(type=Path, metavar="FOLDER"),
    "cache_dir": dict(type=Path, metavar="FOLDER"),
    "history": dict(type=Path, metavar="FILE"),
    "targets": dict(nargs="+", metavar="FORMAT", choices=list(FORMATS)),
    "variants": dict(nargs="+", metavar="FORMAT:V[,V]"),
    "optimize": dict(nargs="+", metavar="OPT", choices=list(OPTIMIZATIONS)),
}
# Defaults a flag cannot show by itself: lists, paths and the format table's choices.
SHOWN_DEFAULTS = {
    "out": "imgpipe-build",
    "targets": " ".join(FORMATS),
    "variants": " ".join(f"{name}:{spec.default_variant}" for name, spec in FORMATS.items()),
    "optimize": "none",
}
# The quick first-build recipe (no --dataset) changes these defaults; help shows both.
EMBEDDED = {
    **{f.metadata["option"]: getattr(EMBEDDED_BACKBONE, f.name) for f in dataclasses.fields(EMBEDDED_BACKBONE)},
    **{
        f.metadata["option"]: getattr(EMBEDDED_TRAINING, f.name)
        for f in dataclasses.fields(EMBEDDED_TRAINING)
        if f.metadata.get("option")
    },
}


def add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="TOML", help="settings file (options given here win over it)")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, (section, f) in option_names().items():
        title = GROUPS[section]
        group = groups.setdefault(title, parser.add_argument_group(title))
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, **_argument(name, f))
        if name == "variants":
            group.add_argument(
                "--split",
                nargs=3,
                type=float,
                metavar=("TRAIN", "VAL", "TEST"),
                help="split fractions (default: %s)"
                % " ".join(f"{v:g}" for v in dataclasses.astuple(SplitFractions())),
            )


def given_options(args: argparse.Namespace) -> dict:
    """The options the user actually passed (None: not given), so defaults stay in the dataclasses."""
    names = [*option_names(), "split"]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _argument(name: str, f: dataclasses.Field) -> dict:
    help_text = f.metadata["help"]
    if name in SPECIAL:
        shown = f" (default: {SHOWN_DEFAULTS[name]})" if name in SHOWN_DEFAULTS and "(default" not in help_text else ""
        return {**SPECIAL[name], "help": help_text + shown}
    kinds = str(f.type)
    default = _field_default(f)
    shown = "" if "(default" in help_text else f" (default: {_show(default)})"
    embedded = EMBEDDED.get(name, default)
    if embedded != default:
        if "(default" in help_text and help_text.endswith(")"):
            help_text, shown = help_text[:-1], f"; without --dataset: {_show(embedded)})"
        else:
            shown = f" (default: {_show(default)}; without --dataset: {_show(embedded)})"
    if "bool" in kinds:
        return {"action": argparse.BooleanOptionalAction, "help": help_text + shown}
    arg: dict = {"help": help_text + shown}
    choices = f.metadata.get("choices") or FORMAT_CHOICES.get(name)
    if choices:
        arg["choices"] = list(choices)
    arg["type"] = int if kinds.startswith("int") else float if kinds.startswith("float") else str
    return arg


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return None
