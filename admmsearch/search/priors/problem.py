"""What the priors allocate: the dense layers, the study's units and their ranges and levels,
and the storage estimate a storage target is measured with."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...config import Choices, FloatRange, IntRange, UnitSpace, is_searched
from ...models import compressible_layers, output_channels
from ...packed import layer_storage, model_storage
from ...plan import LayerPlan

__all__ = [
    "DenseLayers",
    "PriorProblem",
    "clip_keep",
    "estimated_storage_bits",
    "keep_bounds",
    "layer_bits",
    "problem_storage_bits",
    "stand_in_weight",
    "storage_range",
    "storage_targets",
    "unit_levels",
]


@dataclass(frozen=True)
class DenseLayers:
    """A dense model's compressible layers as the priors need them.

    Attributes:
        weights: layer -> weight, CPU float32, in model order.
        biases: layer -> bias (None without one).
        channels: layer -> ``(axis, groups)`` of its output channels (structured pruning).
        other_bits: raw bits of every other tensor of the model.
        index_format: the storage accounting's sparse index format.
    """

    weights: Mapping[str, Tensor]
    biases: Mapping[str, Tensor | None]
    channels: Mapping[str, tuple[int, int]]
    other_bits: int
    index_format: str = "gap"

    @classmethod
    def of(cls, model: nn.Module, layers: Sequence[str], index_format: str = "gap") -> DenseLayers:
        """The ``layers`` of ``model`` (copied to the CPU; the model is left as it is)."""
        modules = compressible_layers(model, list(layers))
        return cls(
            weights={n: m.weight.detach().float().cpu().clone() for n, m in modules.items()},
            biases={n: _bias(m) for n, m in modules.items()},
            channels={n: output_channels(m) for n, m in modules.items()},
            other_bits=model_storage(model, list(modules), index_format).other_bits,
            index_format=index_format,
        )

    def size(self, layer: str) -> int:
        """Weights of ``layer``."""
        return self.weights[layer].numel()


def _bias(module: nn.Module) -> Tensor | None:
    bias = getattr(module, "bias", None)
    return bias.detach().float().cpu().clone() if isinstance(bias, Tensor) else None


@dataclass(frozen=True)
class PriorProblem:
    """What the priors allocate: the dense layers, the study's units and each unit's levels
    (bits or clusters; None: float32), which the storage estimates assume."""

    dense: DenseLayers
    units: tuple[UnitSpace, ...]
    levels: Mapping[str, int | None]

    @property
    def free(self) -> tuple[UnitSpace, ...]:
        """The units whose keep is searched."""
        return tuple(u for u in self.units if is_searched(u.keep))

    def unit_size(self, unit: UnitSpace) -> int:
        return sum(self.dense.size(layer) for layer in unit.layers)

    def floor(self, unit: UnitSpace) -> float:
        """The least keep that leaves one weight (or output channel) in each of its layers."""
        return max(
            1.0 / _prunable_count(self.dense, layer, unit.structured) for layer in unit.layers
        )


def _prunable_count(dense: DenseLayers, layer: str, structured: bool) -> int:
    weight = dense.weights[layer]
    if not structured:
        return weight.numel()
    axis, groups = dense.channels[layer]
    return weight.shape[axis] * (groups if axis == 1 else 1)


def clip_keep(spec: Any, keep: float, floor: float = 0.0) -> float:
    """``keep`` inside a keep knob's values: a range's ``[max(low, floor), high]`` (rounded to
    4 significant digits, or onto its ``step``), the choice nearest on a log scale (of those at
    least ``floor``), or a fixed knob's value.

    >>> clip_keep(FloatRange(low=0.3, high=1.0), 0.05)
    0.3
    >>> clip_keep(FloatRange(low=0.02, high=1.0), 0.123456)
    0.1235
    >>> clip_keep(Choices(choices=(0.1, 0.5, 1.0)), 0.3)
    0.5
    """
    if isinstance(spec, Choices):
        allowed = [c for c in spec.choices if c >= floor] or [max(spec.choices)]
        return min(allowed, key=lambda c: abs(math.log(c) - math.log(max(keep, 1e-12))))
    if not isinstance(spec, FloatRange):
        return spec
    low = min(spec.high, max(spec.low, floor))
    value = min(spec.high, max(low, float(f"{keep:.4g}")))
    if spec.step is None:
        return value
    first = math.ceil((low - spec.low) / spec.step - 1e-9)
    last = math.floor((spec.high - spec.low) / spec.step + 1e-9)
    k = min(last, max(first, round((value - spec.low) / spec.step)))
    return round(spec.low + k * spec.step, 12)


def keep_bounds(spec: Any, floor: float) -> tuple[float, float]:
    """The least and largest keep a knob allows (at least ``floor``)."""
    if isinstance(spec, Choices):
        return max(min(spec.choices), floor), max(spec.choices)
    return max(spec.low, floor), spec.high


def unit_levels(unit: UnitSpace, within: Mapping[str, int | None] | None = None) -> int | None:
    """The bits (or clusters) a zero-cost prior gives ``unit``: its fixed value when the knob is
    fixed; else, with ``within`` (unit -> the fewest levels within 1 point of the dense
    accuracy in the sensitivity pass, :meth:`admmsearch.sensitivity.Sensitivity.summary`), that
    value, or the most its knob allows (float32 where None is a choice) when none was within;
    else the middle of its numeric values (the lower middle of an even count).
    """
    spec = unit.levels
    if not is_searched(spec):
        return spec
    values = list(spec.choices) if isinstance(spec, Choices) else _range_values(spec)
    numbers = sorted(v for v in values if v is not None)
    if within is not None and unit.name in within:
        found = within[unit.name]
        if found is not None and found in values:
            return found
        return None if None in values else numbers[-1]
    return numbers[(len(numbers) - 1) // 2] if numbers else None


def _range_values(spec: IntRange) -> list[int]:
    return list(range(spec.low, spec.high + 1, spec.step))


# --- storage ---


def stand_in_weight(weight: Tensor, plan: LayerPlan, channels: tuple[int, int] = (0, 1)) -> Tensor:
    """``weight`` pruned by magnitude to ``plan.keep``, its survivors replaced by as many
    distinct values as ``plan``'s levels (``2**bits`` or ``clusters``; the survivors themselves
    in float32): what the storage accounting sees of the compressed layer, without fitting any
    levels (the estimate :mod:`admmsearch.sensitivity` makes for its predicted points)."""
    sparsity = plan.sparsity(*channels)
    mask = torch.ones_like(weight, dtype=torch.bool) if sparsity is None else sparsity.mask(weight)
    levels = 2**plan.bits if plan.bits is not None else plan.clusters
    if levels is None:
        return torch.where(mask, weight, torch.zeros_like(weight))
    survivors = int(mask.sum())
    out = torch.zeros(weight.shape, dtype=torch.float32)
    out[mask] = (torch.arange(survivors) % min(levels, survivors) + 1).to(torch.float32)
    return out


def estimated_storage_bits(dense: DenseLayers, plans: Mapping[str, LayerPlan]) -> int:
    """The model's storage with indices, in bits, with each layer compressed to its plan (a
    layer without one stays dense float32): the accounting's payload (stored weights, raw
    biases and every other tensor) on :func:`stand_in_weight` copies of the dense weights."""
    plain = LayerPlan()
    return dense.other_bits + sum(layer_bits(dense, n, plans.get(n, plain)) for n in dense.weights)


def layer_bits(dense: DenseLayers, name: str, plan: LayerPlan) -> int:
    """One layer's stored bits (with indices) and raw bias bits under ``plan``."""
    stand_in = stand_in_weight(dense.weights[name], plan, dense.channels[name])
    stored = layer_storage(name, stand_in, dense.biases[name], dense.index_format)
    return stored.stored_bits + stored.bias_bits


def storage_range(problem: PriorProblem) -> tuple[int, int]:
    """The estimated storage (bits) with every free unit at the least keep its range allows,
    and at the largest, the fixed units at their keep and every unit at its levels."""
    ends = []
    for pick in (0, 1):
        keeps = {u.name: keep_bounds(u.keep, problem.floor(u))[pick] for u in problem.free}
        ends.append(problem_storage_bits(problem, keeps, {}))
    return ends[0], ends[1]


def storage_targets(low_bits: int, high_bits: int, count: int) -> list[int]:
    """``count`` storage targets (bits) log-spaced strictly between ``low_bits`` and
    ``high_bits`` (the ends left out), ascending; fewer when they coincide once rounded.

    >>> storage_targets(1000, 16000, 3)
    [2000, 4000, 8000]
    """
    if count < 1 or high_bits <= low_bits:
        return []
    grid = np.geomspace(low_bits, high_bits, count + 2)[1:-1]
    return sorted({round(float(b)) for b in grid})


def problem_storage_bits(problem: PriorProblem, keeps: Mapping[str, float], memo: dict) -> int:
    """Estimated bits (:func:`estimated_storage_bits`) with the free units at ``keeps``, the
    fixed ones at their own keep; ``memo`` holds the layers' bits by plan across calls."""
    bits = problem.dense.other_bits
    for unit in problem.units:
        keep = keeps[unit.name] if is_searched(unit.keep) else unit.keep
        levels = {unit.quantizer: problem.levels.get(unit.name)}
        plan = LayerPlan(keep=keep, structured=unit.structured, **levels)
        for layer in unit.layers:
            if (layer, plan) not in memo:
                memo[layer, plan] = layer_bits(problem.dense, layer, plan)
            bits += memo[layer, plan]
    return bits
