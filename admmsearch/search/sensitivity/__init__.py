"""Per-layer sensitivity: how much validation accuracy each unit loses when it alone is pruned
by magnitude or quantized, the other layers untouched and nothing retrained.

For every unit of a study (a layer, or a group of tied layers) two curves are measured: its
accuracy with the unit pruned to each keep ratio of a grid (``keep_points`` values spread over
its searched range, log-spaced when the range is; survivors in float32), and with every weight
kept but rounded to each bit width (or cluster count) of its choices; keep 1.0 with no
quantization is measured too, as the reference, and gives the dense accuracy. A point is
measured by setting the unit's weights to their projection (exactly the pipeline's hard
projections), running the validation images forward once and putting the weights back. Every
row carries the unit's storage with indices at that point by the storage accounting itself
(:func:`admmsearch.packed._accounting.layer_storage`; biases raw).

The points of the search space off the two curves (pruned *and* quantized) are predicted: their
accuracy drop is the sum of the two curves' drops (the additive model of sensitivity analyses),
their storage is accounted on the real magnitude mask with every level in use, an upper bound
of the projection's (which may leave a level unused) that needs no fitting.
:mod:`admmsearch.search.allocation` budgets these rows.

The pass costs forward passes on (at most ``samples`` images of) the validation split only:
``units x (keeps + levels)`` of them. As an option (:class:`Finetune`), each measured point is
first fine-tuned for a few SGD steps with the unit held on its mask and levels, which measures
how much of the loss retraining recovers, at the cost of those steps per point. The result is
cached (JSON) under the fingerprint of the dense model and of the grid, so a study and all of
its workers compute it once.
"""

from __future__ import annotations

from .cache import cached_sensitivity, sensitivity_key
from .grid import GridPoint, grid_points, keep_grid, level_grid
from .measure import Finetune, measure
from .table import COLUMNS, Sensitivity

__all__ = [
    "COLUMNS",
    "Finetune",
    "GridPoint",
    "Sensitivity",
    "cached_sensitivity",
    "grid_points",
    "keep_grid",
    "level_grid",
    "measure",
    "sensitivity_key",
]
