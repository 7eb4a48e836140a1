"""Hard constraints as parametrizations: pruned weights stay zero, quantized ones stay on levels.

The effective weight is computed from the trained one on every forward pass, so neither momentum
nor weight decay can move a pruned weight off zero or a frozen weight off its level: the
optimizer only ever sees the free entries. ``finalize`` makes the result permanent and leaves
plain tensors behind, ready for storage accounting and packing.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = [
    "Masked",
    "Quantized",
    "codebook_parameters",
    "finalize",
    "mask_of",
    "prune_",
    "quantize_",
]


class Masked(nn.Module):
    """Effective weight = ``weight`` on the boolean ``mask``, exactly +0.0 elsewhere."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().clone().bool())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.where(
            self.mask, weight, torch.zeros((), dtype=weight.dtype, device=weight.device)
        )


class Quantized(nn.Module):
    """Frozen entries take ``(scale / unit) * grid[codes]``; the others stay free; pruned ones
    stay zero.

    The codebook is learned: for uniform quantization only the shared ``scale`` is a parameter
    (the levels stay evenly spaced); for clustering the centroids (``grid``) are parameters, each
    moved by the summed gradient of the weights that share it. Growing ``frozen`` round by round
    is the iterative quantization of the pipeline.

    Given the integer multipliers ``grid`` of a uniform quantizer, the grid keeps them and
    ``unit`` is their largest magnitude, so every level is the float32 product of one step
    (``scale / unit``) and an integer: exactly what the packed file stores and a decoder
    rebuilds. ``scale`` is the largest level (as for centroids, ``unit`` 1), which keeps its
    gradient, and so its learning rate, the same for every bit width.
    """

    def __init__(
        self,
        mask: torch.Tensor,
        levels: torch.Tensor,
        learn: str,
        grid: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if learn not in ("scale", "centroids", "none"):
            raise ValueError(f"learn must be 'scale', 'centroids' or 'none', got {learn!r}")
        self.register_buffer("mask", mask.detach().clone().bool())
        self.register_buffer("frozen", torch.zeros_like(self.mask))
        self.register_buffer(
            "codes", torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
        )
        levels = levels.detach()
        top = levels.abs().max().clamp_min(torch.finfo(levels.dtype).tiny)
        if grid is None:
            grid, unit = levels / top, torch.ones((), dtype=levels.dtype)
        else:
            grid = grid.detach().to(levels)
            unit = grid.abs().max().clamp_min(1)
        self.register_buffer("unit", unit.reshape(1).to(levels).clone())
        self.grid = nn.Parameter(grid.clone(), requires_grad=learn == "centroids")
        self.scale = nn.Parameter(top.reshape(1).clone(), requires_grad=learn == "scale")

    def levels(self) -> torch.Tensor:
        return (self.scale / self.unit) * self.grid

    def freeze_(self, entries: torch.Tensor, codes: torch.Tensor) -> None:
        """Put ``entries`` (boolean, inside the mask) on the levels given by ``codes``."""
        entries = entries & self.mask
        self.codes[entries] = codes[entries]
        self.frozen |= entries

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.grid.requires_grad:  # centroids learn: gather from the levels
            on_level = self.levels().to(weight.dtype)[self.codes]
        else:  # only the scale learns: gather the fixed grid, then scale (a cheap backward)
            step = (self.scale / self.unit).to(weight.dtype)
            on_level = step * self.grid.to(weight.dtype)[self.codes]
        out = torch.where(self.frozen, on_level, weight)
        return torch.where(
            self.mask, out, torch.zeros((), dtype=weight.dtype, device=weight.device)
        )


def _only(module: nn.Module) -> nn.Module | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return module.parametrizations.weight[0]


def mask_of(module: nn.Module) -> torch.Tensor | None:
    """The pruning mask a module carries, or None when it is not pruned."""
    p = _only(module)
    return None if p is None else p.mask


def prune_(layers: Mapping[str, nn.Module], masks: Mapping[str, torch.Tensor]) -> None:
    """Hard-prune in place: zero the weights outside each mask and keep them zero from now on."""
    for name, mask in masks.items():
        module = layers[name]
        _remove(module)
        with torch.no_grad():
            module.weight.masked_fill_(~mask, 0.0)
        parametrize.register_parametrization(module, "weight", Masked(mask))


def quantize_(
    module: nn.Module, levels: torch.Tensor, learn: str, grid: torch.Tensor | None = None
) -> Quantized:
    """Replace a module's parametrization by a Quantized one over its current mask; ``grid``
    gives a uniform quantizer's integer multipliers (see :class:`Quantized`)."""
    mask = mask_of(module)
    if mask is None:
        mask = torch.ones_like(module.weight, dtype=torch.bool)
    _remove(module)
    device = module.weight.device
    q = Quantized(mask, levels.to(device), learn, None if grid is None else grid.to(device))
    parametrize.register_parametrization(module, "weight", q)
    return q


def codebook_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learned scales and centroids (kept out of weight decay)."""
    return [
        p
        for m in model.modules()
        if isinstance(m, Quantized)
        for p in (m.grid, m.scale)
        if p.requires_grad
    ]


def _remove(module: nn.Module) -> None:
    if parametrize.is_parametrized(module, "weight"):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def finalize(model: nn.Module) -> nn.Module:
    """Make every parametrization permanent: plain weights with exact zeros and exact levels."""
    for module in list(model.modules()):
        _remove(module)
    return model
