"""Ticks a person reads on a log axis: 1, 2, 5, 10, 20, 50 ... rather than decades alone.

A log axis labelled only at its decades (1, 10, 100 KiB) leaves a reader to guess every point
between them; at 1, 2 and 5 times each power of ten the labels stay few and round. A range
too narrow for three of them gets finer steps (1, 1.5, 2, 3, 4, 5, 7); one so wide that they
crowd gets decades, then every second or third decade.

An axis drawn over :func:`log_span` (the data widened to the round values around it, and a
little more) has a labelled tick beyond its outermost points, so no point lies where the axis
says nothing.

Example:
    >>> log_ticks(3.2, 150.0)
    [5.0, 10.0, 20.0, 50.0, 100.0]
    >>> log_ticks(*log_span(3.2, 150.0))
    [2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0]
    >>> [tick_label(t) for t in log_ticks(0.02, 1.0)]
    ['0.02', '0.05', '0.1', '0.2', '0.5', '1']
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import matplotlib.axes

__all__ = ["log_span", "log_ticks", "matplotlib_log_x", "plotly_log_x", "tick_label"]

_ROUND = (1.0, 2.0, 5.0)
_FINE = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)


def log_ticks(low: float, high: float, most: int = 10) -> list[float]:
    """Round ticks in ``[low, high]`` (both > 0) for a log axis: 1-2-5 per decade, finer
    where fewer than three fit, and whole decades (every k-th) where more than ``most``.

    Raises:
        ValueError: ``low`` or ``high`` is not a positive finite number.
    """
    if not (0 < low < math.inf and 0 < high < math.inf):
        raise ValueError(f"a log axis needs a positive range, got {low} to {high}")
    low, high = min(low, high), max(low, high)
    ticks = _ticks(low, high, _ROUND)
    if len(ticks) < 3:
        return _ticks(low, high, _FINE)
    if len(ticks) <= most:
        return ticks
    decades = _ticks(low, high, (1.0,))
    step = math.ceil(len(decades) / most)
    return decades[::step]


def log_span(low: float, high: float, margin: float = 1.05) -> tuple[float, float]:
    """The range a log axis over ``[low, high]`` (both > 0) is drawn on: from the largest of
    1, 2 and 5 times a power of ten at or below ``low`` to the smallest at or above ``high``,
    widened by the factor ``margin`` at each end (markers at the ends stay whole).

    Raises:
        ValueError: ``low`` or ``high`` is not a positive finite number.
    """
    if not (0 < low < math.inf and 0 < high < math.inf):
        raise ValueError(f"a log axis needs a positive range, got {low} to {high}")
    low, high = min(low, high), max(low, high)
    below = max(_ticks(low / 10, low, _ROUND))
    above = min(_ticks(high, high * 10, _ROUND))
    return below / margin, above * margin


def _ticks(low: float, high: float, mantissas: tuple[float, ...]) -> list[float]:
    """``m * 10**k`` for every mantissa ``m`` and decade ``k`` that falls in ``[low, high]``."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    candidates = (float(f"{m * 10.0**k:.12g}") for k in range(first, last + 1) for m in mantissas)
    return [t for t in candidates if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]


def tick_label(value: float) -> str:
    """A tick as a person writes it: ``0.05``, ``1.5``, ``20``, ``1,000``."""
    if value >= 1 and value == int(value):
        return f"{int(value):,}"
    return f"{value:g}"


def matplotlib_log_x(ax: matplotlib.axes.Axes, low: float, high: float) -> None:
    """Make ``ax``'s x axis a log axis over data from ``low`` to ``high``: drawn over
    :func:`log_span`, labelled at :func:`log_ticks` only (the minor ticks unlabelled)."""
    from matplotlib.ticker import NullFormatter

    span = log_span(low, high)
    ticks = log_ticks(*span)
    ax.set_xscale("log")
    ax.set_xlim(*span)
    ax.set_xticks(ticks, [tick_label(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def plotly_log_x(low: float, high: float) -> dict[str, Any]:
    """The arguments of plotly's ``update_xaxes`` for the same axis as
    :func:`matplotlib_log_x` (plotly gives a log axis's range in powers of ten)."""
    span = log_span(low, high)
    ticks = log_ticks(*span)
    return {
        "type": "log",
        "range": [math.log10(span[0]), math.log10(span[1])],
        "tickvals": ticks,
        "ticktext": [tick_label(t) for t in ticks],
    }
