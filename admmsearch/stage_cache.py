"""The stage cache: the model after the prune phase (:class:`PrunedState`), kept as
``stages/pruned-<key>.pt`` so that trials with the same pruning settings and other
quantization skip the prune phase.

The key hashes everything the prune phase depends on (:func:`pruning_key`). A file holds
tensors and JSON text only (:mod:`admmsearch.tensorfile`): nothing is unpickled. A file that
does not load or does not fit the model is a miss with a
:class:`~admmsearch.tensorfile.CacheWarning` naming it, and is written again.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .admm import Residuals
from .pipeline import PrunedState, StageResult
from .plan import Plan
from .settings import PipelineSettings
from .tensorfile import CacheWarning, load_tensors, save_tensors

__all__ = ["load_pruned", "pruning_key", "save_pruned"]

_PRUNED_FORMAT = "admmsearch-pruned/2"  # 2: stages keep their projection and kept epoch


def pruning_key(plan: Plan, p: PipelineSettings, dense: str) -> str:
    """Hash of everything the prune phase depends on: the dense model (its cache file's name),
    the pruning plan, the pruning stages and the training hooks."""
    stages = (p.pretrain, p.admm_prune, p.retrain, p.progressive_steps, p.seed, p.fold_batchnorm)
    if p.training.named:  # left out otherwise: the keys of studies without hooks stay the same
        stages = (*stages, p.training)
    text = json.dumps(
        {
            "dense": dense,
            "plan": {n: [lp.keep, lp.structured] for n, lp in plan.layers.items()},
            "stages": repr(stages),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def save_pruned(state: PrunedState, path: Path) -> None:
    """Write a pruning result: its masks and weights as tensors, its stages as JSON text."""
    save_tensors(
        {
            "format": _PRUNED_FORMAT,
            "stages": json.dumps([_stage_dict(s) for s in state.stages]),
            "masks": {k: v.detach().cpu().contiguous() for k, v in state.masks.items()},
            "weights": {k: v.detach().cpu().contiguous() for k, v in state.weights.items()},
        },
        path,
    )


def load_pruned(path: Path, expected: Mapping[str, torch.Tensor]) -> PrunedState | None:
    """A cached pruning result whose weights fit ``expected`` (the dense state dict), or None.

    A missing file is a plain miss; a file that does not load (damaged, another format, pickled
    objects) or does not fit is a miss with a :class:`CacheWarning` naming it.
    """
    if not path.exists():
        return None
    obj, why = load_tensors(path)
    if not why:
        try:
            state = _pruned_from(obj)
            why = _misfit_pruned(state, expected)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            why = f"not a stage cache file of this version ({type(exc).__name__}: {exc})"
    if why:
        warnings.warn(f"stage cache {path}: {why}; running the pruning stages", CacheWarning, 2)
        return None
    return state


def _optional(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)


def _stage_dict(stage: StageResult) -> dict[str, Any]:
    data = asdict(stage)
    data["residuals"] = [asdict(r) for r in stage.residuals]
    return data


def _pruned_from(obj: Any) -> PrunedState:
    if not isinstance(obj, Mapping) or obj.get("format") != _PRUNED_FORMAT:
        raise ValueError(f"no format {_PRUNED_FORMAT!r}")
    stages = tuple(
        StageResult(
            name=str(s["name"]),
            val_accuracy=float(s["val_accuracy"]),
            test_accuracy=_optional(float, s["test_accuracy"]),
            seconds=float(s["seconds"]),
            layers={
                str(n): {str(k): float(v) for k, v in f.items()} for n, f in s["layers"].items()
            },
            losses=tuple(float(x) for x in s["losses"]),
            residuals=tuple(
                Residuals(int(r["update"]), float(r["rho"]), dict(r["primal"]), dict(r["dual"]))
                for r in s["residuals"]
            ),
            projected_val_accuracy=_optional(float, s["projected_val_accuracy"]),
            kept_epoch=_optional(int, s["kept_epoch"]),
        )
        for s in json.loads(obj["stages"])
    )
    masks, weights = dict(obj["masks"]), dict(obj["weights"])
    tensors = [*masks.values(), *weights.values()]
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError("masks and weights must be tensors")
    return PrunedState(stages, masks, weights)


def _misfit_pruned(state: PrunedState, expected: Mapping[str, torch.Tensor]) -> str:
    """How a cached pruning result does not fit the dense model's state dict, or ""."""
    if set(state.weights) != set(expected):
        return "its weights are not the model's"
    for name, tensor in state.weights.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            return f"weight {name} has shape {tuple(tensor.shape)} or type {tensor.dtype}"
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return f"weight {name} has NaN or infinite values"
    for layer, mask in state.masks.items():
        weight = expected.get(f"{layer}.weight")
        if weight is None or mask.dtype != torch.bool or mask.shape != weight.shape:
            return f"mask {layer} does not fit a layer weight"
    if not state.stages or not all(math.isfinite(s.val_accuracy) for s in state.stages):
        return "its stage figures are missing or not finite"
    return ""
