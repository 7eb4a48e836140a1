"""Many `admmsearch worker` processes on one study, against the real PostgreSQL on 127.0.0.1:5432
and a real `mlflow server` (PostgreSQL backend) started here.

These tests fail, never skip, when PostgreSQL is not running: `.ci/run` starts it.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import optuna
import psycopg
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from admmsearch.runtime._workers import StorageLock, budget_counts
from admmsearch.tracking import search_runs

PG = "host=127.0.0.1 port=5432 user=postgres"
SECRET = "S3cret-pw"
BIN = Path(sys.executable).parent


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(f"{PG} dbname=postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not running on 127.0.0.1:5432 ({exc}); start it with "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        )


def _new_database() -> str:
    name = f"admmsearch_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def database():
    """A fresh database for one test, dropped after it."""
    name = _new_database()
    yield name
    _drop_database(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process group we started (the server forks its workers into it)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a free port, PostgreSQL backend, artifacts served from a temp dir;
    yields its URI."""
    root = tmp_path_factory.mktemp("mlflow-server")
    name = _new_database()
    port = _free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"postgresql+psycopg://postgres@127.0.0.1/{name}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(uri, proc, root / "server.log")
        yield uri
    finally:
        _stop(proc)
        log.close()
        _drop_database(name)


def _wait_healthy(uri: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer in {timeout_s} s:\n{log.read_text()[-3000:]}")


def _start_workers(
    tmp_path: Path, study: Path, storage: str, tracking: str, trials: int, count: int
) -> list[tuple[subprocess.Popen, Path]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("ADMMSEARCH_STORAGE", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    workers = []
    for i in range(count):
        out = tmp_path / f"worker-{i}.log"
        proc = subprocess.Popen(
            [
                str(BIN / "admmsearch"),
                "worker",
                str(study),
                "--storage",
                storage,
                "--tracking-uri",
                tracking,
                "--trials",
                str(trials),
            ],
            cwd=tmp_path,
            env=env,
            stdout=out.open("w"),
            stderr=subprocess.STDOUT,
        )
        workers.append((proc, out))
    return workers


def _wait_workers(
    workers: list[tuple[subprocess.Popen, Path]], timeout_s: float = 300
) -> list[int]:
    end = time.monotonic() + timeout_s
    codes = []
    try:
        for proc, _ in workers:
            codes.append(proc.wait(max(1.0, end - time.monotonic())))
    finally:
        for proc, _ in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return codes


def _check_exact(study: optuna.Study, budget: int) -> list[optuna.trial.FrozenTrial]:
    """Exactly ``budget`` trials count, none is left running, numbers run 0..M-1 once each."""
    trials = study.get_trials(deepcopy=False)
    assert budget_counts(trials) == (budget, 0)
    assert [t.number for t in trials] == list(range(len(trials)))
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING,)]
    return trials


def _check_runs(tracking: str, name: str, trials: list[optuna.trial.FrozenTrial]):
    """One FINISHED MLflow run per complete trial, none left running, one parent run."""
    runs = search_runs(tracking, name)
    assert (runs["tags.admmsearch.role"] == "study").sum() == 1
    runs = runs[runs["tags.admmsearch.role"] == "trial"]
    finished = runs[runs["status"] == "FINISHED"]["tags.admmsearch.trial"].astype(int)
    complete = [t.number for t in trials if t.state == TrialState.COMPLETE]
    assert collections.Counter(finished) == collections.Counter(complete)
    assert "RUNNING" not in set(runs["status"])
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert runs[runs["run_id"] == t.user_attrs["mlflow_run_id"]].iloc[0]["status"] == (
                "FINISHED"
            )
    return runs


def test_postgres_lock_is_held_by_one_session_at_a_time(database) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    events: list[tuple[int, str]] = []

    def hold(i: int) -> None:
        with StorageLock(url):  # each its own lock and connection, as separate processes
            events.append((i, "in"))
            time.sleep(0.2)
            events.append((i, "out"))

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e for _, e in events] == ["in", "out"] * 3
    assert all(events[i][0] == events[i + 1][0] for i in range(0, 6, 2))


@pytest.mark.slow
def test_three_workers_run_exactly_the_budget_with_one_run_per_trial(
    tmp_path, tiny_study, database, mlflow_server
) -> None:
    """Three real workers, one study on PostgreSQL, MLflow on a server: exactly 6 trials, none
    duplicated or missing, one run each; the passwords in both URLs show up nowhere."""
    name = "digits-three"
    study_file = tiny_study(name=name, workers={"heartbeat_interval_s": 2, "grace_period_s": 10})
    storage = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/{database}"
    tracking = mlflow_server.replace("http://", f"http://admm:{SECRET}@")
    workers = _start_workers(tmp_path, study_file, storage, tracking, trials=6, count=3)
    codes = _wait_workers(workers)
    logs = [out.read_text() for _, out in workers]
    assert codes == [0, 0, 0], "\n".join(log[-2000:] for log in logs)

    study = optuna.load_study(study_name=name, storage=storage)
    trials = _check_exact(study, 6)
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(pids) >= 2 and pids <= {proc.pid for proc, _ in workers}
    runs = _check_runs(mlflow_server, name, trials)

    assert not [log for log in logs if SECRET in log]
    rdb = optuna.storages.RDBStorage(storage)
    attrs = [study.user_attrs, rdb.get_study_system_attrs(rdb.get_study_id_from_name(name))]
    attrs += [a for t in trials for a in (t.user_attrs, t.system_attrs)]
    assert SECRET not in json.dumps(attrs)
    assert SECRET not in runs.to_csv()
    client = MlflowClient(mlflow_server)
    parent = study.user_attrs["mlflow_parent_run_id"]
    names = sorted(a.path for a in client.list_artifacts(parent))
    assert {"front.csv", "study.yaml"} <= set(names)
    for artifact in names:
        if "." in artifact:
            text = Path(client.download_artifacts(parent, artifact, str(tmp_path))).read_bytes()
            assert SECRET.encode() not in text, artifact


@pytest.mark.slow
def test_killed_worker_trial_is_failed_retried_and_nothing_else_lost(
    tmp_path, tiny_study, database, mlflow_server
) -> None:
    """SIGKILL a worker in the middle of a trial: the other worker fails that trial once its
    heartbeat lapses, kills its MLflow run, runs its params again; exactly 5 trials count."""
    name = "digits-kill"
    study_file = tiny_study(
        name=name,
        dataset={"name": "digits"},
        pipeline={
            "admm_prune": {"train": {"epochs": 25, "lr": 0.02, "batch_size": 32}},
            "retrain": {"epochs": 2, "lr": 0.02, "batch_size": 32},
            "admm_quantize": {"train": {"epochs": 1, "lr": 0.01, "batch_size": 32}},
            "quant_retrain": {"train": {"epochs": 1}, "shares": [1.0]},
        },
        search={"keep": {"low": 0.3, "high": 1.0}, "bits": {"choices": [4, 8]}},
        enqueue=[],
        budget={"trials": 5},
        workers={"heartbeat_interval_s": 1, "grace_period_s": 3, "max_retry": 2},
    )
    storage = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    workers = _start_workers(tmp_path, study_file, storage, mlflow_server, trials=5, count=2)
    pids = {proc.pid: proc for proc, _ in workers}
    try:
        victim = _wait_for_running_trial(name, storage, set(pids))
        pids[victim.user_attrs["worker"]["pid"]].send_signal(signal.SIGKILL)
    finally:
        codes = _wait_workers(workers)
    killed_pid = victim.user_attrs["worker"]["pid"]
    assert sorted(codes) == [-signal.SIGKILL, 0], [out.read_text()[-2000:] for _, out in workers]

    study = optuna.load_study(study_name=name, storage=storage)
    trials = _check_exact(study, 5)
    lost = trials[victim.number]
    assert lost.state == TrialState.FAIL and not lost.user_attrs.get("interrupted")
    assert lost.user_attrs["worker"]["pid"] == killed_pid
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == lost.params and retries[0].user_attrs["retry_of"] == lost.number
    assert retries[0].user_attrs["worker"]["pid"] != killed_pid
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [lost.number]
    runs = _check_runs(mlflow_server, name, trials)
    killed = runs[runs["tags.admmsearch.trial"] == str(lost.number)]
    assert list(killed["status"]) == ["KILLED"]
    assert killed.iloc[0]["tags.admmsearch.fail_reason"].startswith("lost: no heartbeat")
    assert str(killed_pid) in killed.iloc[0]["tags.admmsearch.fail_reason"]


def _wait_for_running_trial(
    name: str, storage: str, pids: set[int], timeout_s: float = 180
) -> optuna.trial.FrozenTrial:
    """The first trial seen running with its MLflow run started, after the first trial (so
    the dense model is done and the victim is mid-pipeline)."""
    end = time.monotonic() + timeout_s
    study = None
    while time.monotonic() < end:
        try:
            study = study or optuna.load_study(study_name=name, storage=storage)
        except KeyError:  # not created yet
            time.sleep(0.5)
            continue
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number >= 1 and "mlflow_run_id" in t.user_attrs:
                assert t.user_attrs["worker"]["pid"] in pids
                return t
        time.sleep(0.1)
    pytest.fail(f"no trial of {name} was seen running in {timeout_s} s")
