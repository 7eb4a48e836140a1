"""Zero-cost allocation priors: per-unit keep ratios for a target overall keep or storage,
from the dense weights alone (no data, no training; seconds at most).

A *family* spreads one overall keep ratio ``k`` (kept weights over all compressible weights)
over the layers:

* ``global``: global magnitude pruning, one magnitude threshold over all layers: the
  ``round(k * N)`` weights of largest ``|w|`` survive wherever they are (the "global magnitude
  pruning" baseline of Blalock et al., "What is the state of neural network pruning?", MLSys
  2020).
* ``lamp``: LAMP (Lee et al., "Layer-adaptive sparsity for the magnitude-based pruning", ICLR
  2021): with a layer's weights sorted by magnitude ascending, ``|w_1| <= ... <= |w_n|``, weight
  ``u`` scores ``w_u^2 / sum_{v >= u} w_v^2`` (:func:`lamp_scores`); one global threshold on
  the scores. A layer's largest weight scores 1, so no layer is emptied.
* ``erk``: Erdős–Rényi-Kernel (Evci et al., "Rigging the Lottery: Making All Tickets Winners",
  ICML 2020, section 3, "Sparsity distribution"): the density of a layer whose weight has
  dimensions ``d_1 .. d_m`` is ``eps * (d_1 + ... + d_m) / (d_1 * ... * d_m)``, ``eps`` scaled
  so the layers keep ``k * N`` weights; a layer whose density would exceed 1 is kept dense and
  ``eps`` is solved again for the others (:func:`erk_densities`).
* ``uniform``: the units holding the model's first and last compressible layers keep every
  weight; the others share one keep ratio that meets ``k`` (:func:`uniform_keeps`).
* ``sensitivity``: the exact allocator of :mod:`admmsearch.allocation` over the sensitivity
  table, which also picks bits (:func:`admmsearch.seeding.sensitivity_prior`).

Units (a layer, or a group of tied layers: :func:`admmsearch.config.unit_spaces`) get the
share of their layers' weights that the family keeps. A unit whose keep is fixed in the study
file is left out: its weights count at their fixed keep and the free units share the rest.
Each free unit's keep is then put inside its search range (:func:`clip_keep`); a keep that was
outside is recorded in :attr:`Prior.clipped`. Storage is estimated by the storage accounting
(:func:`estimated_storage_bits`), and a storage target is met by bisection on ``k``
(:func:`prior_at_storage`).

The formulas are in :mod:`.families`, the units, ranges, levels and storage estimate in
:mod:`.problem`, a family's prior for a keep or a storage target in :mod:`.allocate`; the
study's first trials are made from them by :mod:`admmsearch.seeding`.

Worked example: layers ``a`` with weights (1, 2, 3) and ``b`` with (0.5, 0.5), keeping 3 of
the 5 weights. Global magnitude keeps 3, 2 and 1, all of ``a``. LAMP scores ``a`` as
(1/14, 4/13, 1) and ``b`` as (0.5, 1): the three best are ``a``'s 3 and both of ``b``.

>>> import torch
>>> w = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([0.5, 0.5])}
>>> global_magnitude_keeps(w, 0.6)
{'a': 1.0, 'b': 0.0}
>>> {n: round(k, 3) for n, k in lamp_keeps(w, 0.6).items()}
{'a': 0.333, 'b': 1.0}
"""

from __future__ import annotations

from ...config import PRIOR_FAMILIES
from .allocate import ZERO_COST, Prior, prior_at_keep, prior_at_storage, prior_order
from .families import (
    erk_densities,
    global_magnitude_keeps,
    lamp_keeps,
    lamp_scores,
    ranked_keeps,
    uniform_keeps,
)
from .problem import (
    DenseLayers,
    PriorProblem,
    clip_keep,
    estimated_storage_bits,
    keep_bounds,
    stand_in_weight,
    storage_range,
    storage_targets,
    unit_levels,
)

__all__ = [
    "FAMILIES",
    "ZERO_COST",
    "DenseLayers",
    "Prior",
    "PriorProblem",
    "clip_keep",
    "erk_densities",
    "estimated_storage_bits",
    "global_magnitude_keeps",
    "keep_bounds",
    "lamp_keeps",
    "lamp_scores",
    "prior_at_keep",
    "prior_at_storage",
    "prior_order",
    "ranked_keeps",
    "stand_in_weight",
    "storage_range",
    "storage_targets",
    "uniform_keeps",
    "unit_levels",
]

#: Every family, in the order a study's first trials take them.
FAMILIES = PRIOR_FAMILIES
