"""Create, resume and run a study; keep the Pareto front in the study's MLflow parent run.

The budget counts finished trials across every process sharing the storage: completed,
pruned and diverged ones. A trial interrupted by Ctrl-C does not count; its params are queued
again, so resuming neither loses nor duplicates work.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from tqdm.auto import tqdm

from .config import StudyConfig
from .data import DataSplits, load_dataset
from .errors import AdmmSearchError, DivergenceError
from .front import plot_front, trials_frame
from .objective import DenseModel, Objective, dense_model
from .tracking import Tracker, default_tracking_uri

__all__ = [
    "StudyContext",
    "finished_count",
    "make_sampler",
    "open_study",
    "resolve_storage",
    "resolve_tracking",
    "run_parallel",
    "run_study",
    "update_front",
]

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.FAIL)
DEFAULT_STORAGE_FILE = "admmsearch.db"


def resolve_storage(config: StudyConfig, override: str | None = None) -> str:
    """--storage, else the study file, else $ADMMSEARCH_STORAGE, else a local SQLite file."""
    url = override or config.storage or os.environ.get("ADMMSEARCH_STORAGE")
    return url or f"sqlite:///{Path(DEFAULT_STORAGE_FILE).resolve()}"


def resolve_tracking(config: StudyConfig, override: str | None = None) -> str:
    """--tracking-uri, else the study file, else $MLFLOW_TRACKING_URI, else the local mlruns/."""
    uri = override or config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or default_tracking_uri("mlruns")


def make_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded; constrained studies pass constraints to it."""
    s, seed = config.sampler, config.sampler_seed
    if s.name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=s.population_size or 20, seed=seed)
    if s.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(config: StudyConfig, storage: str) -> optuna.Study:
    """Create the study or load it if it exists (same name, same storage)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=config.name, storage=storage,
                               directions=config.directions, sampler=make_sampler(config),
                               load_if_exists=True)


def finished_count(study: optuna.Study) -> int:
    """Trials that count against the budget: finished and not interrupted."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED)
               if not t.user_attrs.get("interrupted"))


@dataclass
class StudyContext:
    """Everything a study's trials share, built once per process."""

    config: StudyConfig
    layers: list[str]
    study: optuna.Study
    storage: str
    tracker: Tracker
    parent_run: str
    data: DataSplits
    dense: DenseModel
    workdir: Path


def prepare(config: StudyConfig, layers: list[str], *, storage: str | None = None,
            tracking_uri: str | None = None, workdir: str | Path = ".admmsearch") -> StudyContext:
    """Open the study and its parent run, load the data, get the (cached) dense model."""
    storage = resolve_storage(config, storage)
    study = open_study(config, storage)
    tracker = Tracker(resolve_tracking(config, tracking_uri), config.name)
    parent = tracker.study_run(config.resolved_dict())
    d = config.dataset
    data = load_dataset(d.name, val_fraction=d.val_fraction, seed=config.seed, root=d.root,
                        download=d.download, limit_train=d.limit_train)
    workdir = Path(workdir)
    dense = dense_model(config, data, workdir / "cache", layers)
    study.set_user_attr("dense", {"val_accuracy": dense.val_accuracy,
                                  "test_accuracy": dense.test_accuracy,
                                  "storage_bits": dense.storage_bits})
    study.set_user_attr("mlflow_parent_run_id", parent)
    tracker.log(parent, metrics={"dense_val_accuracy": dense.val_accuracy,
                                 "dense_test_accuracy": dense.test_accuracy,
                                 "dense_storage_bits": dense.storage_bits})
    return StudyContext(config, layers, study, storage, tracker, parent, data, dense, workdir)


def _queue_first_trials(ctx: StudyContext) -> None:
    """Known-good settings on a new study; the params of interrupted trials on a resumed one."""
    study = ctx.study
    if not study.get_trials(deepcopy=False):
        for params in ctx.config.enqueue:
            study.enqueue_trial(dict(params), skip_if_exists=True)
        return
    requeued = set(study.user_attrs.get("requeued", []))
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if t.user_attrs.get("interrupted") and t.number not in requeued:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            requeued.add(t.number)
    study.set_user_attr("requeued", sorted(requeued))


def update_front(ctx: StudyContext) -> None:
    """Write the front (CSV, PNG, HTML) into the parent run; log front trials' packed models."""
    frame = trials_frame(ctx.study, list(ctx.config.objectives))
    dense = ctx.study.user_attrs["dense"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frame.to_csv(tmp / "front.csv", index=False)
        plot_front(frame, dense, tmp / "front.png", tmp / "front.html")
        for name in ("front.csv", "front.png", "front.html"):
            ctx.tracker.log_file(ctx.parent_run, tmp / name)
    logged = set(ctx.study.user_attrs.get("front_models_logged", []))
    front = frame[frame["front"]]["trial"].tolist() if not frame.empty else []
    for number in front:
        trial = ctx.study.trials[number]
        run_id, path = trial.user_attrs.get("mlflow_run_id"), trial.user_attrs.get("packed_model")
        if number not in logged and run_id and path and Path(path).exists():
            ctx.tracker.log_file(run_id, path, "model")
            logged.add(number)
    ctx.study.set_user_attr("front_models_logged", sorted(logged))


def run_study(ctx: StudyContext, *, trials: int | None = None, timeout: float | None = None,
              threads: int | None = None, progress: bool = False, queue: bool = True,
              on_epoch: Callable[[str, int, float], None] | None = None) -> optuna.Study:
    """Run trials until the budget (all workers together) is spent or ``timeout`` passes."""
    if threads:
        torch.set_num_threads(threads)
    budget = trials if trials is not None else ctx.config.budget.trials
    timeout = timeout if timeout is not None else ctx.config.budget.timeout_s
    if queue:
        _queue_first_trials(ctx)
    remaining = None if budget is None else max(0, budget - finished_count(ctx.study))
    if remaining == 0:
        return ctx.study
    bar = tqdm(total=remaining, desc=ctx.config.name, unit="trial", disable=not progress)
    objective = Objective(ctx.config, ctx.layers, ctx.data, ctx.dense, ctx.tracker,
                          ctx.parent_run, ctx.workdir / "models" / ctx.config.name, on_epoch)

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        if budget is not None and finished_count(study) >= budget:
            study.stop()
        update_front(ctx)

    try:
        ctx.study.optimize(objective, n_trials=remaining, timeout=timeout,
                           catch=(DivergenceError,), callbacks=[after_trial])
    finally:
        bar.close()
    return ctx.study


def _worker(path: str, layers: list[str], storage: str, tracking_uri: str, workdir: str,
            trials: int | None, timeout: float | None, threads: int) -> None:
    """One worker process: open the same study and run trials until the shared budget is spent."""
    from .config import load_study

    ctx = prepare(load_study(path), layers, storage=storage, tracking_uri=tracking_uri,
                  workdir=workdir)
    run_study(ctx, trials=trials, timeout=timeout, threads=threads, queue=False)


def run_parallel(path: str | Path, ctx: StudyContext, jobs: int, *, trials: int | None = None,
                 timeout: float | None = None) -> optuna.Study:
    """Run ``jobs`` worker processes on one study (processes, not threads: torch threads and
    MLflow would compete); each gets ``cores // jobs`` torch threads. ``ctx`` was prepared in
    this process, so the dense model is already cached when the workers start."""
    import multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // jobs)
    _queue_first_trials(ctx)
    spawn = mp.get_context("spawn")
    args = (str(path), ctx.layers, ctx.storage, ctx.tracker.uri, str(ctx.workdir), trials, timeout,
            threads)
    workers = [spawn.Process(target=_worker, args=args) for _ in range(jobs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    failed = [w.exitcode for w in workers if w.exitcode != 0]
    if failed:
        raise AdmmSearchError(f"{len(failed)} of {jobs} workers failed (exit codes {failed})")
    update_front(ctx)
    return ctx.study
