"""Checked scalar values of a study file that only the study file has: objectives, samplers,
names, devices and enqueued params; the numbers and the frozen model they live in come from
:mod:`admmsearch.validation`, shared with the engine's settings.

Each check says only what is wrong (``must be one of ...``); :mod:`.loading` adds the dotted
field path and the bad value.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Strict

from ..record import Metric
from ..settings import IndexFormat, Optimizer, Schedule
from ..validation import (
    Bits,
    Clusters,
    Count,
    Fraction,
    FrozenModel,
    Multiplier,
    NonNegative,
    Positive,
    PositiveInt,
    bound,
    matches,
    one_of,
)

__all__ = [
    "OBJECTIVES",
    "PRIOR_FAMILIES",
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
    "PriorFamily",
    "SamplerName",
    "Schedule",
    "bound",
]

#: Objectives a study may optimise, with their Optuna direction.
OBJECTIVES = {
    Metric.VAL_ACCURACY: "maximize",
    Metric.STORAGE_BITS: "minimize",
    Metric.COMPRESSION_RATIO: "maximize",
}
SAMPLERS = ("nsga2", "tpe", "gp", "random")
#: Zero-cost allocation priors a study may start from (see :mod:`admmsearch.search.priors`).
PRIOR_FAMILIES = ("global", "lamp", "erk", "uniform", "sensitivity")

Name = Annotated[
    str,
    Strict(),
    matches(
        r"(?!\.+$)[A-Za-z0-9_.-]{1,100}",
        "letters, digits, '_', '.' or '-', 1 to 100 of them, not only dots (it names folders)",
    ),
]
Device = Annotated[str, Strict(), matches(r"cpu|mps|cuda(:\d+)?", "cpu, cuda, cuda:N or mps")]
Objective = Annotated[str, Strict(), one_of(tuple(OBJECTIVES))]
SamplerName = Annotated[str, Strict(), one_of(SAMPLERS)]
PriorFamily = Annotated[str, Strict(), one_of(PRIOR_FAMILIES)]


def _number_or_none(value: Any) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError("must be a number or null")
    return value


ParamValue = Annotated[Any, AfterValidator(_number_or_none)]  # an enqueued parameter's value
