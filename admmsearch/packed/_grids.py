"""Uniform grids read from values: a float32 scale and integer levels that give them exactly.

``uniform_levels(values)`` answers whether some float32 ``s`` and small integers ``q`` have
``float32(s * q) == values`` bit for bit, the test that lets the storage accounting charge a
uniformly quantized layer one scale instead of a codebook (see :mod:`admmsearch.packed._coding`).
Example::

    >>> import numpy as np
    >>> scale, levels = uniform_levels(np.array([0.5, 1.0, 1.5], dtype=np.float32))
    >>> float(np.uint32(scale).view(np.float32)), levels.tolist()
    (0.5, [1, 2, 3])
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_UNIFORM_LEVELS", "uniform_levels"]

#: Uniform grids are looked for only up to this many distinct values (16-bit codes).
MAX_UNIFORM_LEVELS = 1 << 16
_MAX_LEVEL = 1 << 24  # |q| below this converts to float32 exactly


def uniform_levels(values: np.ndarray) -> tuple[int, np.ndarray] | None:
    """A float32 scale ``s`` and integer levels ``q`` with ``float32(s * q) == values`` exactly.

    ``values`` are distinct float32 (any order, ``+0.0`` allowed); the scale is positive and as
    large as found (small levels); ``|q| < 2**24``. The levels relative to the smallest value
    come first, from differences (exact in float64), over a window that grows while least
    squares sharpens the step; then the smallest value's own level. Only a scale that
    reproduces every value bit for bit is returned.

    Returns:
        ``(scale bit pattern as uint32, levels as int64 in the order of values)``, or None.
    """
    x = np.asarray(values, dtype=np.float32).reshape(-1)
    if x.size == 0 or x.size > MAX_UNIFORM_LEVELS + 1 or not np.all(np.isfinite(x)):
        return None
    order = np.argsort(x.astype(np.float64), kind="stable")
    wide = x.astype(np.float64)[order]
    if not wide.any() or (wide.size > 1 and np.diff(wide).min() <= 0):
        return None  # only zeros, or +0.0 and -0.0 both
    step, relative = _relative_levels(wide)
    if step is None:
        return None
    levels = _absolute_levels(wide, step, relative)
    if levels is None:
        return None
    for _ in range(2):  # least squares on every value, then the levels it implies
        scale = float((wide * levels).sum() / (levels * levels).sum())
        levels = np.rint(wide / scale)
    if scale <= 0 or np.abs(levels).max() >= _MAX_LEVEL:
        return None
    unsorted = np.empty_like(levels)
    unsorted[order] = levels
    return _exact(x, unsorted.astype(np.int64), scale)


def _near_integers(ratio: np.ndarray) -> np.ndarray | None:
    """The nearest integers to ``ratio`` when all lie within 0.05 of them, else None."""
    levels = np.rint(ratio)
    if np.abs(levels).max(initial=0) >= _MAX_LEVEL or np.any(np.abs(ratio - levels) >= 0.05):
        return None
    return levels


def _relative_levels(wide: np.ndarray) -> tuple[float | None, np.ndarray]:
    """Step and integer levels of sorted ``wide`` relative to its first value (or None).

    The step starts as the smallest gap; a window of values is read in it, the step refined by
    least squares, and the window widened fourfold. A gap that is not a whole number of steps
    (a grid that skips levels around zero, say) divides the step by a small integer first.
    """
    diffs = wide - wide[0]
    if wide.size == 1:
        return abs(float(wide[0])), np.zeros(1)
    step = float(np.diff(wide).min())
    reach = 4 * step
    while True:
        inside = diffs <= reach
        for denominator in range(1, 9):
            relative = _near_integers(diffs[inside] * denominator / step)
            if relative is not None:
                step /= denominator
                break
        else:
            return None, diffs
        if relative.any():
            step = float((diffs[inside] * relative).sum() / (relative * relative).sum())
        if inside.all():
            return step, np.rint(diffs / step)
        reach *= 4


def _absolute_levels(wide: np.ndarray, step: float, relative: np.ndarray) -> np.ndarray | None:
    """Levels of every value: the first value's level (a multiple of step / p) plus the rest."""
    first = float(wide[0]) / step
    for denominator in range(1, 9):
        base = _near_integers(np.array([first * denominator]))
        if base is not None:
            levels = base[0] + denominator * relative
            return None if not levels.any() else levels
    return None


def _exact(x: np.ndarray, levels: np.ndarray, scale: float) -> tuple[int, np.ndarray] | None:
    """The float32 near ``scale`` that reproduces ``x`` from ``levels``, made as large as the
    levels' common power-of-two factor allows; None if no near float32 does."""
    q = levels.astype(np.float32)
    for s in _around(np.float32(scale), 4):
        if s > 0 and np.array_equal((s * q).view(np.uint32), x.view(np.uint32)):
            return _reduce(x, levels, s)
    return None


def _around(center: np.float32, steps: int) -> list[np.float32]:
    """``center`` and the ``steps`` float32 neighbours on each side, nearest first."""
    out, up, down = [center], center, center
    for _ in range(steps):
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(-np.inf))
        out += [up, down]
    return out


def _reduce(x: np.ndarray, levels: np.ndarray, scale: np.float32) -> tuple[int, np.ndarray]:
    """Fold the levels' common power-of-two factor into the scale (exact in float32)."""
    common = int(np.gcd.reduce(np.abs(levels)))
    while common > 1 and common % 2 == 0:
        bigger, halved = np.float32(scale * 2), levels // 2
        if not np.array_equal(
            (bigger * halved.astype(np.float32)).view(np.uint32), x.view(np.uint32)
        ):
            break
        scale, levels, common = bigger, halved, common // 2
    return int(np.float32(scale).view(np.uint32)), levels
