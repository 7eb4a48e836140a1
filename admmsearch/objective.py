"""One trial: suggested plan -> pipeline from the cached dense model -> metrics, tracked.

The dense model is trained once per study and cached on disk under the fingerprint of what
determines it (:mod:`admmsearch.cache`); every trial and every worker starts from a copy of it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from .cache import (
    DenseModel,
    build_model,
    dense_model,
    load_pruned,
    packed_meta,
    pruning_key,
    save_pruned,
)
from .config import StudyConfig
from .data import DataSplits
from .errors import DivergenceError, TrackingError
from .packing import PackInfo, pack_model
from .pipeline import PipelineHooks, PipelineResult, PrunedState, StageResult, run_pipeline
from .record import BITS_PER_BYTE, Metric, TrialAttr, per_stage
from .registry import one_line
from .search_space import TrialSettings, suggest
from .timing import Timings, part
from .tracking import REASON_TAG, Tracker

__all__ = [
    "DenseModel",
    "Objective",
    "build_model",
    "collapsed",
    "convergence_metrics",
    "data_params",
    "dense_model",
    "layer_table",
    "origin_tags",
    "packed_meta",
    "trial_metrics",
]

_MAX_REASON = 5000  # characters of a failure reason kept in the run's tag


def collapsed(accuracy: float, num_classes: int) -> bool:
    """Whether an accuracy is at chance level (at most 1.2 / ``num_classes``) or not finite:
    the sign of a diverged or untrained model."""
    return not math.isfinite(accuracy) or accuracy <= 1.2 / num_classes


def trial_metrics(
    result: PipelineResult, dense: DenseModel | StageResult, packed: PackInfo
) -> dict[str, float]:
    """Flat metrics of one finished pipeline (:class:`~admmsearch.record.Metric`): accuracy,
    drop from ``dense`` (the study's dense model, or the pipeline's own dense stage), storage
    and ratios.

    ``storage_bits_with_index`` is the packed file's whole size in bits (what is deployed);
    ``payload_bits`` is the accounting's figure beside it (the file without its header and byte
    padding, ``model_stored_bits``); ``compression_ratio_with_index`` is the dense float32
    model's bits over the file's.
    """
    final = result.final
    file_bits = BITS_PER_BYTE * packed.file_bytes
    metrics = {
        Metric.VAL_ACCURACY: final.val_accuracy,
        Metric.TEST_ACCURACY: final.test_accuracy,
        Metric.DENSE_VAL_ACCURACY: dense.val_accuracy,
        Metric.DENSE_TEST_ACCURACY: dense.test_accuracy,
        Metric.ACCURACY_DROP: dense.val_accuracy - final.val_accuracy,
        Metric.TEST_ACCURACY_DROP: dense.test_accuracy - final.test_accuracy,
        Metric.STORAGE_BITS: file_bits,
        Metric.PAYLOAD_BITS: result.storage.model_stored_bits,
        Metric.HEADER_BITS: BITS_PER_BYTE * packed.header_bytes,
        Metric.COMPRESSION_RATIO: result.storage.model_dense_bits / file_bits,
    }
    metrics.update(result.storage.summary())
    for stage in result.stages:
        metrics[per_stage(Metric.VAL_ACCURACY, stage.name)] = stage.val_accuracy
        if stage.test_accuracy is not None:  # measured after the last stage only
            metrics[per_stage(Metric.TEST_ACCURACY, stage.name)] = stage.test_accuracy
        metrics[per_stage(Metric.SECONDS, stage.name)] = stage.seconds
    metrics.update(convergence_metrics(result))
    for row in result.storage.layers:
        metrics[per_stage(Metric.SPARSITY, row.name)] = row.sparsity
        per_nonzero = (row.stored_bits - row.index_bits) / row.nonzeros
        metrics[per_stage(Metric.BITS_PER_NONZERO, row.name)] = per_nonzero
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
            out[f"{Metric.VAL_ACCURACY}.before_projection.{stage.name}"] = before.val_accuracy
            out[f"{Metric.VAL_ACCURACY}.after_projection.{stage.name}"] = (
                stage.projected_val_accuracy
            )
            out[per_stage(Metric.PROJECTION_LOSS, stage.name)] = (
                before.val_accuracy - stage.projected_val_accuracy
            )
    for stage in result.stages:
        if stage.residuals:
            out[per_stage(Metric.PRIMAL_RESIDUAL_FINAL, stage.name)] = stage.residuals[
                -1
            ].primal_total
        if stage.kept_epoch is not None:
            out[per_stage(Metric.KEPT_EPOCH, stage.name)] = float(stage.kept_epoch)
    return out


def origin_tags(attrs: dict[str, Any]) -> dict[str, str]:
    """Where a trial's settings came from, as MLflow tags: ``admmsearch.origin`` is
    ``seeded`` (with ``admmsearch.seeded_budget_kib``), ``enqueued``, ``retry`` (with
    ``admmsearch.retry_of``) or ``sampled``."""
    if TrialAttr.SEEDED in attrs:
        return {
            "admmsearch.origin": "seeded",
            "admmsearch.seeded_budget_kib": str(attrs[TrialAttr.SEEDED].get("budget_kib")),
        }
    if TrialAttr.RETRY_OF in attrs:
        return {
            "admmsearch.origin": "retry",
            "admmsearch.retry_of": str(attrs[TrialAttr.RETRY_OF]),
        }
    return {"admmsearch.origin": "enqueued" if TrialAttr.ENQUEUED in attrs else "sampled"}


def _params(settings: TrialSettings) -> dict[str, Any]:
    """Every per-layer setting and schedule of the trial, flat, for MLflow params."""
    out: dict[str, Any] = {}
    for name, lp in settings.plan.layers.items():
        out.update(
            {
                f"keep.{name}": lp.keep,
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
    out["fold_batchnorm"] = p.fold_batchnorm
    return out


def data_params(data: DataSplits) -> dict[str, Any]:
    """The input normalisation the trial's model was trained with, for MLflow params."""
    norm = data.normalisation
    if norm is None:
        return {"normalisation": "none"}
    return {
        "normalisation": "per-channel",
        "normalisation.mean": json.dumps(list(norm.mean)),
        "normalisation.std": json.dumps(list(norm.std)),
    }


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
        """Run one trial; its MLflow run ends FINISHED, FAILED (diverged, pruned, or killed by
        a tracking failure) or KILLED (interrupted), tagged with the reason.

        A trial stopped by a tracking failure or an interruption is marked ``interrupted``: it
        does not count against the budget and its params are queued again on resume. Any other
        exception fails the trial with its one-line reason (whether it counts is the study's
        call: :mod:`admmsearch.failures`).
        """
        start, timings = time.perf_counter(), Timings(self.config.device)
        with timings.activate(), part("suggest"):
            settings = suggest(trial, self.config, self.layers)
        run_id = None
        try:
            with timings.activate():
                with part("tracking"):
                    run_id = self.tracker.trial_run(self.parent_run, trial.number)
                    trial.set_user_attr(TrialAttr.MLFLOW_RUN_ID, run_id)
                    self.tracker.log(
                        run_id,
                        params={**_params(settings), **data_params(self.data)},
                        tags=origin_tags(trial.user_attrs),
                    )
                values = self._run(trial, settings, run_id)
                with part("tracking"):
                    self.tracker.finish(run_id)
                    split = {**timings.seconds, "trial": time.perf_counter() - start}
                    trial.set_user_attr(TrialAttr.TIMINGS, split)
        except (DivergenceError, optuna.TrialPruned) as exc:
            reason = str(exc) or type(exc).__name__
            trial.set_user_attr(TrialAttr.FAIL_REASON, reason)
            self._end_run(run_id, "FAILED", reason)
            raise
        except TrackingError as exc:
            _requeue(trial, f"tracking: {exc}")
            if not exc.unreachable:  # else the run is ended when the study resumes
                self._end_run(run_id, "FAILED", f"tracking: {exc}")
            raise
        except Exception as exc:  # a failure, not Ctrl-C: its reason goes where `show` reads it
            reason = one_line(exc)
            trial.set_user_attr(TrialAttr.FAIL_REASON, reason)
            self._end_run(run_id, "FAILED", reason)
            raise
        except BaseException:  # Ctrl-C or the process told to stop: queued again on resume
            _requeue(trial, "interrupted")
            self._end_run(run_id, "KILLED", "interrupted")
            raise
        return values

    def _end_run(self, run_id: str | None, status: str, reason: str) -> None:
        """End the trial's run with the reason tag, if it has one; a tracking failure here is
        left for :func:`admmsearch.study.prepare` to clean up when the study resumes."""
        if run_id is None:
            return
        try:
            self.tracker.log(run_id, tags={REASON_TAG: reason[:_MAX_REASON]})
            self.tracker.finish(run_id, status)
        except TrackingError:
            pass

    def _run(self, trial: optuna.Trial, settings: TrialSettings, run_id: str) -> tuple[float, ...]:
        model = build_model(self.config, self.data)
        model.load_state_dict(self.dense.state)
        hooks = PipelineHooks(on_epoch=self.on_epoch, on_stage=self._check_collapse)
        cache = self.stage_dir / f"pruned-{pruning_key(settings, self.dense)}.pt"
        with part("cache"):
            pruned = load_pruned(cache, self.dense.state)
        result = run_pipeline(
            model,
            self.data,
            settings.plan,
            settings.pipeline,
            layer_patterns=list(self.layers),
            device=self.config.device,
            hooks=hooks,
            pruned=pruned,
            on_pruned=lambda state: _timed_save(state, cache),
            dense_accuracy=(self.dense.val_accuracy, self.dense.test_accuracy),
        )
        path = self.models_dir / f"trial-{trial.number}.admm"
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = packed_meta(self.config, self.data, result)
        with part("pack"):
            packed = pack_model(
                model.cpu(),
                self.layers,
                path,
                settings.pipeline.index_format,
                meta,
                result.storage,
            )
        metrics = trial_metrics(result, self.dense, packed)
        norm = self.data.normalisation
        with part("tracking"):
            self._set_constraints(trial, metrics)
            trial.set_user_attr(TrialAttr.PRUNING_CACHE_HIT, pruned is not None)
            trial.set_user_attr(TrialAttr.PACKED_MODEL, str(path))
            trial.set_user_attr(TrialAttr.NORMALISATION, None if norm is None else norm.to_dict())
            trial.set_user_attr(TrialAttr.METRICS, {str(k): float(v) for k, v in metrics.items()})
            self.tracker.log(run_id, metrics=metrics, series=_series(result))
            self.tracker.log_frame(run_id, layer_table(result), "layers.csv")
        return tuple(float(metrics[name]) for name in self.config.objectives)

    def _check_collapse(self, stage: StageResult) -> None:
        """Accuracy at chance level after a stage means the trial diverged: stop it."""
        chance = 1.0 / self.data.num_classes
        if collapsed(stage.val_accuracy, self.data.num_classes):
            raise DivergenceError(
                f"accuracy collapsed to {stage.val_accuracy:.3f} after stage {stage.name} "
                f"(chance is {chance:.3f})"
            )

    def _set_constraints(self, trial: optuna.Trial, metrics: dict[str, float]) -> None:
        c = self.config.constraints
        if c.max_accuracy_drop is not None:
            drop = metrics[Metric.ACCURACY_DROP] - c.max_accuracy_drop
            trial.set_constraint("accuracy_drop", drop)
        if c.max_storage_bits is not None:
            trial.set_constraint("storage_bits", metrics[Metric.STORAGE_BITS] - c.max_storage_bits)


def _timed_save(state: PrunedState, path: Path) -> None:
    with part("cache"):
        save_pruned(state, path)


def _requeue(trial: optuna.Trial, reason: str) -> None:
    """Mark a trial stopped by something other than its settings: it does not count and its
    params are queued again (best effort: the storage may be what failed)."""
    try:
        trial.set_user_attr(TrialAttr.INTERRUPTED, True)
        trial.set_user_attr(TrialAttr.FAIL_REASON, reason)
    except Exception:  # noqa: BLE001 - the original failure is what the caller raises
        pass
