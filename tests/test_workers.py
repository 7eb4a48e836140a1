"""Many workers on one study, the parts that need no server: the budget count, the storage lock
on SQLite, a lost trial failed and retried, the dense cache under concurrency, password masking.
The PostgreSQL and MLflow-server tests are in test_many_workers.py."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from admmsearch.config import StudyConfig, load_study, resolve_layers
from admmsearch.data import load_dataset
from admmsearch.dense import dense_model
from admmsearch.errors import ConfigError, StoreError
from admmsearch.locations import resolve_cache_dir
from admmsearch.redact import redact_text, redact_url
from admmsearch.runtime._workers import (
    StorageLock,
    budget_counts,
    claim,
    fail_lost_trials,
    trial_budget,
)
from admmsearch.search import study as study_module
from admmsearch.search.space import suggest
from admmsearch.search.study import finished_count, prepare, run_study
from admmsearch.tracking import search_runs

SECRET = "S3cret-pw"


def test_budget_counts_skip_interrupted_and_retried_trials() -> None:
    study = optuna.create_study()
    dist = {"x": FloatDistribution(0, 1)}

    def add(state, value=None, user_attrs=None, system_attrs=None):
        study.add_trial(
            optuna.create_trial(
                state=state,
                value=value,
                params={"x": 0.5},
                distributions=dist,
                user_attrs=user_attrs or {},
                system_attrs=system_attrs or {},
            )
        )

    add(TrialState.COMPLETE, 1.0)  # 0 counts
    add(TrialState.PRUNED)  # 1 counts
    add(TrialState.FAIL, user_attrs={"fail_reason": "diverged"})  # 2 counts
    add(TrialState.FAIL, user_attrs={"interrupted": True})  # 3 Ctrl-C: its requeue counts
    add(TrialState.FAIL)  # 4 lost, retried by 5
    add(TrialState.FAIL, system_attrs={"failed_trial": 4, "retry_history": [4]})  # 5 lost again
    add(TrialState.COMPLETE, 2.0, system_attrs={"failed_trial": 4, "retry_history": [4, 5]})
    add(TrialState.WAITING)  # 7 queued: neither
    add(TrialState.RUNNING)  # 8 running
    assert budget_counts(study.trials) == (4, 1)
    assert finished_count(study) == 4


def test_workers_section_defaults_and_errors(tiny_study) -> None:
    config = StudyConfig.model_validate({"name": "x", "model": "digits-cnn", "dataset": "digits"})
    w = config.workers
    assert (w.heartbeat_interval_s, w.grace_period_s, w.max_retry, w.cache_dir) == (
        60,
        180,
        3,
        None,
    )
    with pytest.raises(ConfigError, match=r"workers.max_retry: must be >= 0, got -1"):
        load_study(tiny_study(workers={"max_retry": -1}))
    with pytest.raises(
        ConfigError,
        match=r"workers: grace_period_s \(30\) must be longer than "
        r"heartbeat_interval_s \(30\)",
    ):
        load_study(tiny_study(workers={"heartbeat_interval_s": 30, "grace_period_s": 30}))


def test_cache_dir_comes_from_option_file_environment_or_workdir(
    tmp_path, tiny_study, monkeypatch
) -> None:
    monkeypatch.delenv("ADMMSEARCH_CACHE_DIR", raising=False)
    plain = load_study(tiny_study(workers={}))
    shared = load_study(tiny_study(workers={"cache_dir": "/shared/cache"}))
    assert resolve_cache_dir(plain, None, tmp_path / "work") == tmp_path / "work" / "cache"
    monkeypatch.setenv("ADMMSEARCH_CACHE_DIR", "/env/cache")
    assert resolve_cache_dir(plain, None, "w") == Path("/env/cache")
    assert resolve_cache_dir(shared, None, "w") == Path("/shared/cache")
    assert resolve_cache_dir(shared, "/option", "w") == Path("/option")


def test_passwords_are_masked_in_urls_text_and_the_logged_study(tiny_study) -> None:
    url = f"postgresql+psycopg://optuna:{SECRET}@db.lan:5432/optuna"
    assert redact_url(url) == "postgresql+psycopg://optuna:***@db.lan:5432/optuna"
    assert redact_url("http://mlflow:5000") == "http://mlflow:5000"
    assert redact_url("sqlite:///a.db") == "sqlite:///a.db"
    assert redact_url("postgresql+psycopg://postgres@h/db") == "postgresql+psycopg://postgres@h/db"
    assert redact_url(f"postgres ql://u:{SECRET}@h/db") == "postgres ql://u:***@h/db"
    odd = "http://u:p%40ss@host:5000"
    assert redact_text("failed: http://u:p%40ss@host:5000/api and p@ss", odd) == (
        "failed: http://u:***@host:5000/api and ***"
    )
    config = load_study(tiny_study(storage=url, tracking_uri=f"http://u:{SECRET}@h"))
    assert config.storage == url  # the real URL is still used to connect
    assert SECRET not in yaml.safe_dump(config.resolved_dict())
    assert config.resolved_dict()["tracking_uri"] == "http://u:***@h"


def test_unusable_storages_are_refused_with_the_password_masked() -> None:
    with pytest.raises(StoreError, match=r"through PostgreSQL or SQLite, not mysql"):
        StorageLock(f"mysql://root:{SECRET}@127.0.0.1/optuna")
    with pytest.raises(StoreError) as err:
        StorageLock(f"postgres ql://u:{SECRET}@h/db")
    assert "not a database URL" in str(err.value) and SECRET not in str(err.value)


def test_sqlite_lock_is_held_by_one_holder_at_a_time(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    events: list[tuple[str, str]] = []

    def hold(name: str) -> None:
        with StorageLock(url):  # each its own lock object, as in separate processes
            events.append((name, "in"))
            time.sleep(0.2)
            events.append((name, "out"))

    threads = [threading.Thread(target=hold, args=(n,)) for n in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (tmp_path / "optuna.db.lock").exists()
    assert [e for _, e in events] == ["in", "out"] * 3
    assert all(events[i][0] == events[i + 1][0] for i in range(0, 6, 2))


@pytest.mark.slow
def test_racing_workers_train_the_dense_model_once(tmp_path, tiny_study) -> None:
    config = load_study(tiny_study())
    layers = resolve_layers(config)
    data = load_dataset("digits", seed=0, limit_train=200)
    results = []

    def worker() -> None:
        results.append(dense_model(config, data, tmp_path / "cache", layers))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.trained for r in results) == [False, False, True]
    first = results[0].state
    for r in results[1:]:
        assert all((r.state[k] == v).all() for k, v in first.items())
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.suffix == ".tmp"] == []


@pytest.mark.slow
def test_lost_trial_is_failed_retried_with_its_params_and_its_run_killed(
    tmp_path, tiny_study
) -> None:
    """A worker claims trial 0 and dies without a word (no heartbeat after the first); the next
    worker fails it after the grace period, kills its MLflow run and runs it again."""
    workers = {"heartbeat_interval_s": 1, "grace_period_s": 2, "max_retry": 1}
    path = tiny_study(name="digits-lost", workers=workers, budget={"trials": 2})
    config = load_study(path)
    layers = resolve_layers(config)
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"
    ctx = prepare(
        config,
        layers,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        tracking_uri=tracking,
        workdir=tmp_path / "work",
    )
    dead = claim(ctx.study, ctx.rdb, ctx.lock, decide=trial_budget(2), deadline=None, poll_s=1)
    suggest(dead.trial, config, layers)
    dead.trial.set_user_attr("mlflow_run_id", ctx.tracker.trial_run(ctx.parent_run, 0))
    time.sleep(3.5)  # past the grace period (the database clock counts whole seconds)
    study = run_study(ctx)
    lost, retry, other = study.trials
    assert lost.state == TrialState.FAIL and not lost.user_attrs.get("interrupted")
    assert retry.state == other.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0 and retry.user_attrs["retry_of"] == 0
    assert retry.params == lost.params
    assert retry.user_attrs["worker"]["pid"] == other.user_attrs["worker"]["pid"]
    assert finished_count(study) == 2
    runs = search_runs(tracking, config.name)
    runs = runs[runs["tags.admmsearch.role"] == "trial"]
    by_trial = {
        int(n): (s, r)
        for n, s, r in zip(
            runs["tags.admmsearch.trial"],
            runs["status"],
            runs["tags.admmsearch.fail_reason"],
            strict=True,
        )
    }
    assert by_trial[0][0] == "KILLED" and by_trial[0][1].startswith("lost: no heartbeat")
    assert {n: s for n, (s, _) in by_trial.items()} == {0: "KILLED", 1: "FINISHED", 2: "FINISHED"}


class _Stalled:
    """A worker whose heartbeat thread stalls: no beat after the claim's first one."""

    def __init__(self, *args) -> None:
        pass

    def __enter__(self) -> _Stalled:
        return self

    def __exit__(self, *exc) -> None:
        pass


@pytest.mark.slow
def test_stalled_worker_drops_its_trial_once_another_retried_it(
    tmp_path, tiny_study, monkeypatch
) -> None:
    """Mid-trial, the worker's heartbeats lapse and another worker fails and requeues its trial:
    when the stalled worker gets on, it drops its result (its run KILLED, not FINISHED) and
    runs the retry; the budget of one trial is met by the retry alone."""
    workers = {"heartbeat_interval_s": 1, "grace_period_s": 2}
    config = load_study(tiny_study(name="digits-stall", workers=workers, budget={"trials": 1}))
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"
    ctx = prepare(
        config,
        resolve_layers(config),
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        tracking_uri=tracking,
        workdir=tmp_path / "work",
    )
    monkeypatch.setattr(study_module, "Heartbeat", _Stalled)
    stalled = []

    def stall_then_other_worker_claims(stage: str, epoch: int, loss: float) -> None:
        if not stalled:
            stalled.append(stage)
            time.sleep(3.5)
            fail_lost_trials(ctx.study)

    study = run_study(ctx, on_epoch=stall_then_other_worker_claims)
    first, retry = study.trials
    assert first.state == TrialState.FAIL and "interrupted" not in first.user_attrs
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["failed_trial"] == 0
    assert finished_count(study) == 1
    runs = search_runs(tracking, config.name)
    runs = runs[runs["tags.admmsearch.role"] == "trial"].set_index("tags.admmsearch.trial")
    assert runs.loc["0", "status"] == "KILLED" and runs.loc["1", "status"] == "FINISHED"
    assert runs.loc["0", "tags.admmsearch.fail_reason"] == (
        "lost: heartbeats lapsed; retried elsewhere"
    )


@pytest.mark.slow
def test_worker_error_masks_the_storage_password(tmp_path, tiny_study) -> None:
    """A real `admmsearch worker` that cannot reach its storage says so in one line, and
    neither its output nor its error shows the password."""
    path = tiny_study()
    url = f"postgresql+psycopg://optuna:{SECRET}@127.0.0.1:1/optuna"
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "admmsearch"),
            "worker",
            str(path),
            "--storage",
            url,
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlruns.db'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "error: storage postgresql+psycopg://optuna:***@127.0.0.1:1/optuna" in done.stderr
    assert SECRET not in done.stdout + done.stderr
