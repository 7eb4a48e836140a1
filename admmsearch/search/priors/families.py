"""The zero-cost families layer by layer: global magnitude, LAMP, ERK and uniform, each a pure
function of the weights (or their shapes) and one overall keep ratio."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "erk_densities",
    "global_magnitude_keeps",
    "lamp_keeps",
    "lamp_scores",
    "ranked_keeps",
    "uniform_keeps",
]


def ranked_keeps(scores: Mapping[str, Tensor]) -> Callable[[float], dict[str, float]]:
    """keep -> each layer's share of the ``round(keep * N)`` highest ``scores`` of all layers
    (ties broken by layer order, then position), as a function; the scores are sorted once."""
    names = list(scores)
    flat = [scores[n].detach().reshape(-1).double().cpu().numpy() for n in names]
    sizes = np.array([f.size for f in flat], dtype=np.int64)
    layer_of = np.repeat(np.arange(len(names)), sizes)
    ranked = layer_of[np.argsort(-np.concatenate([np.zeros(0), *flat]), kind="stable")]

    def keeps(keep: float) -> dict[str, float]:
        count = min(len(ranked), max(0, math.floor(keep * len(ranked) + 0.5)))
        kept = np.bincount(ranked[:count], minlength=len(names))
        return {n: float(kept[i] / sizes[i]) for i, n in enumerate(names)}

    return keeps


def global_magnitude_keeps(weights: Mapping[str, Tensor], keep: float) -> dict[str, float]:
    """Each layer's keep ratio under one magnitude threshold over all ``weights``: the
    ``round(keep * N)`` largest ``|w|`` of the ``N`` weights survive.

    Args:
        weights: layer name -> weight tensor (any shape).
        keep: the overall fraction kept, in [0, 1].
    """
    return ranked_keeps({n: w.abs() for n, w in weights.items()})(keep)


def lamp_scores(weight: Tensor) -> Tensor:
    """LAMP scores of one layer's weights (Lee et al., ICLR 2021), float64, in its shape.

    With the weights sorted by magnitude ascending, ``|w_1| <= ... <= |w_n|``, weight ``u``
    scores ``w_u^2 / sum_{v >= u} w_v^2``; the largest scores 1. Zeros score 0.

    >>> lamp_scores(torch.tensor([3.0, 1.0, 2.0])).tolist() == [1.0, 1 / 14, 4 / 13]
    True
    """
    squares = weight.detach().double().reshape(-1) ** 2
    order = torch.argsort(squares, stable=True)
    ascending = squares[order]
    tail = torch.flip(torch.cumsum(torch.flip(ascending, [0]), 0), [0])  # sum over v >= u
    scores = torch.empty_like(squares)
    scores[order] = torch.where(tail > 0, ascending / tail.clamp_min(1e-300), 0.0)
    return scores.view(weight.shape)


def lamp_keeps(weights: Mapping[str, Tensor], keep: float) -> dict[str, float]:
    """Each layer's keep ratio under one global threshold on the LAMP scores
    (:func:`lamp_scores`): the ``round(keep * N)`` highest scores survive."""
    return ranked_keeps({n: lamp_scores(w) for n, w in weights.items()})(keep)


def erk_densities(shapes: Mapping[str, Sequence[int]], keep: float) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities (Evci et al., ICML 2020, section 3): layer ``l`` with
    weight dimensions ``d_1 .. d_m`` gets ``eps * sum(d) / prod(d)``, ``eps`` such that the
    layers keep ``keep * N`` weights; layers that would exceed density 1 are dense and ``eps``
    is solved again over the rest, until none does.

    Example: a linear (4, 2) (raw 6/8) and a conv (2, 2, 3, 3) (raw 10/36) keeping 8 of 44
    weights: ``eps * (6 + 10) = 8``, densities 0.375 and 5/36.

    >>> d = erk_densities({"fc": (4, 2), "conv": (2, 2, 3, 3)}, 8 / 44)
    >>> round(d["fc"], 6), round(d["conv"] * 36, 6)
    (0.375, 5.0)
    """
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / sizes[n] for n, s in shapes.items()}
    budget = keep * sum(sizes.values())
    dense: set[str] = set()
    while True:
        free = [n for n in shapes if n not in dense]
        rest = budget - sum(sizes[n] for n in dense)
        demand = sum(raw[n] * sizes[n] for n in free)
        eps = max(0.0, rest / demand) if demand else 0.0
        over = {n for n in free if eps * raw[n] > 1.0}
        if not over:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense |= over


def uniform_keeps(
    sizes: Mapping[str, int], keep: float, spared: Collection[str] = ()
) -> dict[str, float]:
    """One keep ratio for every layer but the ``spared``, which keep every weight, such that
    ``keep * N`` weights survive in all (the shared ratio held in [0, 1]).

    >>> uniform_keeps({"first": 10, "mid": 80, "last": 10}, 0.5, spared=("first", "last"))
    {'first': 1.0, 'mid': 0.375, 'last': 1.0}
    """
    rest = sum(n for name, n in sizes.items() if name not in spared)
    kept = keep * sum(sizes.values()) - sum(n for name, n in sizes.items() if name in spared)
    share = min(1.0, max(0.0, kept / rest)) if rest else 1.0
    return {name: 1.0 if name in spared else share for name in sizes}
