"""The table of MIL runtime ops the executor can translate, filled by the `ops_*` modules.

Listing an op here is a claim that its ONNX translation reproduces the MIL definition exactly (up to fp32
summation order); anything not listed is refused with UnsupportedOpError rather than approximated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .onnx_context import OpContext
from .program import Op, Program


@dataclass(frozen=True)
class Translator:
    translate: Callable[[OpContext], None]
    # whether rounding the result to fp16 equals applying the op to fp16-rounded inputs
    commutes: Callable[[Program, Op], bool]


TRANSLATORS: dict[str, Translator] = {}


def translator(*op_types: str, commutes: bool | Callable[[Program, Op], bool] = False):
    def register(fn: Callable[[OpContext], None]):
        rule = commutes if callable(commutes) else (lambda program, op, value=commutes: value)
        for op_type in op_types:
            TRANSLATORS[op_type] = Translator(fn, rule)
        return fn

    return register
