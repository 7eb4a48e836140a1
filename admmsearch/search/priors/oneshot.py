"""Zero-cost ranking of the families at a storage target: a prior's one-shot accuracy.

The knee search (:mod:`.placement`) judges a target by the prior it trains there, so the
family that probes a target decides whether the target looks feasible: a family that keeps
less of the network's accuracy at that storage (ERK or uniform on LeNet-5, for example) makes
a target the others meet look past the knee, and the study's front stops short of where the
baselines go. Before a target is probed, each family's prior there is scored by the
validation accuracy of the dense model pruned to the prior's keeps by weight magnitude, with
no training (one forward pass over the validation split), and the best goes first. The
one-shot accuracy ranks the families as their retrained sweeps do (README, "Front quality"),
and it costs no training epochs.

Quantization levels are not applied: the families differ in where they keep weights, and
they share each unit's levels (the ``sensitivity`` family aside).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ...config import UnitSpace, is_searched
from ...errors import ConstraintError
from ...plan import LayerPlan
from ...train import evaluate
from .allocate import Prior

__all__ = ["one_shot_scorer"]


def one_shot_scorer(
    model: nn.Module, units: Sequence[UnitSpace], x_val: torch.Tensor, y_val: torch.Tensor
) -> Callable[[Prior], float]:
    """A function giving a prior's one-shot validation accuracy (a fraction in [0, 1]).

    Each free unit's layers are pruned to the prior's keep, a unit with a fixed keep to that
    keep, by the pipeline's own magnitude masks (structured units by whole filters or rows);
    the model is put back to its dense weights before each score.

    Args:
        model: the dense model (BatchNorm folded where the pipeline folds it), on the device
            of ``x_val``; it is used in place, so pass a copy.
        units: the study's units (:func:`admmsearch.config.unit_spaces`).
        x_val, y_val: the validation split.

    Returns:
        ``score(prior)``; 0 for a prior whose keeps no layer can hold (a keep under one
        weight), which the pipeline would refuse.
    """
    dense = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    by_name = {u.name: u for u in units}

    def score(prior: Prior) -> float:
        model.load_state_dict(dense)
        try:
            with torch.no_grad():
                for name, keep in _keeps(prior, by_name).items():
                    unit = by_name[name]
                    for layer in unit.layers:
                        _prune(modules[layer], keep, unit.structured)
        except ConstraintError:
            return 0.0
        return evaluate(model, x_val, y_val)

    return score


def _keeps(prior: Prior, units: Mapping[str, UnitSpace]) -> dict[str, float]:
    """Each pruned unit's keep by name: the prior's for the free units, the study file's for
    the fixed ones."""
    keeps = {name: float(keep) for name, keep in prior.keeps.items()}
    for name, unit in units.items():
        if name not in keeps and not is_searched(unit.keep) and unit.keep is not None:
            keeps[name] = float(unit.keep)
    return {name: keep for name, keep in keeps.items() if keep < 1.0}


def _prune(module: nn.Module, keep: float, structured: bool) -> None:
    """Zero ``module``'s weights outside the magnitude mask of ``keep`` (structured: whole
    output channels along the weight's first axis)."""
    sparsity = LayerPlan(keep=keep, structured=structured).sparsity()
    if sparsity is not None:
        weight = module.weight
        weight.mul_(sparsity.mask(weight).to(weight.dtype))
