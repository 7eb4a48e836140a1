"""Checked values shared by the engine's settings, the plan and the study file; the frozen model
they live in; and how a failed validation reads (one line per bad field).

Each check says only what is wrong (``must be in (0, 1]``); :func:`report_errors` adds the
dotted field path and the bad value. Numbers are strict: a float field takes ints too, but
neither takes bools or strings. No torch here: reading settings costs nothing.

Example:
    >>> class Stage(FrozenModel):
    ...     epochs: Count = 3
    >>> Stage(epochs=-1)
    Traceback (most recent call last):
    ...
    admmsearch.errors.ConfigError: Stage: epochs: must be >= 0, got -1
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Strict, ValidationError

from .errors import ConfigError, quote

__all__ = [
    "Bits",
    "Clusters",
    "Count",
    "Fraction",
    "FrozenModel",
    "Multiplier",
    "NonNegative",
    "Positive",
    "PositiveInt",
    "StrictBool",
    "bound",
    "matches",
    "one_of",
    "report_errors",
]


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


def one_of(values: Sequence[str]) -> AfterValidator:
    """Check a string is one of ``values``."""

    def check(value: str) -> str:
        if value not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return value

    return AfterValidator(check)


def matches(pattern: str, what: str) -> AfterValidator:
    """Check a string matches ``pattern``; the message says ``what`` it must be."""

    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"must be {what}")
        return value

    return AfterValidator(check)


Fraction = Annotated[float, Strict(), bound(0, 1, open_low=True)]
Positive = Annotated[float, Strict(), bound(0, open_low=True)]
NonNegative = Annotated[float, Strict(), bound(0)]
Multiplier = Annotated[float, Strict(), bound(1)]
Count = Annotated[int, Strict(), bound(0)]
PositiveInt = Annotated[int, Strict(), bound(1)]
Bits = Annotated[int, Strict(), bound(1, 16)]
Clusters = Annotated[int, Strict(), bound(2, 65536)]
StrictBool = Annotated[bool, Strict()]


class FrozenModel(BaseModel):
    """Frozen, no unknown fields, defaults validated like user input.

    Built like the frozen dataclass it replaces: fields may be given by position, in their
    declared order, and a bad value raises :class:`~admmsearch.errors.ConfigError` naming the
    model and the field (``TrainSettings: lr: must be > 0, got 0``). :meth:`replace` is
    ``dataclasses.replace`` with the new values checked too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def __init__(self, /, *args: Any, **data: Any) -> None:
        names = list(type(self).model_fields)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} fields")
        for name, value in zip(names, args, strict=False):
            if name in data:
                raise TypeError(f"{type(self).__name__} got two values for {name}")
            data[name] = value
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(report_errors(type(self).__name__, exc)) from None

    # Validation of a nested model or of plain data does not come through here (as for
    # pydantic's RootModel, whose __init__ is marked so too), so errors there keep their path.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied and checked.

        Raises:
            ConfigError: a changed value is bad; the message names the field.
        """
        return type(self)(**{**dict(self), **changes})

    @classmethod
    def parse(cls, data: Any, source: str) -> Self:
        """Validate plain data (from YAML or JSON) read from ``source``.

        Raises:
            ConfigError: one line per bad field after ``source``, each with the bad value.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(report_errors(source, exc)) from None


def report_errors(
    source: str, exc: ValidationError, rename: Mapping[str, str] | None = None
) -> str:
    """One line per bad field: ``dotted.path: what is wrong, got value``, after ``source``.

    ``rename`` maps a dotted prefix to the name the reader knows it by (when the data was
    rearranged before validation).
    """
    lines = [_line(error) for error in _own_errors(exc.errors(include_url=False))]
    for old, new in (rename or {}).items():
        lines = [new + line[len(old) :] if line.startswith(old) else line for line in lines]
    lines = list(dict.fromkeys(lines))
    if len(lines) == 1:
        return f"{source}: {lines[0]}"
    return f"{source}: {len(lines)} problems:\n" + "\n".join(f"  {line}" for line in lines)


def _own_errors(errors: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pydantic's errors less a list's "too short" where its items were refused: a list of
    one bad item is not empty, and saying so again would mislead."""
    bad_items = {
        tuple(e["loc"][:-1]) for e in errors if e["loc"] and isinstance(e["loc"][-1], int)
    }
    return [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in bad_items)]


_PHRASES = (
    (re.compile(r"^Input should be"), "must be"),
    (re.compile(r"a valid dictionary( or instance of \w+)?"), "a mapping"),
    (re.compile(r"a valid tuple"), "a list"),
    (re.compile(r"^(Tuple|List|Dictionary) should"), "must"),
    (re.compile(r" after validation, not \d+"), ""),
)


def _line(error: Mapping[str, Any]) -> str:
    where = ""
    for part in error["loc"]:
        if isinstance(part, int):
            where += f"[{part}]"
        elif not part.startswith("~") and part != "[key]":
            where += f".{part}" if where else part
    if error["type"] == "extra_forbidden":
        text = "unknown field"
    elif error["type"] == "missing":
        text = "required field is missing"
    else:
        text = error["msg"].removeprefix("Value error, ")
        for pattern, new in _PHRASES:
            text = pattern.sub(new, text)
        if not isinstance(error.get("input"), Mapping):
            text += f", got {quote(error['input'])}"
    return f"{where}: {text}" if where else text
