"""Which points of a unit are measured: keep ratios spread over its range, its level choices,
the two curves through the reference (keep 1.0, float32) and the joint points of the space."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...config import Choices, FloatRange, IntRange, UnitSpace

__all__ = ["GridPoint", "grid_points", "keep_grid", "level_grid"]


def keep_grid(spec: Any, points: int) -> tuple[float, ...]:
    """Keep ratios to measure for a keep knob: ``points`` spread over a range (geometrically
    for a log range, on its steps for a stepped one), the choices, or the fixed value."""
    if isinstance(spec, Choices):
        values = [float(c) for c in spec.choices]
    elif isinstance(spec, FloatRange):
        values = _spread(spec, points)
    else:
        values = [float(spec)]
    return tuple(sorted(set(values)))


def _spread(spec: FloatRange, points: int) -> list[float]:
    low, high = float(spec.low), float(spec.high)
    grid = np.geomspace(low, high, points) if spec.log else np.linspace(low, high, points)
    if spec.step is None:  # 4 significant digits, inside the range
        return [min(high, max(low, float(f"{x:.4g}"))) for x in grid]
    top = math.floor((high - low) / spec.step + 1e-9)  # the last step inside the range
    steps = np.clip(np.round((grid - low) / spec.step), 0, top)
    return [round(low + k * spec.step, 12) for k in steps]


def level_grid(spec: Any, points: int = 8) -> tuple[int | None, ...]:
    """Bits or cluster counts to measure: the choices, the values of a range (``points`` of
    them spread over it, on its steps, when it holds more), or the fixed value; None (float32)
    sorts last."""
    if isinstance(spec, Choices):
        values = list(spec.choices)
    elif isinstance(spec, IntRange):
        values = list(range(spec.low, spec.high + 1, spec.step))
        if len(values) > points:
            spread = np.geomspace if spec.log else np.linspace
            targets = spread(spec.low, values[-1], points)
            values = [min(values, key=lambda v, t=t: abs(v - t)) for t in targets]
    else:
        values = [spec]
    return tuple(sorted(set(values), key=lambda v: (v is None, v or 0)))


@dataclass(frozen=True)
class GridPoint:
    """One point of a unit's grid: measured (a curve point) or predicted (a joint point)."""

    keep: float
    levels: int | None
    measured: bool
    in_space: bool


def grid_points(unit: UnitSpace, points: int) -> list[GridPoint]:
    """Every point of ``unit``'s table: the pruning curve (each keep ratio, float32), the
    quantization curve (each level count, keep 1.0) and the reference (1.0, None) are
    measured; the other points of the search space (keep < 1 with levels) are predicted."""
    keeps, levels = keep_grid(unit.keep, points), level_grid(unit.levels, points)
    all_keeps = sorted(set(keeps) | {1.0})
    all_levels = sorted(set(levels) | {None}, key=lambda v: (v is None, v or 0))
    out = []
    for k in all_keeps:
        for v in all_levels:
            measured = k == 1.0 or v is None
            in_space = k in keeps and v in levels
            if measured or in_space:
                out.append(GridPoint(k, v, measured, in_space))
    return out
