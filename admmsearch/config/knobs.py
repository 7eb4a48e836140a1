"""Knobs: a searchable setting written as a fixed value, a range or ``{choices: [...]}``.

A range ``{low, high, log, step}`` is searched with ``trial.suggest_float`` (:class:`FloatRange`)
or ``trial.suggest_int`` (:class:`IntRange`); choices with ``trial.suggest_categorical``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Generic, TypeVar

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from .values import Bits, Clusters, Count, Fraction, Positive, PositiveInt, _Model

_FIXED, _RANGE, _CHOICES = "~fixed", "~range", "~choices"  # union tags, dropped from error paths
V = TypeVar("V")


def _check_range(low: float, high: float, log: bool, stepped: bool) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must be <= high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got {low}")
    if log and stepped:
        raise ValueError("log and step cannot be combined")


class FloatRange(_Model, Generic[V]):
    """Searched with ``trial.suggest_float``; ``log`` samples evenly on a log scale."""

    low: V
    high: V
    log: bool = False
    step: Positive | None = None

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        _check_range(self.low, self.high, self.log, self.step is not None)
        return self


class IntRange(_Model, Generic[V]):
    """Searched with ``trial.suggest_int``."""

    low: V
    high: V
    log: bool = False
    step: PositiveInt = 1

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        _check_range(self.low, self.high, self.log, self.step != 1)
        return self


class Choices(_Model, Generic[V]):
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


def contains(spec: Any, value: Any) -> bool:
    """Whether ``value`` is one the knob ``spec`` can take (for enqueued and replayed params)."""
    if isinstance(spec, Choices):
        return any(
            c == value and isinstance(c, bool) == isinstance(value, bool) for c in spec.choices
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(spec, IntRange) and not isinstance(value, int):
        return False
    if is_searched(spec):
        return spec.low <= value <= spec.high
    return value == spec
