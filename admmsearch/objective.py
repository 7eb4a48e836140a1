"""One trial: suggested plan -> pipeline from the cached dense model -> metrics, tracked.

The dense model is trained once per study and cached on disk under the fingerprint of what
determines it; every trial and every worker starts from a copy of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch
from filelock import FileLock
from torch import nn

from .config import StudyConfig, dense_settings
from .data import DataSplits
from .errors import AdmmSearchError, DivergenceError
from .models import create_model
from .packing import pack_model
from .pipeline import PipelineHooks, PipelineResult, PrunedState, StageResult, run_pipeline
from .search_space import TrialSettings, suggest
from .storage import model_storage
from .tracking import Tracker
from .train import evaluate, fit

__all__ = ["DenseModel", "Objective", "convergence_metrics", "dense_model", "trial_metrics"]


@dataclass(frozen=True)
class DenseModel:
    """The uncompressed starting point every trial shares."""

    state: dict[str, torch.Tensor]
    val_accuracy: float
    test_accuracy: float
    storage_bits: int
    path: Path
    trained: bool  # False when it came from the cache or a checkpoint


def build_model(config: StudyConfig, data: DataSplits) -> nn.Module:
    torch.manual_seed(config.seed)
    return create_model(
        config.model.name,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        **config.model.kwargs,
    )


def dense_model(
    config: StudyConfig, data: DataSplits, cache_dir: Path, layers: list[str]
) -> DenseModel:
    """Load the checkpoint or the cached dense model, else train it once and cache it.

    Workers sharing ``cache_dir`` (one machine, or a network path) train it once: the first
    takes a lock file beside the cache file and trains, the others wait and load its result.
    The file is written to a temporary name and renamed, so even where the file system ignores
    locks, racing workers each end with a whole file and never read a partial one.
    """
    model = build_model(config, data).to(config.device)
    if config.dense.checkpoint:
        path, trained = Path(config.dense.checkpoint), False
        _load_state(model, path, "dense.checkpoint")
    else:
        path = cache_dir / f"dense-{config.fingerprint_dense()[:16]}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            trained = not path.exists()
            if trained:
                fit(model, data.to(config.device), dense_settings(config), seed=config.seed * 1000)
                _save_atomic(model.state_dict(), path)
            else:
                _load_state(model, path, "dense cache")
    d = data.to(config.device)
    storage = model_storage(model, layers)
    return DenseModel(
        {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        evaluate(model, d.x_val, d.y_val),
        evaluate(model, d.x_test, d.y_test),
        storage.model_stored_bits,
        path,
        trained,
    )


def _load_state(model: nn.Module, path: Path, what: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError, KeyError) as exc:
        raise AdmmSearchError(f"{what} {path}: cannot load it into the model ({exc})") from None


def _save_atomic(state: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def pruning_key(settings: TrialSettings, dense: DenseModel) -> str:
    """Hash of everything the pruning stages depend on: dense model, pruning plan and stages."""
    p = settings.pipeline
    text = json.dumps(
        {
            "dense": dense.path.name,
            "plan": {n: [lp.keep, lp.structured] for n, lp in settings.plan.layers.items()},
            "stages": repr((p.pretrain, p.admm_prune, p.retrain, p.progressive_steps, p.seed)),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _load_pruned(path: Path) -> PrunedState | None:
    """A cached pruning result, or None; a damaged file is ignored (and rewritten later)."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - any unreadable cache entry is just a miss
        return None


def trial_metrics(result: PipelineResult, dense: DenseModel) -> dict[str, float]:
    """Flat metrics of one finished pipeline: accuracy, drop from dense, storage and ratios."""
    final = result.final
    metrics = {
        "val_accuracy": final.val_accuracy,
        "test_accuracy": final.test_accuracy,
        "dense_val_accuracy": dense.val_accuracy,
        "dense_test_accuracy": dense.test_accuracy,
        "accuracy_drop": dense.val_accuracy - final.val_accuracy,
        "test_accuracy_drop": dense.test_accuracy - final.test_accuracy,
        "storage_bits_with_index": result.storage.model_stored_bits,
        "compression_ratio_with_index": result.storage.model_ratio,
    }
    metrics.update(result.storage.summary())
    for stage in result.stages:
        metrics[f"val_accuracy.{stage.name}"] = stage.val_accuracy
        metrics[f"test_accuracy.{stage.name}"] = stage.test_accuracy
        metrics[f"seconds.{stage.name}"] = stage.seconds
    metrics.update(convergence_metrics(result))
    for row in result.storage.layers:
        metrics[f"sparsity.{row.name}"] = row.sparsity
        metrics[f"bits_per_nonzero.{row.name}"] = (row.stored_bits - row.index_bits) / row.nonzeros
    return metrics


def convergence_metrics(result: PipelineResult) -> dict[str, float]:
    """Whether ADMM converged and retraining helped, per stage.

    * ``primal_residual_final.<admm stage>``: ||W - Z|| over the layers at the stage's last
      Z/U update; near 0 when the weights reached their constraint sets.
    * ``val_accuracy.before_projection.<stage>`` and ``.after_projection.<stage>`` for a stage
      that starts with a hard projection (``retrain``: the prune; ``quant_retrain``: every
      weight on its levels), and ``projection_loss.<stage>``, before minus after: what the
      projection threw away of what the stage before it (ADMM, if any) reached.
    * ``kept_epoch.<stage>``: the epoch a retraining stage kept (its best on validation).
    """
    out: dict[str, float] = {}
    for before, stage in zip(result.stages, result.stages[1:], strict=False):
        if stage.projected_val_accuracy is not None:
            out[f"val_accuracy.before_projection.{stage.name}"] = before.val_accuracy
            out[f"val_accuracy.after_projection.{stage.name}"] = stage.projected_val_accuracy
            out[f"projection_loss.{stage.name}"] = (
                before.val_accuracy - stage.projected_val_accuracy
            )
    for stage in result.stages:
        if stage.residuals:
            out[f"primal_residual_final.{stage.name}"] = stage.residuals[-1].primal_total
        if stage.kept_epoch is not None:
            out[f"kept_epoch.{stage.name}"] = float(stage.kept_epoch)
    return out


def origin_tags(attrs: dict[str, Any]) -> dict[str, str]:
    """Where a trial's settings came from, as MLflow tags: ``admmsearch.origin`` is
    ``seeded`` (with ``admmsearch.seeded_budget_kib``), ``enqueued``, ``retry`` (with
    ``admmsearch.retry_of``) or ``sampled``."""
    if "seeded" in attrs:
        return {
            "admmsearch.origin": "seeded",
            "admmsearch.seeded_budget_kib": str(attrs["seeded"].get("budget_kib")),
        }
    if "retry_of" in attrs:
        return {"admmsearch.origin": "retry", "admmsearch.retry_of": str(attrs["retry_of"])}
    return {"admmsearch.origin": "enqueued" if "enqueued" in attrs else "sampled"}


def _params(settings: TrialSettings) -> dict[str, Any]:
    """Every per-layer setting and schedule of the trial, flat, for MLflow params."""
    out: dict[str, Any] = {}
    for name, lp in settings.plan.layers.items():
        out.update(
            {
                f"keep.{name}": lp.keep if lp.keep is not None else 1.0,
                f"bits.{name}": lp.bits,
                f"clusters.{name}": lp.clusters,
                f"structured.{name}": lp.structured,
            }
        )
    p = settings.pipeline
    for stage in ("admm_prune", "admm_quantize"):
        s = getattr(p, stage)
        if s is not None:
            out.update(
                {
                    f"{stage}.epochs": s.train.epochs,
                    f"{stage}.lr": s.train.lr,
                    f"{stage}.rho_start": s.rho.start,
                    f"{stage}.rho_end": s.rho.end,
                    f"{stage}.rho_updates": s.rho.updates,
                }
            )
    if p.retrain is not None:
        out.update({"retrain.epochs": p.retrain.epochs, "retrain.lr": p.retrain.lr})
    out["progressive_steps"] = p.progressive_steps
    return out


def _series(result: PipelineResult) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for stage in result.stages:
        if stage.residuals:
            out[f"primal_residual.{stage.name}"] = [r.primal_total for r in stage.residuals]
            out[f"dual_residual.{stage.name}"] = [r.dual_total for r in stage.residuals]
            out[f"rho.{stage.name}"] = [r.rho for r in stage.residuals]
        if stage.losses:
            out[f"loss.{stage.name}"] = list(stage.losses)
    return out


def layer_table(result: PipelineResult) -> pd.DataFrame:
    """Per layer: the plan, the storage figures and the nonzeros after each stage."""
    frame = result.storage.to_frame()
    plan = result.plan.layers
    frame.insert(1, "keep_target", [plan[n].keep if n in plan else None for n in frame["name"]])
    frame.insert(2, "bits_target", [plan[n].bits if n in plan else None for n in frame["name"]])
    for stage in result.stages:
        frame[f"nonzeros.{stage.name}"] = [stage.layers[n]["nonzeros"] for n in frame["name"]]
    return frame


class Objective:
    """Callable Optuna objective: returns the study's objectives, in order, for one trial."""

    def __init__(
        self,
        config: StudyConfig,
        layers: list[str],
        data: DataSplits,
        dense: DenseModel,
        tracker: Tracker,
        parent_run: str,
        models_dir: Path,
        on_epoch: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self.config, self.layers, self.data, self.dense = config, layers, data, dense
        self.tracker, self.parent_run, self.models_dir = tracker, parent_run, models_dir
        self.on_epoch = on_epoch
        self.stage_dir = dense.path.parent / "stages"

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        settings = suggest(trial, self.config, self.layers)
        run_id = self.tracker.trial_run(self.parent_run, trial.number)
        trial.set_user_attr("mlflow_run_id", run_id)
        self.tracker.log(run_id, params=_params(settings), tags=origin_tags(trial.user_attrs))
        try:
            values = self._run(trial, settings, run_id)
        except (DivergenceError, optuna.TrialPruned) as exc:
            reason = str(exc) or type(exc).__name__
            trial.set_user_attr("fail_reason", reason)
            self.tracker.log(run_id, tags={"admmsearch.fail_reason": reason})
            self.tracker.finish(run_id, "FAILED")
            raise
        except BaseException:
            trial.set_user_attr("interrupted", True)
            self.tracker.log(run_id, tags={"admmsearch.fail_reason": "interrupted"})
            self.tracker.finish(run_id, "KILLED")
            raise
        self.tracker.finish(run_id)
        return values

    def _run(self, trial: optuna.Trial, settings: TrialSettings, run_id: str) -> tuple[float, ...]:
        model = build_model(self.config, self.data)
        model.load_state_dict(self.dense.state)
        hooks = PipelineHooks(on_epoch=self.on_epoch, on_stage=self._check_collapse)
        cache = self.stage_dir / f"pruned-{pruning_key(settings, self.dense)}.pt"
        pruned = _load_pruned(cache)
        trial.set_user_attr("pruning_cache_hit", pruned is not None)
        result = run_pipeline(
            model,
            self.data,
            settings.plan,
            settings.pipeline,
            layer_patterns=list(self.layers),
            device=self.config.device,
            hooks=hooks,
            pruned=pruned,
            on_pruned=lambda state: _save_atomic(state, cache),
        )
        metrics = trial_metrics(result, self.dense)
        self._set_constraints(trial, metrics)
        path = self.models_dir / f"trial-{trial.number}.admm"
        path.parent.mkdir(parents=True, exist_ok=True)
        pack_model(model.cpu(), self.layers, path)
        trial.set_user_attr("packed_model", str(path))
        trial.set_user_attr("metrics", {k: float(v) for k, v in metrics.items()})
        self.tracker.log(run_id, metrics=metrics, series=_series(result))
        self.tracker.log_frame(run_id, layer_table(result), "layers.csv")
        return tuple(float(metrics[name]) for name in self.config.objectives)

    def _check_collapse(self, stage: StageResult) -> None:
        """Accuracy at chance level after a stage means the trial diverged: stop it."""
        chance = 1.0 / self.data.num_classes
        if not math.isfinite(stage.val_accuracy) or stage.val_accuracy <= 1.2 * chance:
            raise DivergenceError(
                f"accuracy collapsed to {stage.val_accuracy:.3f} after stage {stage.name} "
                f"(chance is {chance:.3f})"
            )

    def _set_constraints(self, trial: optuna.Trial, metrics: dict[str, float]) -> None:
        c = self.config.constraints
        if c.max_accuracy_drop is not None:
            trial.set_constraint("accuracy_drop", metrics["accuracy_drop"] - c.max_accuracy_drop)
        if c.max_storage_bits is not None:
            trial.set_constraint(
                "storage_bits", metrics["storage_bits_with_index"] - c.max_storage_bits
            )
