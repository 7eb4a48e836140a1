"""Measuring a unit's curves on the dense model and predicting its joint points."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...config import UnitSpace
from ...data import DataSplits, batches
from ...errors import AdmmSearchError, ConstraintError
from ...models import compressible_layers
from ...packed import layer_storage, model_storage
from ...plan import LayerPlan
from ...train import evaluate
from .grid import GridPoint, grid_points
from .table import Sensitivity

__all__ = ["Finetune", "measure"]


@dataclass(frozen=True)
class Finetune:
    """A short masked fine-tune of every measured point before it is evaluated: ``steps``
    SGD steps (momentum 0.9, cross-entropy, batches of ``batch_size`` training samples drawn
    with ``seed``) on the whole network, the unit's weights projected back onto the point's
    mask (fixed at the projection) and levels after every step."""

    steps: int
    lr: float
    batch_size: int
    seed: int = 0


def measure(
    model: nn.Module,
    data: DataSplits,
    units: Sequence[UnitSpace],
    *,
    keep_points: int = 8,
    samples: int | None = None,
    index_format: str = "gap",
    finetune: Finetune | None = None,
    on_unit: Callable[[str, int, int], None] | None = None,
) -> Sensitivity:
    """Measure every unit's curves on ``model`` (left as it was found) and predict the rest;
    ``on_unit(unit, measured, units)`` follows the pass, unit by unit.

    Measured points run the first ``samples`` validation images forward with the unit's
    weights projected (after a masked fine-tune on the training split, with ``finetune``). A
    predicted point (keep ``k`` < 1 with levels ``b``) takes the accuracy drops as additive,
    ``drop(k, float32) + drop(1.0, b)``, and its storage from the accounting of a stand-in
    weight with the survivors of the real magnitude mask on ``min(levels, survivors)``
    distinct values: at least what its projection takes.

    Args:
        model: the dense model, on the device its data is on.
        data: its splits; only the validation split is used.
        units: the study's units (:func:`admmsearch.config.unit_spaces`).
        keep_points: keep ratios per searched keep range.
        samples: validation images used (None: all).
        index_format: sparse index format of the storage accounting.
        finetune: fine-tune each measured point before evaluating it (None: no training;
            the reference point, keep 1.0 in float32, is never fine-tuned).

    Raises:
        AdmmSearchError: the validation split is empty.
    """
    x, y = data.x_val[:samples], data.y_val[:samples]
    if len(y) == 0:
        raise AdmmSearchError(
            "sensitivity: the validation split is empty; set dataset.val_fraction above 0"
        )
    start = time.perf_counter()
    names = [layer for unit in units for layer in unit.layers]
    layers = compressible_layers(model, names)
    dense = evaluate(model, x, y)
    report = model_storage(model, names, index_format)
    rows = []
    for done, unit in enumerate(units, 1):
        probe = _Probe(model, layers, unit, x, y, index_format, finetune, data)
        rows += probe.rows(grid_points(unit, keep_points), dense)
        if on_unit is not None:
            on_unit(unit.name, done, len(units))
    seconds = time.perf_counter() - start
    return Sensitivity(tuple(rows), dense, report.other_bits, report.model_stored_bits, seconds)


class _Probe:
    """One unit's measurements on the model; its weights are put back afterwards."""

    def __init__(
        self,
        model: nn.Module,
        layers: Mapping[str, nn.Module],
        unit: UnitSpace,
        x: torch.Tensor,
        y: torch.Tensor,
        index_format: str,
        finetune: Finetune | None = None,
        data: DataSplits | None = None,
    ) -> None:
        self.model, self.unit, self.x, self.y = model, unit, x, y
        self.modules = {n: layers[n] for n in unit.layers}
        self.fmt = index_format
        self.originals = {n: m.weight.detach().clone() for n, m in self.modules.items()}
        self.finetune, self.data = finetune, data

    def rows(self, points: Sequence[GridPoint], dense: float) -> list[dict[str, Any]]:
        """One row per point: the measured ones first measured, then the predicted ones.

        A keep ratio that would leave a layer of the unit without any weight is left out, as
        the pipeline would refuse it.
        """
        points = [p for p in points if self._keeps_some(p.keep)]
        try:
            measured = {(p.keep, p.levels): self._measure(p) for p in points if p.measured}
        finally:
            with torch.no_grad():
                for name, w in self.originals.items():
                    self.modules[name].weight.copy_(w)
        out = []
        for p in points:
            if p.measured:
                accuracy, bits = measured[(p.keep, p.levels)]
                drop = dense - accuracy
            else:
                accuracy, bits = None, self._stand_in_bits(p)
                drop = (dense - measured[(p.keep, None)][0]) + (
                    dense - measured[(1.0, p.levels)][0]
                )
            out.append(self._row(p, accuracy, drop, bits))
        return out

    def _keeps_some(self, keep: float) -> bool:
        sparsity = LayerPlan(keep=keep, structured=self.unit.structured).sparsity()
        try:
            for w in self.originals.values():
                if sparsity is not None:
                    sparsity.mask(w)
        except ConstraintError:
            return False
        return True

    def _plan(self, p: GridPoint) -> LayerPlan:
        u = self.unit
        return LayerPlan(keep=p.keep, structured=u.structured, **{u.quantizer: p.levels})

    def _measure(self, p: GridPoint) -> tuple[float, int]:
        """Validation accuracy and storage bits with the unit's weights projected to ``p``."""
        plan, bits = self._plan(p), 0
        masks = {name: _mask(plan, w) for name, w in self.originals.items()}
        with torch.no_grad():
            for name, module in self.modules.items():
                w = _project(plan, self.originals[name], masks[name])
                module.weight.copy_(w)
                bits += _stored_bits(name, w, _bias(module), self.fmt)
        if self.finetune is None or (p.keep == 1.0 and p.levels is None):
            return evaluate(self.model, self.x, self.y), bits
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        try:
            self._finetune(plan, masks)
            return evaluate(self.model, self.x, self.y), bits
        finally:
            self.model.load_state_dict(state)

    def _finetune(self, plan: LayerPlan, masks: Mapping[str, torch.Tensor | None]) -> None:
        """:class:`Finetune`'s steps, the unit put back on its fixed ``masks`` and its levels
        after each."""
        ft, data = self.finetune, self.data
        assert ft is not None and data is not None
        params = [q for q in self.model.parameters() if q.requires_grad]
        optimizer = torch.optim.SGD(params, lr=ft.lr, momentum=0.9)
        generator = torch.Generator().manual_seed(ft.seed)
        self.model.train()
        done = 0
        while done < ft.steps:
            for xb, yb in batches(
                data.x_train, data.y_train, ft.batch_size, shuffle=True, generator=generator
            ):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(self.model(xb), yb).backward()
                optimizer.step()
                with torch.no_grad():
                    for name, module in self.modules.items():
                        module.weight.copy_(_project(plan, module.weight, masks[name]))
                done += 1
                if done == ft.steps:
                    break
        self.model.eval()

    def _stand_in_bits(self, p: GridPoint) -> int:
        """Storage of ``p`` without fitting levels: the real mask's survivors on as many
        distinct values as the projection has."""
        plan, bits = self._plan(p), 0
        count = 2**p.levels if self.unit.quantizer == "bits" else p.levels
        for name, module in self.modules.items():
            mask = plan.sparsity().mask(self.originals[name]).cpu()
            survivors = int(mask.sum())
            values = torch.arange(survivors) % min(count, survivors) + 1
            w = torch.zeros(mask.shape, dtype=torch.float32)
            w[mask] = values.to(torch.float32)
            bits += _stored_bits(name, w, _bias(module), self.fmt)
        return bits

    def _row(self, p: GridPoint, accuracy: float | None, drop: float, bits: int) -> dict[str, Any]:
        return {
            "unit": self.unit.name,
            "layers": " ".join(self.unit.layers),
            "keep": p.keep,
            "quantizer": self.unit.quantizer,
            "levels": p.levels,
            "val_accuracy": accuracy,
            "accuracy_drop": drop,
            "storage_bits": bits,
            "measured": p.measured,
            "in_space": p.in_space,
        }


def _bias(module: nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return bias if isinstance(bias, torch.Tensor) else None


def _mask(plan: LayerPlan, w: torch.Tensor) -> torch.Tensor | None:
    """The magnitude mask of ``plan`` on ``w``; None when the plan does not prune."""
    sparsity = plan.sparsity()
    return None if sparsity is None else sparsity.mask(w)


def _project(plan: LayerPlan, w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The pipeline's hard projections of one weight: zero outside ``mask`` (:func:`_mask`;
    None: not pruned), then the survivors on the levels (all weights when not pruned)."""
    out = w if mask is None else torch.where(mask, w, torch.zeros_like(w))
    quantizer = plan.quantizer(sparse=mask is not None)
    if quantizer is None:
        return out.clone()
    if mask is None:
        return quantizer.project(out)
    projected = torch.zeros_like(w)
    projected[mask] = quantizer.project(w[mask])
    return projected


def _stored_bits(name: str, w: torch.Tensor, bias: torch.Tensor | None, fmt: str) -> int:
    s = layer_storage(name, w, bias, fmt)
    return s.stored_bits + s.bias_bits
