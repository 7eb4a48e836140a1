"""Hard constraints as parametrizations (admmsearch.masking): pruned weights stay exactly zero
and frozen weights on their levels through any optimizer step; finalize leaves plain tensors."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from admmsearch.masking import (
    Masked,
    Quantized,
    codebook_parameters,
    finalize,
    mask_of,
    prune_,
    quantize_,
)


def _layer() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(6, 4)


def _steps(module: nn.Module, n: int = 5) -> None:
    """SGD with momentum and weight decay: what could move a pruned weight off zero."""
    opt = torch.optim.SGD(module.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(n):
        opt.zero_grad()
        module(torch.randn(8, 6)).pow(2).sum().backward()
        opt.step()


def test_pruned_weights_stay_exactly_zero_through_training() -> None:
    layer = _layer()
    mask = layer.weight.detach().abs() > 0.2
    prune_({"fc": layer}, {"fc": mask})
    assert isinstance(layer.parametrizations.weight[0], Masked)
    assert torch.equal(mask_of(layer), mask)
    before = layer.weight.detach().clone()
    _steps(layer)
    weight = layer.weight.detach()
    assert torch.all(weight[~mask] == 0) and not torch.equal(weight[mask], before[mask])


def test_frozen_weights_stay_on_their_levels_and_the_scale_learns() -> None:
    layer = _layer()
    levels = torch.tensor([-0.3, -0.1, 0.1, 0.3])
    q = quantize_(layer, levels, "scale", grid=torch.tensor([-3.0, -1.0, 1.0, 3.0]))
    assert isinstance(q, Quantized) and codebook_parameters(layer) == [q.scale]
    frozen = torch.zeros_like(layer.weight, dtype=torch.bool)
    frozen[:2] = True
    codes = torch.zeros_like(layer.weight, dtype=torch.long)
    q.freeze_(frozen, codes)
    scale = q.scale.detach().clone()
    _steps(layer)
    weight = layer.weight.detach()
    assert torch.allclose(weight[frozen], q.levels()[0].detach().expand(int(frozen.sum())))
    assert not torch.equal(q.scale.detach(), scale)  # the codebook keeps learning


def test_a_quantized_layer_keeps_its_pruning_mask() -> None:
    layer = _layer()
    mask = torch.rand(layer.weight.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    prune_({"fc": layer}, {"fc": mask})
    quantize_(layer, torch.tensor([-0.2, 0.2]), "centroids")
    assert torch.equal(mask_of(layer), mask)
    _steps(layer)
    assert torch.all(layer.weight.detach()[~mask] == 0)


def test_finalize_leaves_plain_weights_with_the_same_values() -> None:
    model = nn.Sequential(_layer(), nn.ReLU(), nn.Linear(4, 2))
    mask = model[0].weight.detach().abs() > 0.2
    prune_({"0": model[0]}, {"0": mask})
    effective = model[0].weight.detach().clone()
    finalize(model)
    assert not parametrize.is_parametrized(model[0])
    assert isinstance(model[0].weight, nn.Parameter)
    assert torch.equal(model[0].weight.detach(), effective) and mask_of(model[0]) is None
