"""Outages while a study runs: the PostgreSQL database refusing connections or dropped, the
MLflow tracking server killed. Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth),
as tests/test_many_workers.py does; fails, never skips, without it."""

from __future__ import annotations

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
from optuna.trial import TrialState

from admmsearch.config import load_study, resolve_layers
from admmsearch.errors import StoreError, TrackingError
from admmsearch.runtime._workers import Heartbeat, make_storage
from admmsearch.search.study import finished_count, prepare, run_study
from admmsearch.tracking import search_runs

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
SECRET = "Outage-pw-99"


def _admin(*statements: str) -> None:
    try:
        with psycopg.connect(ADMIN, autocommit=True, connect_timeout=5) as conn:
            for statement in statements:
                conn.execute(statement)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not running on 127.0.0.1:5432 ({exc}); .ci/run starts it")


@pytest.fixture()
def database():
    name = f"admmsearch_outage_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    yield name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def thread_deaths(monkeypatch) -> list[str]:
    """Threads that die of an exception during the test (they would print a traceback)."""
    deaths: list[str] = []
    monkeypatch.setattr(
        threading, "excepthook", lambda args: deaths.append(f"{args.thread}: {args.exc_value}")
    )
    return deaths


def _last_beat(database: str) -> float:
    """Seconds since the newest heartbeat of the database's trials, by the server's clock."""
    with psycopg.connect(f"{ADMIN[: -len('postgres')]}{database}", connect_timeout=5) as conn:
        (age,) = conn.execute(
            "SELECT extract(epoch FROM now() - max(heartbeat)) FROM trial_heartbeats"
        ).fetchone()
    return float(age)


def test_heartbeats_survive_a_database_outage_and_resume(database, thread_deaths) -> None:
    """Connections refused for 3 s (Optuna raises StorageInternalError): the heartbeat thread
    keeps going, beats resume once the database is back, and the trial completes."""
    url = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/{database}"
    storage = make_storage(url, heartbeat_interval_s=1, grace_period_s=60)
    study = optuna.create_study(study_name="blip", storage=storage)
    trial = study.ask()
    with Heartbeat(storage, trial._trial_id, 0.25) as beat:
        time.sleep(1.0)
        _admin(
            f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false',
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'",
        )
        time.sleep(3.0)
        _admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        time.sleep(2.0)
        assert _last_beat(database) < 1.0  # beating again
    assert beat.failed_beats >= 3 and beat.beats >= 8
    study.tell(trial, 1.0)
    assert study.trials[0].state == TrialState.COMPLETE
    assert thread_deaths == []


def _study_file(tmp_path: Path, tiny_study, name: str, **changes) -> Path:
    return tiny_study(
        name=name,
        enqueue=[],
        budget={"trials": 3},
        pipeline={
            "admm_prune": {"train": {"epochs": 3, "lr": 0.02, "batch_size": 32}},
            "retrain": {"epochs": 1, "lr": 0.02, "batch_size": 32},
            "admm_quantize": {"train": {"epochs": 1, "lr": 0.01, "batch_size": 32}},
            "quant_retrain": {"train": {"epochs": 1}, "shares": [1.0]},
        },
        workers={"heartbeat_interval_s": 1, "grace_period_s": 30},
        **changes,
    )


@pytest.mark.slow
def test_a_database_dropped_mid_trial_is_one_line_naming_it_and_the_driver_reason(
    tmp_path, tiny_study, database, thread_deaths
) -> None:
    path = _study_file(tmp_path, tiny_study, "dropped")
    config = load_study(path)
    url = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/{database}"
    ctx = prepare(
        config,
        resolve_layers(config),
        storage=url,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        workdir=tmp_path / "work",
    )

    def drop_in_second_trial(stage: str, epoch: int, loss: float) -> None:
        if len(ctx.study.trials) == 2 and stage == "admm_prune" and epoch == 0:
            _admin(f'DROP DATABASE "{database}" WITH (FORCE)')
            time.sleep(2.5)  # a few heartbeats fail meanwhile

    with pytest.raises(StoreError) as err:
        run_study(ctx, on_epoch=drop_in_second_trial)
    message = str(err.value)
    masked = f"postgresql+psycopg://postgres:***@127.0.0.1:5432/{database}"
    assert message.startswith(f"storage {masked}: ")
    assert f'database "{database}" does not exist' in message, message
    assert "\n" not in message and SECRET not in message
    assert "invalid data in the commit" not in message
    assert thread_deaths == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_server(root: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on ``port`` with an SQLite store in ``root``, once it answers."""
    log = (root / "server.log").open("a")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer: {(root / 'server.log').read_text()[-3000:]}")


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


@pytest.mark.slow
def test_a_tracking_server_lost_mid_trial_gives_up_soon_and_resume_ends_its_run(
    tmp_path, tiny_study
) -> None:
    """The server is killed in trial 1: the worker stops within a minute with one line saying
    the server is unreachable; trial 1 does not count; once the server is back, resuming runs
    its params again and ends its run, left RUNNING, as KILLED with the reason."""
    root = tmp_path / "server"
    root.mkdir()
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    path = _study_file(tmp_path, tiny_study, "lost-server")
    config = load_study(path)
    layers = resolve_layers(config)
    stores = dict(storage=f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=uri)
    server = _mlflow_server(root, port)
    killed_at = []
    try:
        ctx = prepare(config, layers, **stores, workdir=tmp_path / "work")

        def kill_in_second_trial(stage: str, epoch: int, loss: float) -> None:
            if len(ctx.study.trials) == 2 and not killed_at:
                _kill(server)
                killed_at.append(time.monotonic())

        with pytest.raises(TrackingError) as err:
            run_study(ctx, on_epoch=kill_in_second_trial)
        assert time.monotonic() - killed_at[0] < 60
        assert err.value.unreachable
        assert str(err.value).startswith(f"tracking server {uri} is unreachable (")
        stopped = ctx.study.trials[1]
        assert stopped.state == TrialState.FAIL and stopped.user_attrs["interrupted"]
        assert finished_count(ctx.study) == 1

        server = _mlflow_server(root, port)
        study = run_study(prepare(config, layers, **stores, workdir=tmp_path / "work"))
        assert finished_count(study) == 3
        retry = [t for t in study.trials if t.user_attrs.get("retry_of") == 1]
        assert len(retry) == 1 and retry[0].params == stopped.params
        runs = search_runs(uri, config.name)
        runs = runs[runs["tags.admmsearch.role"] == "trial"]
        assert "RUNNING" not in set(runs["status"])
        lost = runs[runs["run_id"] == stopped.user_attrs["mlflow_run_id"]].iloc[0]
        assert lost["status"] == "KILLED"
        assert "is unreachable" in lost["tags.admmsearch.fail_reason"]
    finally:
        _kill(server)


def test_a_dying_background_thread_is_one_line_without_debug(tmp_path, monkeypatch, capsys):
    from click.testing import CliRunner

    from admmsearch.cli import main

    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # restored afterwards
    monkeypatch.setenv("ADMMSEARCH_STORAGE", f"postgresql://u:{SECRET}@h/db")
    result = CliRunner().invoke(main, ["list", "--storage", f"sqlite:///{tmp_path / 'o.db'}"])
    assert result.exit_code == 0, result.output

    def die() -> None:
        raise RuntimeError(f"lost postgresql://u:{SECRET}@h/db\nsecond line")

    thread = threading.Thread(target=die, name="heartbeat-7")
    thread.start()
    thread.join()
    err = capsys.readouterr().err
    assert err == (
        "warning: thread heartbeat-7 stopped: RuntimeError: lost postgresql://u:***@h/db "
        "(--debug shows the traceback)\n"
    )
