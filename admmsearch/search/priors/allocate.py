"""A family's prior for an overall keep or a storage target, over the study's units."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ...config import is_searched
from .families import erk_densities, lamp_scores, ranked_keeps, uniform_keeps
from .problem import PriorProblem, clip_keep, keep_bounds, problem_storage_bits

__all__ = ["ZERO_COST", "Prior", "prior_at_keep", "prior_at_storage", "prior_order"]

#: The families computed here from the weights alone (``sensitivity`` needs its table).
ZERO_COST = ("global", "lamp", "erk", "uniform")
_BISECTIONS = 32  # halvings of the log keep interval: far below one weight for any model


@dataclass(frozen=True)
class Prior:
    """One family's allocation.

    Attributes:
        family: which family (:data:`FAMILIES`).
        keeps: free unit -> keep ratio, inside its search range.
        levels: unit -> bits or clusters (None: float32), as the storage estimate assumed.
        storage_bits: estimated storage with indices of the whole model, in bits.
        overall_keep: kept weights over all compressible weights, fixed units included.
        target_bits: the storage target it was bisected to (None for a keep target); at
            least ``storage_bits`` unless even the least keeps exceed it.
        clipped: free unit -> ``(the family's keep, the keep used)`` where the family's fell
            outside the unit's range.
    """

    family: str
    keeps: Mapping[str, float]
    levels: Mapping[str, int | None]
    storage_bits: int
    overall_keep: float
    target_bits: int | None = None
    clipped: Mapping[str, tuple[float, float]] = field(default_factory=dict)


def _layer_rule(family: str, problem: PriorProblem) -> Callable[[float], dict[str, float]]:
    """The family over the free units' layers: their share of the free weights -> layer keeps."""
    free = [layer for unit in problem.free for layer in unit.layers]
    order = list(problem.dense.weights)  # model order
    weights = {n: problem.dense.weights[n] for n in free}
    if family == "global":
        return ranked_keeps({n: w.abs() for n, w in weights.items()})
    if family == "lamp":
        return ranked_keeps({n: lamp_scores(w) for n, w in weights.items()})
    if family == "erk":
        return lambda keep: erk_densities({n: tuple(w.shape) for n, w in weights.items()}, keep)
    if family == "uniform":
        ends = {order[0], order[-1]} if order else set()
        spared = {n for u in problem.free if ends & set(u.layers) for n in u.layers}
        sizes = {n: w.numel() for n, w in weights.items()}
        return lambda keep: uniform_keeps(sizes, keep, spared)
    raise ValueError(f"family must be one of {', '.join(ZERO_COST)}, got {family!r}")


class _Family:
    """One family on one problem, its ranking computed once; :meth:`at` an overall keep."""

    def __init__(self, family: str, problem: PriorProblem) -> None:
        self.family, self.problem = family, problem
        self.rule = _layer_rule(family, problem)
        self.total = sum(problem.unit_size(u) for u in problem.units)
        fixed = [u for u in problem.units if not is_searched(u.keep)]
        self.fixed_kept = sum(u.keep * problem.unit_size(u) for u in fixed)
        self.free_total = sum(problem.unit_size(u) for u in problem.free)
        self.memo: dict = {}

    def at(self, keep: float) -> Prior:
        """The prior at overall keep ``keep``, each free unit clipped to its range."""
        p = self.problem
        share = (keep * self.total - self.fixed_kept) / self.free_total if self.free_total else 0
        layer_keeps = self.rule(min(1.0, max(0.0, share)))
        keeps, clipped = {}, {}
        for unit in p.free:
            raw = sum(layer_keeps[n] * p.dense.size(n) for n in unit.layers) / p.unit_size(unit)
            keeps[unit.name] = clip_keep(unit.keep, raw, p.floor(unit))
            low, high = keep_bounds(unit.keep, p.floor(unit))
            if not low - 1e-12 <= raw <= high + 1e-12:
                clipped[unit.name] = (raw, keeps[unit.name])
        kept = self.fixed_kept + sum(keeps[u.name] * p.unit_size(u) for u in p.free)
        bits = problem_storage_bits(p, keeps, self.memo)
        levels = {u.name: p.levels.get(u.name) for u in p.units}
        return Prior(self.family, keeps, levels, bits, kept / self.total, None, clipped)


def prior_at_keep(family: str, problem: PriorProblem, keep: float) -> Prior:
    """``family``'s prior (one of :data:`ZERO_COST`) at overall keep ``keep`` in [0, 1]: the
    fixed units keep their own, the free ones share the rest by the family's rule, each then
    clipped to its range (so the result's ``overall_keep`` may differ from ``keep``).

    Raises:
        ValueError: an unknown family.
    """
    return _Family(family, problem).at(keep)


def prior_at_storage(family: str, problem: PriorProblem, target_bits: int) -> Prior:
    """``family``'s prior at the largest overall keep whose estimated storage (clipped to the
    ranges) stays within ``target_bits``, found by bisection on ``log k`` over ``[1/N, 1]``;
    the least keep's prior when even that exceeds the target.

    Raises:
        ValueError: an unknown family.
    """
    fam = _Family(family, problem)
    best = fam.at(1.0)
    if best.storage_bits > target_bits:
        low, high = math.log(1.0 / max(1, fam.total)), 0.0
        best = fam.at(math.exp(low))
        for _ in range(_BISECTIONS):
            middle = (low + high) / 2
            prior = fam.at(math.exp(middle))
            if prior.storage_bits <= target_bits:
                low, best = middle, prior
            else:
                high = middle
    return dataclasses.replace(best, target_bits=target_bits)


def prior_order(families: Sequence[str], targets: int) -> list[tuple[str, int]]:
    """``(family, target index)`` pairs in the order a study enqueues them: round ``r`` gives
    family ``f`` target ``(f + r) % targets``, so the first ``len(families)`` pairs already
    cover every family and every target.

    >>> prior_order(["global", "lamp", "erk"], 2)
    [('global', 0), ('lamp', 1), ('erk', 0), ('global', 1), ('lamp', 0), ('erk', 1)]
    """
    return [(f, (i + r) % targets) for r in range(targets) for i, f in enumerate(families)]
