"""The zero-cost ranking of the families at a target (search.priors.oneshot): a prior's
validation accuracy after magnitude pruning with no training, worked out by hand."""

from __future__ import annotations

import torch
from torch import nn

from admmsearch.config import UnitSpace
from admmsearch.search.priors import Prior
from admmsearch.search.priors.oneshot import one_shot_scorer


def _prior(keep: float) -> Prior:
    return Prior("global", {"fc": keep}, {"fc": None}, storage_bits=0, overall_keep=keep)


def test_a_prior_scores_its_one_shot_accuracy_and_the_model_is_put_back() -> None:
    """fc maps e0 to (3, 0.2) and e1 to (0.1, 2): both right. Keeping 2 of its 4 weights
    keeps 3 and 2 (both right); keeping 1 keeps 3 alone, so e1 scores (0, 0), class 0:
    wrong."""
    model = nn.Sequential()
    model.add_module("fc", nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[3.0, 0.1], [0.2, 2.0]]))
    dense = model.fc.weight.detach().clone()
    x, y = torch.eye(2), torch.tensor([0, 1])
    unit = UnitSpace("fc", ("fc",), keep=None, quantizer="bits", levels=None, structured=False)
    score = one_shot_scorer(model, [unit], x, y)
    assert score(_prior(0.5)) == 1.0
    assert score(_prior(0.25)) == 0.5
    assert score(_prior(1.0)) == 1.0  # the dense weights are back before each score
    assert torch.equal(model.fc.weight, dense)
    assert score(_prior(0.1)) == 0.0  # no weight left: the pipeline would refuse it


def test_a_fixed_unit_is_pruned_to_its_fixed_keep() -> None:
    model = nn.Sequential()
    model.add_module("a", nn.Linear(2, 2, bias=False))
    model.add_module("fc", nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model.a.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.5]]))
        model.fc.weight.copy_(torch.eye(2))
    free = UnitSpace("fc", ("fc",), keep=None, quantizer="bits", levels=None, structured=False)
    fixed = UnitSpace("a", ("a",), keep=0.25, quantizer="bits", levels=None, structured=False)
    x, y = torch.eye(2), torch.tensor([0, 1])
    assert one_shot_scorer(model, [free], x, y)(_prior(1.0)) == 1.0
    # a keeps its 1.0 alone: e1 maps to (0, 0), class 0
    assert one_shot_scorer(model, [fixed, free], x, y)(_prior(1.0)) == 0.5
