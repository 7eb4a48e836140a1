"""Create, resume and run a study; keep the Pareto front in the study's MLflow parent run.

The budget counts finished trials across every process sharing the storage: completed,
pruned and diverged ones. A trial interrupted by Ctrl-C does not count; its params are queued
again, so resuming neither loses nor duplicates work. Any number of workers, on any machines,
may run one study: they claim trials one at a time under a storage-wide lock, so together they
run exactly the budget, and a trial whose worker dies is failed and run again (see
:mod:`admmsearch.runtime._workers`).
"""

from __future__ import annotations

import functools
import os
import signal
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import torch

from ..config import StudyConfig, check_layers, normalise_enqueue
from ..data import DataSplits
from ..dense import DenseModel, build_model, dense_model
from ..errors import AdmmSearchError, DivergenceError, StoreError
from ..fold import Folding, fold_model
from ..locations import resolve_cache_dir, resolve_storage, resolve_tracking
from ..metrics import collapsed
from ..models import uncompressed_layers
from ..record import DenseFigures, Metric, StudyAttr, TrialAttr
from ..runtime import (
    Claim,
    Heartbeat,
    LostTrials,
    StorageLock,
    budget_counts,
    carried,
    claim,
    make_storage,
    share_device,
    storage_errors,
)
from ..tracking import FRONT_TAG, REASON_TAG, Tracker
from .check import preflight, study_folders
from .context import StudyContext, StudyEvents
from .failures import FailureStreak
from .front import front_trials, plot_front, trials_frame
from .objective import Objective
from .quiet import quiet_optuna
from .reuse import check_reuse
from .sampling import PerTrialSampler, startup_trials
from .schedule import Schedule, study_budget
from .seeding import Seed, first_trials, prior_planner

__all__ = [
    "TIMEOUT_ATTR",
    "end_stale_runs",
    "finished_count",
    "make_sampler",
    "open_study",
    "prepare",
    "run_parallel",
    "run_study",
    "startup_trials",
    "stored_layers",
    "study_budget",
    "update_front",
]

#: Study attribute set when a run stopped at its timeout before the budget was spent.
TIMEOUT_ATTR = StudyAttr.STOPPED_BY_TIMEOUT
_POLL_S = 5.0  # a worker waiting on others' trials looks again this often (or each heartbeat)


def make_sampler(config: StudyConfig, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with ``seed`` (default: the study's sampler seed); TPE
    and GP start with :func:`startup_trials` random trials."""
    s = config.sampler
    seed = config.sampler_seed if seed is None else seed
    startup = startup_trials(config)
    if s.name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=s.population_size or 20, seed=seed)
    if s.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup)
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(
    config: StudyConfig,
    storage: str | optuna.storages.RDBStorage,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> optuna.Study:
    """Create the study or load it if it exists (same name, same storage).

    A URL opens the storage with the study's heartbeat settings (see :func:`prepare` for a
    worker's, which also handles lost trials). Trial ``n`` draws its settings with a sampler
    seeded from the sampler seed and ``n`` (:mod:`.sampling`), so workers and resumed runs
    never replay each other's draws; ``sampler`` replaces it (a seam for experiments: it is
    this process's alone, and its draws are its own business).
    """
    if isinstance(storage, str):
        w = config.workers
        storage = make_storage(
            storage, heartbeat_interval_s=w.heartbeat_interval_s, grace_period_s=w.grace_period_s
        )
    with quiet_optuna():
        study = optuna.create_study(
            study_name=config.name,
            storage=storage,
            directions=config.directions,
            sampler=sampler
            or PerTrialSampler(lambda seed: make_sampler(config, seed), config.sampler_seed),
            load_if_exists=True,
        )
    _name_objectives(study, list(config.objectives))
    return study


def _name_objectives(study: optuna.Study, objectives: list[str]) -> None:
    """The objectives by their names in Optuna (``val_accuracy``, ``storage_bits_with_index``),
    so that the dashboard and Optuna's plots name them rather than number them."""
    if study.metric_names == objectives:
        return
    with warnings.catch_warnings():  # experimental since Optuna 3.2, and stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(objectives)


def finished_count(study: optuna.Study) -> int:
    """Trials that count against the budget: finished, not interrupted, and not lost trials
    that were queued again (see :func:`admmsearch.runtime._workers.budget_counts`)."""
    return budget_counts(study.get_trials(deepcopy=False))[0]


def prepare(
    config: StudyConfig,
    layers: list[str],
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    workdir: str | Path = ".admmsearch",
    cache_dir: str | Path | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    events: StudyEvents | None = None,
) -> StudyContext:
    """Check everything checkable, get the (cached) dense model, then open the study and its
    parent run; ``sampler`` replaces the study's own in this process (see :func:`open_study`);
    ``events`` are told what happens (the dense training's epochs, then the study's), here and
    by :func:`run_study`.

    Nothing is created before the checks of :mod:`admmsearch.preflight` pass and the dense model
    is known to learn, so a start that fails leaves no study, run or folder behind. The parent
    run gets ``layers.json``: the compressed layers, the modules with a weight that stay
    uncompressed once the BatchNorms are folded (also in ``StudyContext.uncompressed``) and
    the BatchNorms folded (``folded_batchnorm``: ``[conv, batchnorm]`` pairs; also in
    ``StudyContext.folding``): :func:`stored_layers`. Workers starting together create the
    tables, the study, the experiment and the parent run once, in turn under the storage lock.

    Raises:
        AdmmSearchError: a check failed; the message names the setting, file or store.
    """
    check_layers(config, layers)  # done by validate_study; again for library callers
    config = normalise_enqueue(config, layers)
    storage = resolve_storage(config, storage)
    cache = resolve_cache_dir(config, cache_dir, workdir)
    data = preflight(
        config, layers, storage, tracking_uri, study_folders(config, cache_dir, workdir)
    )
    events = events or StudyEvents()
    dense = dense_model(config, data, cache, layers, events.dense_epoch)
    _check_dense_learns(config, data, dense)
    folding, raw = stored_layers(config, data, layers)
    lock = StorageLock(storage)
    with lock:
        tracker, rdb, study, parent = _open_stores(config, layers, storage, tracking_uri, sampler)
    record = {"compressed": layers, "uncompressed": raw, "folded_batchnorm": folding.pairs}
    _record_dense(study, tracker, parent, dense, record)
    here = (data, dense, Path(workdir), cache, lock, rdb, raw, events, folding)
    return StudyContext(config, layers, study, storage, tracker, parent, *here)


def stored_layers(
    config: StudyConfig, data: DataSplits, layers: list[str]
) -> tuple[Folding, dict[str, str]]:
    """How the study's network is stored beside its compressed ``layers``: the BatchNorms the
    pipeline folds into their convolutions (with ``pipeline.fold_batchnorm``), and the modules
    with a weight left uncompressed once they are folded (name -> type), as every trial's
    packed file has them (:func:`admmsearch.fold.fold_model`, on a fresh model)."""
    model = build_model(config, data)
    folding = fold_model(model, config.pipeline.fold_batchnorm)
    return folding, uncompressed_layers(model, layers)


def _open_stores(
    config: StudyConfig,
    layers: list[str],
    storage: str,
    tracking_uri: str | None,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> tuple[Tracker, optuna.storages.RDBStorage, optuna.Study, str]:
    """The MLflow experiment (first: a store that refuses it leaves no study behind), the
    Optuna study and the parent run. Call it holding the storage lock."""
    w = config.workers
    tracker = Tracker(resolve_tracking(config, tracking_uri), config.name)
    rdb = make_storage(
        storage,
        heartbeat_interval_s=w.heartbeat_interval_s,
        grace_period_s=w.grace_period_s,
        on_lost=LostTrials(tracker.end_trial_runs, w.max_retry),
        patience_s=w.grace_period_s,
    )
    study = open_study(config, rdb, sampler)
    end_stale_runs(tracker, study)
    check_reuse(config, layers, storage, study)  # again: another start may have won the race
    # What `show`, `pareto` and `export` need to read the study back by its name alone.
    study.set_user_attr(StudyAttr.CONFIG, config.resolved_dict())
    study.set_user_attr(StudyAttr.LAYERS, list(layers))
    parent = tracker.study_run(
        config.resolved_dict(), study.user_attrs.get(StudyAttr.MLFLOW_PARENT_RUN_ID)
    )
    study.set_user_attr(StudyAttr.MLFLOW_PARENT_RUN_ID, parent)
    return tracker, rdb, study, parent


def _record_dense(
    study: optuna.Study,
    tracker: Tracker,
    parent: str,
    dense: DenseModel,
    layers: dict[str, Any],
) -> None:
    """The dense model's figures on the study and its parent run, with ``layers.json``."""
    figures = DenseFigures(
        val_accuracy=dense.val_accuracy,
        test_accuracy=dense.test_accuracy,
        storage_bits=dense.storage_bits,
    )
    study.set_user_attr(StudyAttr.DENSE, figures)
    tracker.log_dict(parent, layers, "layers.json")
    tracker.log(
        parent,
        metrics={
            Metric.DENSE_VAL_ACCURACY: dense.val_accuracy,
            Metric.DENSE_TEST_ACCURACY: dense.test_accuracy,
            "dense_storage_bits": dense.storage_bits,
        },
    )


def end_stale_runs(tracker: Tracker, study: optuna.Study) -> int:
    """End as KILLED every trial run left RUNNING although its Optuna trial has finished (its
    worker lost the tracking server, or died before ending it), tagged with the trial's
    ``fail_reason`` or its state; returns how many were ended."""
    finished = {
        t.number: t.user_attrs.get(TrialAttr.FAIL_REASON)
        or f"trial ended {t.state.name} in Optuna while its run was still open"
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished()
    }
    return tracker.end_stale_runs(finished)


def _check_dense_learns(config: StudyConfig, data: DataSplits, dense: DenseModel) -> None:
    """A dense model at chance level would fail every trial at the collapse check: say so now.

    Raises:
        DivergenceError: names where the dense model came from and what to change.
    """
    if not collapsed(dense.val_accuracy, data.num_classes):
        return
    if config.dense.checkpoint:
        source = f"dense.checkpoint {config.dense.checkpoint}"
        fix = "check that it was trained on this dataset, with these labels"
    else:
        t = config.dense.train
        source = f"dense.train ({t.epochs} epochs, lr {t.lr}; cached as {dense.path})"
        fix = "train longer, change dense.train.lr, or check the labels"
    raise DivergenceError(
        f"the dense model from {source} scores {dense.val_accuracy:.3f} on validation, chance "
        f"level for {data.num_classes} classes, so every trial would fail; {fix}"
    )


def _queue_first_trials(ctx: StudyContext, seeds: Sequence[Seed] = ()) -> None:
    """Known-good settings, then the ``seeds`` (the priors and seeded trials of
    :func:`.seeding.first_trials`) on a new study; the params of interrupted trials on a
    resumed one.

    Call it holding ``ctx.lock``: workers starting together would queue things twice.
    """
    study = ctx.study
    if not study.get_trials(deepcopy=False):
        for i, params in enumerate(ctx.config.enqueue):
            study.enqueue_trial(
                dict(params), user_attrs={TrialAttr.ENQUEUED: i}, skip_if_exists=True
            )
        for seed in seeds:
            study.enqueue_trial(seed.params, user_attrs=seed.attrs, skip_if_exists=True)
        return
    requeued = set(study.user_attrs.get(StudyAttr.REQUEUED, []))
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if t.user_attrs.get(TrialAttr.INTERRUPTED) and t.number not in requeued:
            again = {TrialAttr.RETRY_OF: t.number, **carried(t)}
            study.enqueue_trial(t.params, user_attrs=again)
            requeued.add(t.number)
    study.set_user_attr(StudyAttr.REQUEUED, sorted(requeued))


def update_front(ctx: StudyContext) -> None:
    """Write the front (CSV, PNG, HTML) into the parent run; log front trials' packed models;
    tag the front trials' runs (:data:`~admmsearch.tracking.FRONT_TAG`).

    Retried as a whole while the storage is unreachable (:class:`~admmsearch.outages.Retry`).
    """
    ctx.rdb.retry.call(lambda: _write_front(ctx), "front")


def _write_front(ctx: StudyContext) -> None:
    frame = trials_frame(ctx.study, list(ctx.config.objectives))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frame.to_csv(tmp / "front.csv", index=False)
        plot_front(ctx.study, tmp / "front.png", tmp / "front.html")
        for name in ("front.csv", "front.png", "front.html"):
            ctx.tracker.log_file(ctx.parent_run, tmp / name)
    logged = set(ctx.study.user_attrs.get(StudyAttr.FRONT_MODELS_LOGGED, []))
    front = frame[frame["front"]]["trial"].tolist() if not frame.empty else []
    for number in front:
        trial = ctx.study.trials[number]
        run_id = trial.user_attrs.get(TrialAttr.MLFLOW_RUN_ID)
        path = trial.user_attrs.get(TrialAttr.PACKED_MODEL)
        if number not in logged and run_id and path and Path(path).exists():
            ctx.tracker.log_file(run_id, path, "model")
            logged.add(number)
    ctx.study.set_user_attr(StudyAttr.FRONT_MODELS_LOGGED, sorted(logged))
    _tag_front(ctx)


def _tag_front(ctx: StudyContext) -> None:
    """Tag the runs of the front's trials ``admmsearch.front`` = ``true`` and those of trials
    that left it ``false`` (only the changes). Under the storage lock, reading the front
    afresh: workers that finish trials together leave the tags as the latest front says."""
    with ctx.lock:
        front = {t.number for t in front_trials(ctx.study)}
        tagged = set(ctx.study.user_attrs.get(StudyAttr.FRONT_TAGGED, []))
        if front == tagged:
            return
        trials = ctx.study.get_trials(deepcopy=False)
        for number in sorted(front ^ tagged):
            run_id = trials[number].user_attrs.get(TrialAttr.MLFLOW_RUN_ID)
            if run_id:
                ctx.tracker.log(run_id, tags={FRONT_TAG: "true" if number in front else "false"})
        ctx.study.set_user_attr(StudyAttr.FRONT_TAGGED, sorted(front))


def _storage_errors(run: Callable[..., optuna.Study]) -> Callable[..., optuna.Study]:
    """Storage failures while ``run(ctx, ...)`` runs become one-line StoreErrors; Optuna's
    INFO lines (a trial told) stay out of the output while it runs."""

    @functools.wraps(run)
    def wrapper(ctx: StudyContext, *args: Any, **kwargs: Any) -> optuna.Study:
        with storage_errors(ctx.storage), quiet_optuna():
            return run(ctx, *args, **kwargs)

    return wrapper


@_storage_errors
def run_study(
    ctx: StudyContext,
    *,
    trials: int | None = None,
    epochs: int | None = None,
    timeout: float | None = None,
    threads: int | None = None,
    queue: bool = True,
    on_epoch: Callable[[str, int, float], None] | None = None,
) -> optuna.Study:
    """Run trials until the budget (all workers together) is spent or ``timeout`` passes.

    The budget is ``trials`` trials and ``epochs`` training epochs (None: the study file's
    ``budget``); trials are claimed one at a time under the storage lock, as the study's
    :class:`~.schedule.Schedule` decides (its rungs, if any), so however many workers share the
    study, the budget holds exactly; a worker whose last trials run elsewhere waits for them,
    to redo any that is lost. ``ctx.events`` are told each trial's epochs (``on_epoch``, when
    given, instead) and each finished trial.

    Raises:
        StoreError: the storage failed while the study ran (the database went away): one
            line naming it, password masked, with the driver's reason.
        TrackingError: MLflow failed; the trial it stopped does not count and runs again.
    """
    if threads:
        torch.set_num_threads(threads)
    budget = study_budget(ctx.config, trials, epochs, timeout)
    schedule = Schedule(ctx.config, ctx.layers, budget)
    timeout = budget.timeout_s
    deadline = None if timeout is None else time.monotonic() + timeout
    if queue:
        seeds = first_trials(ctx)
        with ctx.lock:
            _queue_first_trials(ctx, seeds)
    schedule.priors = prior_planner(ctx, schedule.prior_outcome)
    _note_budget(ctx, schedule)
    if not schedule.finished(ctx.study):
        ctx.tracker.set_status(ctx.parent_run, "RUNNING")
        objective = Objective(ctx, schedule, on_epoch or ctx.events.trial_epoch)
        _run_trials(ctx, objective, schedule, deadline)
    _mark_parent(ctx, schedule)
    _note_timeout(ctx, schedule, timeout, deadline)
    return ctx.study


def _run_trials(
    ctx: StudyContext, objective: Objective, schedule: Schedule, deadline: float | None
) -> None:
    """Claim and run trials until none is left to claim, telling ``ctx.events`` of each
    finished one; stop when errors repeat (:class:`~.failures.FailureStreak`)."""
    poll_s = min(ctx.config.workers.heartbeat_interval_s, _POLL_S)
    streak = FailureStreak()
    when = {"decide": schedule.decide, "deadline": deadline, "poll_s": poll_s}
    while (claimed := claim(ctx.study, ctx.rdb, ctx.lock, **when)) is not None:
        error = _run_trial(ctx, objective, claimed)
        update_front(ctx)
        if ctx.events.trial_done is not None:
            ctx.events.trial_done(ctx.rdb.get_trial(claimed.trial_id))
        streak.record(claimed.trial.number, error)


def _note_budget(ctx: StudyContext, schedule: Schedule) -> None:
    """Record the budget this run works to (``--trials`` or ``--epochs`` may raise the file's
    on resume) and the full-fidelity rung, for ``show``, ``list`` and the front."""
    study, budget = ctx.study, schedule.budget
    notes = {
        StudyAttr.BUDGET: budget.trials,
        StudyAttr.EPOCH_BUDGET: budget.epochs,
        StudyAttr.TOP_RUNG: schedule.top,
    }
    for key, value in notes.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)


def _note_timeout(
    ctx: StudyContext, schedule: Schedule, timeout: float | None, deadline: float | None
) -> None:
    """Record on the study that the timeout, not the budget, ended this run (``show`` and
    ``list`` say so); a run that ends by its budget clears the note."""
    if deadline is None or time.monotonic() < deadline or schedule.finished(ctx.study):
        if ctx.study.user_attrs.get(TIMEOUT_ATTR):
            ctx.study.set_user_attr(TIMEOUT_ATTR, None)
        return
    ctx.study.set_user_attr(
        TIMEOUT_ATTR,
        {
            "timeout_s": timeout,
            "finished": finished_count(ctx.study),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )


def _mark_parent(ctx: StudyContext, schedule: Schedule) -> None:
    """The parent run is FINISHED once the budget is spent and no trial runs, else RUNNING."""
    done = schedule.finished(ctx.study)
    ctx.tracker.set_status(ctx.parent_run, "FINISHED" if done else "RUNNING")


def _run_trial(ctx: StudyContext, objective: Objective, claimed: Claim) -> Exception | None:
    """Run one claimed trial with heartbeats and tell Optuna how it ended; returns the error it
    failed with, if any.

    Diverged trials fail (with ``fail_reason``) and count; a trial that fails with an error
    (:mod:`admmsearch.failures`) fails without counting; the study goes on after both. A
    storage or tracking failure, Ctrl-C or SIGTERM fails the trial and is raised again.
    """
    trial, state, error = claimed.trial, None, None
    values: tuple[float, ...] | None = None
    try:
        with Heartbeat(ctx.rdb, claimed.trial_id, ctx.config.workers.heartbeat_interval_s):
            values = objective(trial)
    except optuna.TrialPruned:
        state = optuna.trial.TrialState.PRUNED
    except DivergenceError:
        state = optuna.trial.TrialState.FAIL
    except optuna.exceptions.UpdateFinishedTrialError:
        _taken_for_lost(ctx, claimed)
        return None
    except StoreError:
        _fail_unless_finished(ctx, claimed)
        raise
    except Exception as exc:  # noqa: BLE001 - an error: the trial fails without counting
        state, error = optuna.trial.TrialState.FAIL, exc
        trial.set_user_attr(TrialAttr.INTERRUPTED, True)
    except BaseException:
        _fail_unless_finished(ctx, claimed)
        raise
    if not ctx.rdb.retry.call(lambda: _tell(ctx, claimed, values, state), "tell"):
        _taken_for_lost(ctx, claimed)
    return error


def _tell(
    ctx: StudyContext,
    claimed: Claim,
    values: tuple[float, ...] | None,
    state: optuna.trial.TrialState | None,
) -> bool:
    """Tell Optuna how the trial ended; False when another worker took it for lost meanwhile.

    Safe to try again: a try whose answer was lost to an outage after it was stored is found
    finished with this trial's own values.
    """
    stored = ctx.rdb.get_trial(claimed.trial_id)
    if stored.state.is_finished():
        mine = stored.state == (state or optuna.trial.TrialState.COMPLETE)
        return mine and (values is None or stored.values == list(values))
    ctx.study.tell(claimed.trial, values, state=state)
    return True


def _fail_unless_finished(ctx: StudyContext, claimed: Claim) -> None:
    """Fail a trial stopped by an error, if it still runs; best effort, as the storage may be
    what failed (then the trial is taken for lost once its heartbeats lapse)."""
    try:
        if not ctx.rdb.get_trial(claimed.trial_id).state.is_finished():
            ctx.study.tell(claimed.trial, state=optuna.trial.TrialState.FAIL)
    except Exception:  # noqa: BLE001 - the caller raises the error that stopped the trial
        pass


def _taken_for_lost(ctx: StudyContext, claimed: Claim) -> None:
    """Our heartbeats lapsed (a stall, a database outage) and another worker failed and queued
    this trial again: its retry counts, so this run's result is dropped and its run killed."""
    run_id = claimed.trial.user_attrs.get(TrialAttr.MLFLOW_RUN_ID)
    if run_id:
        ctx.tracker.log(run_id, tags={REASON_TAG: "lost: heartbeats lapsed; retried elsewhere"})
        ctx.tracker.finish(run_id, "KILLED")


def _worker(
    path: str,
    layers: list[str],
    storage: str,
    tracking_uri: str,
    workdir: str,
    cache_dir: str,
    trials: int | None,
    epochs: int | None,
    timeout: float | None,
    threads: int,
    device: str | None = None,
    sharing: int = 1,
) -> None:
    """One worker process: open the same study and run trials until the shared budget is spent.

    ``device`` overrides the study's (one of the devices of ``run_parallel``), shared with
    ``sharing`` processes in all.
    """
    from ..config import load_study

    _interrupt_once()
    config = load_study(path)
    if device is not None:
        config = config.model_copy(update={"device": device})
        share_device(device, sharing)
    ctx = prepare(
        config,
        layers,
        storage=storage,
        tracking_uri=tracking_uri,
        workdir=workdir,
        cache_dir=cache_dir,
    )
    try:
        run_study(ctx, trials=trials, epochs=epochs, timeout=timeout, threads=threads, queue=False)
    except KeyboardInterrupt:  # its trial was ended as interrupted; no traceback
        raise SystemExit(130) from None


def _interrupt_once() -> None:
    """In a worker process: the first SIGINT or SIGTERM raises KeyboardInterrupt, which ends
    the running trial as interrupted (as Ctrl-C does); later ones, while it does, are ignored."""

    def interrupt(signum: int, frame: Any) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


def _start_and_watch(workers: Sequence[Any], ctx: StudyContext) -> None:
    """Start the worker processes and wait for them, telling ``ctx.events`` of each trial that
    finishes meanwhile (read from the storage every second); stopped (Ctrl-C, SIGTERM), stop
    them too: each ends its running trial as interrupted."""
    seen = _finished_numbers(ctx)
    for w in workers:
        w.start()
    try:
        while any(w.is_alive() for w in workers):
            time.sleep(_WATCH_S)
            seen = _tell_finished(ctx, seen)
        _tell_finished(ctx, seen)
    except BaseException:
        for w in workers:
            if w.is_alive():
                w.terminate()
        for w in workers:
            w.join()
        raise


_WATCH_S = 1.0  # how often a parent process looks for its workers' finished trials


def _finished_numbers(ctx: StudyContext) -> set[int]:
    return {t.number for t in ctx.study.get_trials(deepcopy=False) if t.state.is_finished()}


def _tell_finished(ctx: StudyContext, seen: set[int]) -> set[int]:
    """Tell ``ctx.events.trial_done`` of every trial finished since ``seen``; the new set."""
    if ctx.events.trial_done is None:
        return seen
    trials = ctx.rdb.retry.call(lambda: ctx.study.get_trials(deepcopy=False), "watch")
    for t in sorted(trials, key=lambda t: t.number):
        if t.state.is_finished() and t.number not in seen:
            ctx.events.trial_done(t)
            seen = seen | {t.number}
    return seen


def run_parallel(
    path: str | Path,
    ctx: StudyContext,
    jobs: int,
    *,
    trials: int | None = None,
    epochs: int | None = None,
    timeout: float | None = None,
    devices: Sequence[str] | None = None,
) -> optuna.Study:
    """Run ``jobs`` worker processes on one study (processes, not threads: torch threads and
    MLflow would compete); each gets ``cores // jobs`` torch threads. ``ctx`` was prepared in
    this process, so the dense model is already cached when the workers start.

    ``devices`` (from :func:`admmsearch.runtime.worker_devices`) runs one worker per entry on
    that device instead, several trials at once on each device.
    """
    import multiprocessing as mp

    if devices is not None:
        jobs = len(devices)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    seeds = first_trials(ctx)
    with ctx.lock:
        _queue_first_trials(ctx, seeds)
    spawn = mp.get_context("spawn")
    stores = (ctx.storage, ctx.tracker.uri, str(ctx.workdir), str(ctx.cache_dir))
    args = (str(path), ctx.layers, *stores, trials, epochs, timeout, threads)
    placed = [(d, devices.count(d)) for d in devices] if devices else [(None, 1)] * jobs
    workers = [spawn.Process(target=_worker, args=(*args, *where)) for where in placed]
    _start_and_watch(workers, ctx)
    failed = [w.exitcode for w in workers if w.exitcode != 0]
    if failed:
        raise AdmmSearchError(f"{len(failed)} of {jobs} workers failed (exit codes {failed})")
    update_front(ctx)
    _mark_parent(ctx, Schedule(ctx.config, ctx.layers, study_budget(ctx.config, trials, epochs)))
    return ctx.study
