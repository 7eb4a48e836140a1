"""Knobs: a searchable setting written as a fixed value, a range or ``{choices: [...]}``.

A range ``{low, high, log, step}`` is searched with ``trial.suggest_float`` (:class:`FloatRange`)
or ``trial.suggest_int`` (:class:`IntRange`); choices with ``trial.suggest_categorical``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Generic, TypeVar

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from ..validation import Bits, Clusters, Count, Fraction, FrozenModel, Positive, PositiveInt

__all__ = [
    "BitsKnob",
    "Choices",
    "ClustersKnob",
    "CountKnob",
    "FloatRange",
    "IntRange",
    "KeepKnob",
    "PositiveIntKnob",
    "PositiveKnob",
    "contains",
    "is_searched",
    "normalise",
]

_FIXED, _RANGE, _CHOICES = "~fixed", "~range", "~choices"  # union tags, dropped from error paths
V = TypeVar("V")


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must be <= high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got {low}")
    if log and step is not None:
        raise ValueError("log and step cannot be combined")
    if step is not None:
        _check_step(low, high, step)


def _check_step(low: float, high: float, step: float) -> None:
    """``high`` must be ``low + k * step``: Optuna would silently lower it to the last such
    value below it (and warn once per trial), so the top of the range could never be drawn.

    >>> _check_step(0.02, 1.0, 0.05)
    Traceback (most recent call last):
    ...
    ValueError: high 1.0 is not low + k * step (0.02 + k * 0.05); use high 0.97 or low 0.05
    """
    steps = (high - low) / step
    if abs(steps - round(steps)) < 1e-9:
        return
    below = low + math.floor(steps) * step
    above = high - math.floor(steps) * step
    raise ValueError(
        f"high {high} is not low + k * step ({low} + k * {step}); "
        f"use high {round(below, 10):g} or low {round(above, 10):g}"
    )


class FloatRange(FrozenModel, Generic[V]):
    """Searched with ``trial.suggest_float``; ``log`` samples evenly on a log scale."""

    low: V
    high: V
    log: bool = False
    step: Positive | None = None

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        _check_range(self.low, self.high, self.log, self.step)
        return self


class IntRange(FrozenModel, Generic[V]):
    """Searched with ``trial.suggest_int``."""

    low: V
    high: V
    log: bool = False
    step: PositiveInt = 1

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        _check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self


class Choices(FrozenModel, Generic[V]):
    """Searched with ``trial.suggest_categorical``; ``None`` may be a choice where allowed."""

    choices: tuple[V, ...] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(set(choices)) != len(choices):
            raise ValueError("must not repeat a choice")
        return choices


def _form(value: Any) -> str:
    """Which form of knob ``value`` is written in: choices, range or a fixed value."""
    if isinstance(value, Choices) or (isinstance(value, Mapping) and "choices" in value):
        return _CHOICES
    return _RANGE if isinstance(value, Mapping | FloatRange | IntRange) else _FIXED


def _knob(value: Any, ranges: type, fixed: Any = None) -> Any:
    """The type of a knob over ``value``; ``fixed`` widens the fixed value and the choices."""
    fixed = value if fixed is None else fixed
    forms = (
        Annotated[fixed, Tag(_FIXED)]
        | Annotated[ranges[value], Tag(_RANGE)]
        | Annotated[Choices[fixed], Tag(_CHOICES)]
    )
    return Annotated[forms, Discriminator(_form)]


KeepKnob = _knob(Fraction, FloatRange)
BitsKnob = _knob(Bits, IntRange, Bits | None)  # None: float32, no quantization
ClustersKnob = _knob(Clusters, IntRange, Clusters | None)  # None: clustering off
PositiveKnob = _knob(Positive, FloatRange)
CountKnob = _knob(Count, IntRange)
PositiveIntKnob = _knob(PositiveInt, IntRange)


def is_searched(spec: Any) -> bool:
    """Whether a knob is searched (a range or choices) rather than fixed."""
    return isinstance(spec, FloatRange | IntRange | Choices)


def normalise(spec: Any, value: Any) -> Any:
    """``value`` in the knob's own type where it equals one of its values exactly.

    ``4.0`` becomes ``4`` for an integer range, ``1`` becomes ``1.0`` for a float range, and a
    value equal to a choice becomes that choice (``4.0`` -> ``4`` for ``{choices: [2, 4]}``).
    Anything else (``4.5``, booleans, None) comes back unchanged, for :func:`contains` to judge.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(spec, Choices):
        same = (c for c in spec.choices if not isinstance(c, bool) and c is not None)
        return next((c for c in same if c == value), value)
    if isinstance(spec, IntRange) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(spec, FloatRange) and isinstance(value, int):
        return float(value)
    return value


def contains(spec: Any, value: Any) -> bool:
    """Whether ``value`` is one the knob ``spec`` can take (for enqueued and replayed params):
    of the knob's type, within its range and on its ``step`` grid (Optuna's rule)."""
    if isinstance(spec, Choices):
        return any(c == value and type(c) is type(value) for c in spec.choices)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(spec, IntRange):
        on_grid = isinstance(value, int) and (value - spec.low) % spec.step == 0
        return on_grid and spec.low <= value <= spec.high
    if isinstance(spec, FloatRange):
        k = 0.0 if spec.step is None else (value - spec.low) / spec.step
        return abs(k - round(k)) < 1e-8 and spec.low <= value <= spec.high
    return value == spec
