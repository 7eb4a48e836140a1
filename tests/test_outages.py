"""Outages while a study runs: the PostgreSQL database refusing connections, cut at a chosen
storage call (through a TCP proxy started here) or dropped, the MLflow tracking server killed, a
worker told to stop (SIGTERM). Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth),
as tests/test_many_workers.py does; fails, never skips, without it."""

from __future__ import annotations

import contextlib
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
import sqlalchemy
from optuna.trial import TrialState

from admmsearch.config import load_study, resolve_layers
from admmsearch.errors import StoreError, TrackingError
from admmsearch.runtime import (
    Heartbeat,
    Retry,
    StorageLock,
    claim,
    make_storage,
    transient,
    trial_budget,
)
from admmsearch.search.study import finished_count, prepare, run_study
from admmsearch.tracking import HTTP_DEFAULTS, search_runs

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


class _Proxy:
    """A TCP proxy from a free local port to PostgreSQL: :meth:`cut` closes every connection
    through it and refuses new ones for a while, a database outage for its clients alone."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._down_until = 0.0
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, seconds: float) -> None:
        """Drop every connection now and refuse new ones for ``seconds``."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
            for sock in self._open:
                _shut(sock)
            self._open.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut(0)
        self._server.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:  # the timeout, or closed
                continue
            with self._lock:
                if time.monotonic() < self._down_until:
                    _shut(client)
                    continue
                upstream = socket.create_connection(("127.0.0.1", 5432))
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _shut(source)
        _shut(sink)


@pytest.fixture()
def proxy():
    p = _Proxy()
    yield p
    p.close()


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
    settings = {
        "name": name,
        "enqueue": [],
        "budget": {"trials": 3},
        "pipeline": {
            "admm_prune": {"train": {"epochs": 3, "lr": 0.02, "batch_size": 32}},
            "retrain": {"epochs": 1, "lr": 0.02, "batch_size": 32},
            "admm_quantize": {"train": {"epochs": 1, "lr": 0.01, "batch_size": 32}},
            "quant_retrain": {"train": {"epochs": 1}, "shares": [1.0]},
        },
        "workers": {"heartbeat_interval_s": 1, "grace_period_s": 30},
    }
    return tiny_study(**{**settings, **changes})


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
    tmp_path, tiny_study, monkeypatch
) -> None:
    """The server is killed in trial 1: the worker stops within a minute with one line saying
    the server is unreachable; trial 1 does not count; once the server is back, resuming runs
    its params again and ends its run, left RUNNING, as KILLED with the reason. With MLflow's
    HTTP settings as the admmsearch command sets them (a library call leaves them alone)."""
    for name, value in HTTP_DEFAULTS.items():
        monkeypatch.setenv(name, value)
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


def _unreachable() -> Exception:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, OSError("Connection refused"))


def test_a_call_is_retried_while_the_storage_is_unreachable_and_only_then() -> None:
    outcomes = [_unreachable(), _unreachable(), "stored"]
    waits: list[float] = []

    def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    retry = Retry("postgresql+psycopg://u:pw@db/optuna", patience_s=60)
    assert retry.call(call, "tell", wait=waits.append) == "stored"
    assert waits == [0.5, 1.0] and retry.retried == {"tell": 2}
    with pytest.raises(ValueError):  # not an outage: raised at once
        retry.call(lambda: (_ for _ in ()).throw(ValueError("bad value")), "tell")
    assert retry.retried == {"tell": 2}
    assert not transient(
        sqlalchemy.exc.OperationalError("x", {}, Exception("no such table")), "sqlite:///a.db"
    )


def test_a_call_still_failing_after_its_patience_is_one_line_naming_the_storage() -> None:
    retry = Retry("postgresql+psycopg://u:pw@db/optuna", patience_s=1)

    def down() -> None:
        raise _unreachable()

    with pytest.raises(StoreError) as err:
        retry.call(down, "claim", wait=lambda seconds: None)
    assert str(err.value) == (
        "storage postgresql+psycopg://u:***@db/optuna: Connection refused; gave up after 0 s "
        "of retries (workers.grace_period_s is 1 s)"
    )


def test_an_idle_worker_waiting_on_the_budget_rides_out_an_outage(database, proxy) -> None:
    """Budget 1, trial 0 runs on worker A; B waits on the budget. The database is cut for 3 s
    at B's second poll: B tries again, and once A's trial ends B sees the budget spent and
    stops, instead of failing with `connection failed`."""
    through = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{database}"
    direct = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    a = make_storage(through, heartbeat_interval_s=1, grace_period_s=30, patience_s=20)
    study_a = optuna.create_study(study_name="idle", storage=a)
    started = claim(
        study_a, a, StorageLock(through), decide=trial_budget(1), deadline=None, poll_s=0.5
    )
    b = make_storage(through, heartbeat_interval_s=1, grace_period_s=30, patience_s=20)
    study_b = optuna.load_study(study_name="idle", storage=b)
    polls: list[float] = []

    def cut_at_second_poll(what: str) -> None:
        if what == "claim" and len(polls) == 1:
            proxy.cut(3.0)
            threading.Timer(
                5.0,
                lambda: optuna.load_study(study_name="idle", storage=direct).tell(
                    started.trial.number, 1.0
                ),
            ).start()
        polls.append(time.monotonic())

    b.retry.on_call = cut_at_second_poll
    assert (
        claim(study_b, b, StorageLock(through), decide=trial_budget(1), deadline=None, poll_s=0.5)
        is None
    )
    assert b.retry.retried["claim"] >= 1
    assert polls[-1] - polls[1] >= 4.0  # it waited out the outage, then polled on
    assert [t.state for t in study_b.trials] == [TrialState.COMPLETE]


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["claim", "result", "front"])
def test_an_outage_at_a_storage_call_of_a_trial_loses_nothing(
    tmp_path, tiny_study, database, proxy, thread_deaths, moment
) -> None:
    """The database is cut for 3 s (grace period 20 s) exactly when the worker claims its
    trial, writes the finished trial's result, or updates the front: the call is tried again
    once it is back, and the trial completes and counts."""
    workers = {"heartbeat_interval_s": 1, "grace_period_s": 20}
    path = _study_file(
        tmp_path, tiny_study, f"cut-{moment}", budget={"trials": 1}, workers=workers
    )
    config = load_study(path)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{database}"
    ctx = prepare(
        config,
        resolve_layers(config),
        storage=url,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        workdir=tmp_path / "work",
    )
    armed, cut_at = [moment != "result"], []

    def arm_after_training(stage: str, epoch: int, loss: float) -> None:
        # The last stage: the next storage call writes the result.
        if stage.startswith("quant_retrain"):
            armed[0] = True

    def cut(what: str) -> None:
        main = threading.current_thread() is threading.main_thread()
        if main and armed[0] and not cut_at and (moment == "result" or what == moment):
            proxy.cut(3.0)
            cut_at.append(what)

    ctx.rdb.retry.on_call = cut
    study = run_study(ctx, on_epoch=arm_after_training)
    assert cut_at and ctx.rdb.retry.retried[cut_at[0]] >= 1, (cut_at, ctx.rdb.retry.retried)
    if moment == "result":
        # the first call of Objective._set_constraints (trial.set_constraint reads the trial)
        assert cut_at[0] in ("get_trial", "set_trial_system_attr", "set_trial_user_attr")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert finished_count(study) == 1 and "metrics" in study.trials[0].user_attrs
    assert thread_deaths == []


@pytest.mark.slow
def test_sigterm_ends_the_trial_as_interrupted_like_ctrl_c(tmp_path, tiny_study) -> None:
    """`kill` (SIGTERM) on a running `admmsearch run`: the trial is failed as interrupted (it
    does not count and runs again on resume), its MLflow run ends KILLED, and the command
    exits 143 with one line, instead of dying at once with the trial left RUNNING."""
    slow = {"admm_prune": {"train": {"epochs": 200, "lr": 0.02, "batch_size": 32}}}
    path = _study_file(tmp_path, tiny_study, "terminated", budget={"trials": 1}, pipeline=slow)
    db, tracking = tmp_path / "optuna.db", f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"sqlite:///{db}"
    command = [str(Path(sys.executable).parent / "admmsearch"), "run", str(path)]
    proc = subprocess.Popen(
        [*command, "--storage", storage, "--tracking-uri", tracking],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while not _running_trials(db):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "error: stopped by SIGTERM"
    assert "Traceback" not in err
    trial = optuna.load_study(study_name="terminated", storage=storage).trials[0]
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"]
    runs = search_runs(tracking, "terminated")
    run = runs[runs["tags.admmsearch.role"] == "trial"].iloc[0]
    assert run["status"] == "KILLED" and run["tags.admmsearch.fail_reason"] == "interrupted"


def _running_trials(db: Path) -> int:
    if not db.exists():
        return 0
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        try:
            return conn.execute("SELECT count(*) FROM trials WHERE state='RUNNING'").fetchone()[0]
        except sqlite3.OperationalError:  # the tables are not made yet
            return 0
