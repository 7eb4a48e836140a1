"""Budgeted allocation: per-unit settings that lose the least predicted accuracy within a
storage budget, found exactly.

Each unit (a layer or a group of tied layers) has a few options, each with its storage in bits
and its predicted accuracy loss (from :mod:`admmsearch.search.sensitivity`: the loss when that unit
alone is compressed so). Losses are taken as additive across units, the usual first-order
model of sensitivity analyses. Choosing one option per unit so that ``fixed + sum(storage) <=
budget`` and ``sum(loss)`` is least is a multiple-choice knapsack; it is solved exactly by
dynamic programming over Pareto fronts: the front of (storage, loss) after units 1..k is merged
with unit k+1's options and pruned to its non-dominated points. Storage stays in integer bits,
so the budget is never exceeded by rounding. One front serves every budget.

Worked example: units ``a`` with options (storage 10, loss 0.0) and (4, 0.3), ``b`` with (6,
0.0) and (2, 0.1), nothing fixed. The four combinations are (16, 0.0), (12, 0.1), (10, 0.3)
and (6, 0.4), all on the front. Within 12 bits the best is ``a`` at 10 and ``b`` at 2, loss 0.1.

>>> a = [Option("a", 10, 0.0), Option("a", 4, 0.3)]
>>> b = [Option("b", 6, 0.0), Option("b", 2, 0.1)]
>>> best = allocate([a, b], budget_bits=12)
>>> best.storage_bits, round(best.loss, 3), [o.storage_bits for o in best.options]
(12, 0.1, [10, 2])
>>> allocate([a, b], budget_bits=5) is None
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Allocation", "Option", "allocate", "allocate_many", "log_budgets", "pareto_front"]


@dataclass(frozen=True)
class Option:
    """One setting of one unit: its storage (bits, with indices) and predicted loss.

    ``setting`` is whatever the caller needs to apply it (keep ratio, bits, ...).
    """

    unit: str
    storage_bits: int
    loss: float
    setting: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class Allocation:
    """One option per unit; ``storage_bits`` includes the fixed bits."""

    options: tuple[Option, ...]
    storage_bits: int
    loss: float
    budget_bits: int


def pareto_front(
    units: Sequence[Sequence[Option]], fixed_bits: int = 0
) -> list[tuple[int, float, tuple[int, ...]]]:
    """Every non-dominated ``(storage, loss, picks)`` over one option per unit, by storage.

    ``picks[i]`` indexes ``units[i]``. Of equal (storage, loss) points the first in the
    lexicographic order of the picks is kept, so the result is deterministic.
    """
    front: list[tuple[int, float, tuple[int, ...]]] = [(fixed_bits, 0.0, ())]
    for options in units:
        if not options:
            raise ValueError("every unit needs at least one option")
        merged = [
            (s + o.storage_bits, loss + o.loss, picks + (i,))
            for s, loss, picks in front
            for i, o in enumerate(options)
        ]
        front = _prune(merged)
    return front


def _prune(
    points: list[tuple[int, float, tuple[int, ...]]],
) -> list[tuple[int, float, tuple[int, ...]]]:
    """Keep the points no other beats on both storage and loss (a strictly lower loss is
    needed to survive at a larger storage)."""
    points.sort(key=lambda p: (p[0], p[1], p[2]))
    kept, best = [], float("inf")
    for point in points:
        if point[1] < best:
            kept.append(point)
            best = point[1]
    return kept


def allocate(
    units: Sequence[Sequence[Option]], budget_bits: int, fixed_bits: int = 0
) -> Allocation | None:
    """The least predicted loss within ``budget_bits`` (fixed bits included); None when even
    the smallest options exceed it."""
    return _pick(pareto_front(units, fixed_bits), units, budget_bits)


def _pick(
    front: Sequence[tuple[int, float, tuple[int, ...]]],
    units: Sequence[Sequence[Option]],
    budget_bits: int,
) -> Allocation | None:
    within = [p for p in front if p[0] <= budget_bits]
    if not within:
        return None
    storage, loss, picks = min(within, key=lambda p: (p[1], p[0]))
    chosen = tuple(options[i] for options, i in zip(units, picks, strict=True))
    return Allocation(chosen, storage, loss, budget_bits)


def allocate_many(
    units: Sequence[Sequence[Option]], budgets: Sequence[int], fixed_bits: int = 0
) -> list[Allocation | None]:
    """:func:`allocate` for several budgets, sharing one front."""
    front = pareto_front(units, fixed_bits)
    return [_pick(front, units, b) for b in budgets]


def log_budgets(units: Sequence[Sequence[Option]], count: int, fixed_bits: int = 0) -> list[int]:
    """``count`` budgets log-spaced strictly between the smallest and the largest storage
    the options allow (the two ends themselves are left out), in bits, ascending."""
    low = fixed_bits + sum(min(o.storage_bits for o in options) for options in units)
    high = fixed_bits + sum(max(o.storage_bits for o in options) for options in units)
    if count < 1 or high <= low:
        return []
    grid = np.geomspace(low, high, count + 2)[1:-1]
    return sorted({int(b) for b in grid})
