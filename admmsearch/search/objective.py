"""One trial: suggested settings -> compression from the cached dense model -> metrics, tracked.

The dense model is trained once per study and cached (:mod:`admmsearch.dense`); every trial and
every worker starts from a copy of it and compresses it with
:func:`admmsearch.compression.compress_dense`. Trials with the same pruning settings share the
pruned state through the stage cache (:mod:`admmsearch.stage_cache`), kept here, in the caller.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from ..compression import Compressed, Job, compress_dense
from ..data import DataSplits
from ..dense import build_model, packed_meta
from ..errors import DivergenceError, PackError, TrackingError
from ..fidelity import added_retraining, rung_pipeline, trial_epochs
from ..metrics import collapsed
from ..pipeline import PipelineHooks, PipelineResult, PrunedState, StageResult
from ..plan import Plan
from ..record import Metric, TrialAttr
from ..registry import one_line
from ..settings import PipelineSettings
from ..stage_cache import load_pruned, pruning_key, save_pruned
from ..timing import Timings, part
from ..tracking import REASON_TAG
from .context import StudyContext
from .origin import trial_origin
from .schedule import Schedule
from .space import TrialSettings, suggest

__all__ = ["Objective", "data_params", "layer_table", "origin_tags"]

_MAX_REASON = 5000  # characters of a failure reason kept in the run's tag


def origin_tags(attrs: dict[str, Any]) -> dict[str, str]:
    """Where a trial's settings came from, as MLflow tags: ``admmsearch.origin`` is ``prior``
    (with ``admmsearch.prior_family``, ``admmsearch.prior_target_kib`` and, where the prior
    fell outside a unit's range, ``admmsearch.prior_clipped``: those units; where the knee
    search ranked the families, ``admmsearch.prior_one_shot``: their one-shot validation
    accuracies at the target, best first), ``seeded`` (with
    ``admmsearch.seeded_budget_kib``), ``retry`` (with ``admmsearch.retry_of``), ``promoted``,
    ``enqueued`` or ``sampled`` (:func:`.origin.trial_origin`)."""
    if TrialAttr.PRIOR in attrs:
        prior = attrs[TrialAttr.PRIOR]
        tags = {
            "admmsearch.origin": "prior",
            "admmsearch.prior_family": str(prior.get("family")),
            "admmsearch.prior_target_kib": str(prior.get("target_kib")),
        }
        if prior.get("clipped"):
            tags["admmsearch.prior_clipped"] = ", ".join(prior["clipped"])
        if prior.get("one_shot_val_accuracy"):
            ranked = prior["one_shot_val_accuracy"].items()
            tags["admmsearch.prior_one_shot"] = ", ".join(f"{f} {v:.4f}" for f, v in ranked)
        return tags
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
    return {"admmsearch.origin": trial_origin(attrs)}


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
        ctx: StudyContext,
        schedule: Schedule,
        on_epoch: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self.config, self.layers, self.data, self.dense = (
            ctx.config,
            ctx.layers,
            ctx.data,
            ctx.dense,
        )
        self.tracker, self.parent_run = ctx.tracker, ctx.parent_run
        self.models_dir = ctx.workdir / "models" / ctx.config.name
        self.schedule, self.on_epoch = schedule, on_epoch
        self.stage_dir = ctx.dense.path.parent / "stages"

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        """Run one trial; its MLflow run ends FINISHED, FAILED (diverged, pruned, or killed by
        a tracking failure) or KILLED (interrupted), tagged with the reason.

        A trial stopped by a tracking failure or an interruption is marked ``interrupted``: it
        does not count against the budget and its params are queued again on resume. Any other
        exception fails the trial with its one-line reason (whether it counts is the study's
        call: :mod:`admmsearch.failures`); a failed trial is charged the epochs it began, not
        the epochs it reserved (:class:`_Tally`).
        """
        start, timings = time.perf_counter(), Timings(self.config.device)
        tally = _Tally(self.on_epoch)
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
                values = self._run(trial, settings, run_id, tally)
                with part("tracking"):
                    self.tracker.finish(run_id)
                    split = {**timings.seconds, "trial": time.perf_counter() - start}
                    trial.set_user_attr(TrialAttr.TIMINGS, split)
        except (DivergenceError, optuna.TrialPruned) as exc:
            self._fail(trial, run_id, str(exc) or type(exc).__name__, tally)
            raise
        except TrackingError as exc:
            _requeue(trial, f"tracking: {exc}")
            if not exc.unreachable:  # else the run is ended when the study resumes
                self._end_run(run_id, "FAILED", f"tracking: {exc}")
            raise
        except Exception as exc:  # a failure, not Ctrl-C: its reason goes where `show` reads it
            self._fail(trial, run_id, one_line(exc), tally)
            raise
        except BaseException:  # Ctrl-C or the process told to stop: queued again on resume
            _requeue(trial, "interrupted")
            self._end_run(run_id, "KILLED", "interrupted")
            raise
        return values

    def _fail(self, trial: optuna.Trial, run_id: str | None, reason: str, tally: _Tally) -> None:
        """Record a failed trial's reason and the epochs it is charged; end its run FAILED."""
        trial.set_user_attr(TrialAttr.FAIL_REASON, reason)
        trial.set_user_attr(TrialAttr.EPOCHS, tally.charged(trial.user_attrs))
        self._end_run(run_id, "FAILED", reason)

    def _end_run(self, run_id: str | None, status: str, reason: str) -> None:
        """End the trial's run with the reason tag, if it has one; a tracking failure here is
        left for :func:`admmsearch.search.study.prepare` to clean up when the study resumes."""
        if run_id is None:
            return
        try:
            self.tracker.log(run_id, tags={REASON_TAG: reason[:_MAX_REASON]})
            self.tracker.finish(run_id, status)
        except TrackingError:
            pass

    def _run(
        self, trial: optuna.Trial, settings: TrialSettings, run_id: str, tally: _Tally
    ) -> tuple[float, ...]:
        run = self._compress(trial, settings, tally)
        done, path = run.compressed, self.models_dir / f"trial-{trial.number}.admm"
        with part("pack"):
            _write(path, done.packed)
        metrics, norm = done.metrics, self.data.normalisation
        with part("tracking"):
            self._set_constraints(trial, metrics)
            trial.set_user_attr(TrialAttr.PRUNING_CACHE_HIT, run.cache_hit)
            trial.set_user_attr(TrialAttr.EPOCHS, run.epochs)
            trial.set_user_attr(TrialAttr.PACKED_MODEL, str(path))
            trial.set_user_attr(TrialAttr.NORMALISATION, None if norm is None else norm.to_dict())
            trial.set_user_attr(TrialAttr.METRICS, dict(metrics))
            self.tracker.log(
                run_id, params=run.params, metrics=metrics, series=_series(done.result)
            )
            self.tracker.log_frame(run_id, layer_table(done.result), "layers.csv")
        return tuple(float(metrics[name]) for name in self.config.objectives)

    def _compress(self, trial: optuna.Trial, settings: TrialSettings, tally: _Tally) -> _TrialRun:
        """Compress the dense model to the trial's settings at the trial's rung: continuing
        the lower-rung trial's pruned model when it is a promotion, else from the stage
        cache's pruned state when a trial with the same pruning settings left one."""
        rung = trial.user_attrs.get(TrialAttr.RUNG)
        pipeline = rung_pipeline(settings.pipeline, self.schedule.fraction(rung))
        job = self._job(settings.plan, pipeline)
        hooks = PipelineHooks(
            on_epoch=tally.epoch_done, on_stage=tally.stage_checked(self._check_collapse)
        )
        lower = self._lower_rung(trial, settings, rung)
        if lower is not None:
            state, below = lower
            more = added_retraining(pipeline, below)
            steps = [] if more is None else [(f"retrain_rung{rung}", more)]
            done = compress_dense(job, hooks=hooks, pruned=state, more_retraining=steps)
            run = _TrialRun(done, False, trial_epochs(pipeline, below))
        else:
            done, hit = self._from_stage_cache(job, hooks)
            run = _TrialRun(done, hit, trial_epochs(pipeline))
        if rung is not None:  # its model, for a promotion to continue
            with part("cache"):
                save_pruned(done.pruned, self._rung_file(trial.number))
        return run

    def _job(self, plan: Plan, pipeline: PipelineSettings) -> Job:
        model = build_model(self.config, self.data)
        model.load_state_dict(self.dense.state)
        meta = packed_meta(self.config, self.data)
        device = self.config.device
        return Job(model, self.data, plan, pipeline, meta, list(self.layers), device, self.dense)

    def _from_stage_cache(self, job: Job, hooks: PipelineHooks) -> tuple[Compressed, bool]:
        key = pruning_key(job.plan, job.settings, self.dense.path.name)
        cache = self.stage_dir / f"pruned-{key}.pt"
        with part("cache"):
            pruned = load_pruned(cache, self.dense.state)
        done = compress_dense(job, hooks=hooks, pruned=pruned)
        if pruned is None:
            with part("cache"):
                save_pruned(done.pruned, cache)
        return done, pruned is not None

    def _lower_rung(
        self, trial: optuna.Trial, settings: TrialSettings, rung: int | None
    ) -> tuple[PrunedState, PipelineSettings] | None:
        """A promotion's lower-rung pruned state and pipeline; None for a trial that continues
        none, or whose lower rung's state is gone (then it runs its rung from the start)."""
        lower = trial.user_attrs.get(TrialAttr.CONTINUES)
        if lower is None or not rung:
            return None
        with part("cache"):
            state = load_pruned(self._rung_file(lower), self.dense.state)
        below = rung_pipeline(settings.pipeline, self.schedule.fraction(rung - 1))
        return None if state is None else (state, below)

    def _rung_file(self, number: int) -> Path:
        return self.stage_dir.parent / "rungs" / f"{self.config.name}-trial-{number}.pt"

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


class _Tally:
    """The epochs a trial has begun, for charging one that fails: the epochs it completed,
    plus the one it was in unless it stopped at a stage's end (the collapse check), at most
    what it reserved. Passes each epoch on to ``on_epoch``."""

    def __init__(self, on_epoch: Callable[[str, int, float], None] | None) -> None:
        self.on_epoch, self.completed, self.at_boundary = on_epoch, 0, False

    def epoch_done(self, stage: str, epoch: int, loss: float) -> None:
        self.completed += 1
        if self.on_epoch is not None:
            self.on_epoch(stage, epoch, loss)

    def stage_checked(self, check: Callable[[StageResult], None]) -> Callable[[StageResult], None]:
        """``check``, run at a stage's end: what it raises stopped no epoch midway."""

        def run(stage: StageResult) -> None:
            self.at_boundary = True
            check(stage)
            self.at_boundary = False

        return run

    def charged(self, attrs: dict[str, Any]) -> int:
        """What a failed trial with user attributes ``attrs`` is charged, in epochs."""
        began = self.completed + (0 if self.at_boundary else 1)
        reserved = attrs.get(TrialAttr.EPOCHS)
        return began if reserved is None else min(began, int(reserved))


@dataclass(frozen=True)
class _TrialRun:
    """A trial's compression, whether the stage cache spared its prune phase, and the
    training epochs it ran."""

    compressed: Compressed
    cache_hit: bool
    epochs: int

    @property
    def params(self) -> dict[str, Any]:
        return {"epochs": self.epochs}


def _write(path: Path, packed: bytes) -> None:
    """The trial's packed model file, beside the other trials' of the study.

    Raises:
        PackError: the file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(packed)
    except OSError as exc:
        raise PackError(f"cannot write packed model {path}: {exc}") from exc


def _requeue(trial: optuna.Trial, reason: str) -> None:
    """Mark a trial stopped by something other than its settings: it does not count and its
    params are queued again (best effort: the storage may be what failed)."""
    try:
        trial.set_user_attr(TrialAttr.INTERRUPTED, True)
        trial.set_user_attr(TrialAttr.FAIL_REASON, reason)
    except Exception:  # noqa: BLE001 - the original failure is what the caller raises
        pass
