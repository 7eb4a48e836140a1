"""Checked scalar values of a study file: bounded numbers, names, one-of strings.

Each check says only what is wrong (``must be in (0, 1]``); :mod:`.loading` adds the dotted field
path and the bad value. Numbers are strict: a float field takes ints too, but neither takes bools
or strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Strict

from ..names import INDEX_FORMATS, OPTIMIZERS, SCHEDULES

__all__ = [
    "OBJECTIVES",
    "SAMPLERS",
    "Bits",
    "Clusters",
    "Count",
    "Device",
    "Fraction",
    "FrozenModel",
    "IndexFormat",
    "Multiplier",
    "Name",
    "NonNegative",
    "Objective",
    "Optimizer",
    "ParamValue",
    "Positive",
    "PositiveInt",
    "SamplerName",
    "Schedule",
    "bound",
]

#: Objectives a study may optimise, with their Optuna direction.
OBJECTIVES = {
    "val_accuracy": "maximize",
    "storage_bits_with_index": "minimize",
    "compression_ratio_with_index": "maximize",
}
SAMPLERS = ("nsga2", "tpe", "gp", "random")


def bound(
    low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False
) -> AfterValidator:
    """Check a finite number lies in [low, high]; ``open_*`` excludes that end."""
    if high is None:
        text = f"must be {'>' if open_low else '>='} {low}"
    else:
        text = f"must be in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"

    def check(value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        above = value > low if open_low else value >= low
        below = high is None or (value < high if open_high else value <= high)
        if not (above and below):
            raise ValueError(text)
        return value

    return AfterValidator(check)


def _one_of(values: Sequence[str]) -> AfterValidator:
    """Check a string is one of ``values``."""

    def check(value: str) -> str:
        if value not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return value

    return AfterValidator(check)


def _matches(pattern: str, what: str) -> AfterValidator:
    """Check a string matches ``pattern``; the message says ``what`` it must be."""

    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"must be {what}")
        return value

    return AfterValidator(check)


# Strict numbers: a float field takes ints too, but neither takes bools or strings.
Fraction = Annotated[float, Strict(), bound(0, 1, open_low=True)]
Positive = Annotated[float, Strict(), bound(0, open_low=True)]
NonNegative = Annotated[float, Strict(), bound(0)]
Multiplier = Annotated[float, Strict(), bound(1)]
Count = Annotated[int, Strict(), bound(0)]
PositiveInt = Annotated[int, Strict(), bound(1)]
Bits = Annotated[int, Strict(), bound(1, 16)]
Clusters = Annotated[int, Strict(), bound(2, 65536)]
Name = Annotated[
    str,
    Strict(),
    _matches(
        r"(?!\.+$)[A-Za-z0-9_.-]{1,100}",
        "letters, digits, '_', '.' or '-', 1 to 100 of them, not only dots (it names folders)",
    ),
]
Device = Annotated[str, Strict(), _matches(r"cpu|mps|cuda(:\d+)?", "cpu, cuda, cuda:N or mps")]
Optimizer = Annotated[str, Strict(), _one_of(OPTIMIZERS)]
Schedule = Annotated[str, Strict(), _one_of(SCHEDULES)]
IndexFormat = Annotated[str, Strict(), _one_of(INDEX_FORMATS)]
Objective = Annotated[str, Strict(), _one_of(tuple(OBJECTIVES))]
SamplerName = Annotated[str, Strict(), _one_of(SAMPLERS)]


def _number_or_none(value: Any) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError("must be a number or null")
    return value


ParamValue = Annotated[Any, AfterValidator(_number_or_none)]  # an enqueued parameter's value


class FrozenModel(BaseModel):
    """Frozen, no unknown fields, defaults validated like user input."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
