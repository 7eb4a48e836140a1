"""Many workers on one study: a storage-wide lock, heartbeats, lost trials, the exact budget.

Any number of processes, on any machines, run one study through one Optuna storage. Three
things keep them from losing or doubling work:

* :class:`StorageLock` serializes *claiming* a trial (counting the budget, then asking Optuna
  for a trial) across every process on the storage: a PostgreSQL advisory lock, or a lock file
  beside an SQLite database. The server or the OS drops it if its holder dies.
* :class:`Heartbeat` records, from a background thread, that a claimed trial's worker is alive.
  A trial without a heartbeat for the grace period is failed by the next worker that claims
  (``optuna.storages.fail_stale_trials``); :class:`LostTrials` then ends its MLflow run and
  queues its params again.
* :func:`budget_counts` says how many trials count against the budget and how many run. A
  worker claims only while ``counted + running < budget``, so the budget is never overshot;
  it waits while other workers' trials run, in case one of them is lost and must be redone.

Only PostgreSQL and SQLite storages are supported: the two the lock knows.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import optuna
import sqlalchemy
from filelock import FileLock
from optuna.trial import FrozenTrial, TrialState

from ..errors import StoreError
from ..record import TrialAttr
from ..redact import redact_text, redact_url
from ._outages import Retry, driver_reason

__all__ = [
    "COUNTED",
    "Claim",
    "Heartbeat",
    "LostTrials",
    "RetryingStorage",
    "StorageLock",
    "WAIT",
    "budget_counts",
    "carried",
    "claim",
    "counted_trials",
    "driver_reason",
    "fail_lost_trials",
    "make_storage",
    "storage_errors",
    "trial_budget",
    "worker_info",
]

_log = logging.getLogger("admmsearch.runtime")

#: Trial states that count against the budget (minus interrupted and retried trials).
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_ADVISORY_KEY = int.from_bytes(
    hashlib.sha256(b"admmsearch.storage").digest()[:8], "big", signed=True
)
_DRIVER_HINT = (
    "install the driver with pip install 'admmsearch[postgres]' and write the URL "
    "as postgresql+psycopg://user@host:5432/database"
)


def _store_error(url: str, exc: BaseException) -> StoreError:
    """A one-line error naming the storage, with its password masked everywhere."""
    detail = driver_reason(exc)
    if isinstance(exc, ImportError | ModuleNotFoundError):
        detail = f"{detail}; {_DRIVER_HINT}"
    return StoreError(f"storage {redact_url(url)}: {redact_text(detail, url)}")


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn Optuna's and SQLAlchemy's storage failures inside the block into one-line
    :class:`StoreError` naming the storage (password masked) and the driver's reason."""
    try:
        yield
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
        raise _store_error(url, exc) from exc


def _parse(url: str) -> sqlalchemy.engine.URL:
    try:
        return sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StoreError(
            f"storage {redact_url(url)}: not a database URL; write "
            "sqlite:///file.db or postgresql+psycopg://user@host:5432/db"
        ) from None


class StorageLock:
    """A lock shared by every process on one Optuna storage (``with lock: ...``).

    PostgreSQL: a session-level ``pg_advisory_lock`` held on its own connection. SQLite: a
    lock file beside the database (``<db>.lock``); an in-memory database, which no other
    process can see, gets a plain thread lock. Not reentrant.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = _parse(url)
        backend = parsed.get_backend_name()
        self._engine: sqlalchemy.engine.Engine | None = None
        self._file: FileLock | threading.Lock
        if backend == "postgresql":
            try:
                self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
            except ImportError as exc:
                raise _store_error(url, exc) from None
        elif backend == "sqlite":
            database = parsed.database or ""
            in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
            self._file = threading.Lock() if in_memory else FileLock(f"{database}.lock")
        else:
            raise StoreError(
                f"storage {redact_url(url)}: workers coordinate through PostgreSQL "
                f"or SQLite, not {backend}"
            )
        self._connection: sqlalchemy.engine.Connection | None = None

    def __enter__(self) -> StorageLock:
        if self._engine is None:
            self._file.acquire()
            return self
        try:
            connection = self._engine.connect()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise _store_error(self.url, exc) from None
        try:
            connection.execute(
                sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_KEY}
            )
        except sqlalchemy.exc.SQLAlchemyError as exc:
            connection.close()
            raise _store_error(self.url, exc) from None
        self._connection = connection
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._engine is None:
            self._file.release()
            return
        connection, self._connection = self._connection, None
        try:
            connection.execute(
                sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_KEY}
            )
        finally:
            connection.close()  # closing the session releases the lock in any case


class RetryingStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose every call goes through ``retry``
    (:class:`~admmsearch.outages.Retry`): a worker rides out a database outage shorter than
    its patience, and a longer one ends in one line naming the storage.

    Every method Optuna's ``RDBStorage`` defines is wrapped (the public ones, and the private
    ones Optuna's trial cache calls); calls made inside another (a session's helpers) run once,
    as part of the outer call.
    """

    def __init__(self, url: str, *, retry: Retry, **kwargs: Any) -> None:
        self.retry = retry
        super().__init__(url, **kwargs)


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return self.retry.call(lambda: method(self, *args, **kwargs), name)

    return call


for _name, _method in list(vars(optuna.storages.RDBStorage).items()):
    if inspect.isfunction(_method) and not _name.startswith("__"):
        setattr(RetryingStorage, _name, _retried(_name))
del _name, _method


def make_storage(
    url: str,
    *,
    heartbeat_interval_s: int,
    grace_period_s: int,
    on_lost: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    patience_s: float = 0.0,
) -> RetryingStorage:
    """The Optuna storage at ``url`` with heartbeats on; ``on_lost`` runs for each lost trial.

    Args:
        patience_s: how long each storage call is retried while the database is unreachable
            (a worker passes ``workers.grace_period_s``); 0 tries once. Either way a storage
            that fails ends in one :class:`StoreError` line.

    Raises:
        StoreError: the database cannot be reached or its driver is missing (password masked).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RetryingStorage(
                url,
                retry=Retry(url, patience_s),
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=heartbeat_interval_s,
                grace_period=grace_period_s,
                heartbeat_stale_trial_callback=on_lost,
            )
    except (ImportError, sqlalchemy.exc.SQLAlchemyError) as exc:
        raise _store_error(url, exc) from None


def worker_info() -> dict[str, Any]:
    """Who runs a trial, stored on it as the ``worker`` user attribute."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


class Heartbeat:
    """Records a trial's heartbeat now and every ``interval_s`` seconds until the block ends.

    Each beat goes through the storage's :class:`Retry` (the first one too): while the
    database is unreachable it is tried again with backoff, and a beat given up is counted in
    ``failed_beats`` and tried afresh at the next interval. The thread never dies and never
    prints (details go to the ``admmsearch.runtime`` logger at DEBUG level, which ``--debug``
    shows); ending the block stops a beat that is waiting to retry. An outage longer than the
    grace period makes the trial lost, as a dead worker's would be.
    """

    def __init__(self, storage: RetryingStorage, trial_id: int, interval_s: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat-{trial_id}", daemon=True
        )
        self.beats = 0  # beats recorded by the thread
        self.failed_beats = 0

    def _record(self) -> None:
        self._storage.record_heartbeat(self._trial_id)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.retry.call(self._record, "heartbeat", self._stop.wait)
            except Exception as exc:  # noqa: BLE001 - an outage: try afresh next interval
                if self._stop.is_set():  # the trial ended while this beat waited to retry
                    return
                self.failed_beats += 1
                _log.debug(
                    "heartbeat of trial id %s failed: %s", self._trial_id, exc, exc_info=True
                )
            else:
                self.beats += 1

    def __enter__(self) -> Heartbeat:
        self._storage.retry.call(self._record, "heartbeat")
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()


class LostTrials:
    """Optuna's callback for a trial whose worker stopped beating (killed, machine gone).

    It ends the trial's MLflow runs through ``end_runs(number, reason)`` and queues the trial
    again with the same params (Optuna's ``RetryHeartbeatStaleTrialCallback``, which records the
    lost trial in the retry's ``failed_trial`` and ``retry_history`` system attributes), unless
    it was already retried ``max_retry`` times; then it stays failed and counts.
    """

    def __init__(self, end_runs: Callable[[int, str], None], max_retry: int) -> None:
        self._end_runs = end_runs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        again = copy.copy(trial)  # the retry starts clean: no stale run id or worker
        again.user_attrs = {TrialAttr.RETRY_OF: trial.number, **carried(trial)}
        with warnings.catch_warnings():  # the retry first: it must not wait on MLflow
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry(study, again)
        worker = trial.user_attrs.get(TrialAttr.WORKER) or {}
        self._end_runs(
            trial.number,
            f"lost: no heartbeat from worker {worker.get('host', '?')} "
            f"pid {worker.get('pid', '?')}",
        )


def carried(trial: FrozenTrial) -> dict[str, Any]:
    """What a trial queued again keeps of the one it repeats (its rung, and the lower-rung
    trial it continues: :data:`TrialAttr.CARRIED`)."""
    return {k: trial.user_attrs[k] for k in TrialAttr.CARRIED if k in trial.user_attrs}


def fail_lost_trials(study: optuna.Study) -> None:
    """Fail the study's trials whose heartbeat lapsed and run the storage's callback on each."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def counted_trials(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count against the budget: complete, pruned and failed (diverged, or
    lost more than ``max_retry`` times), except trials interrupted (``interrupted`` user
    attribute: Ctrl-C, a tracking failure, an error) and lost trials that were queued again
    (named in another trial's ``retry_history``): their retry counts instead."""
    trials = list(trials)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    return [
        t
        for t in trials
        if t.state in COUNTED
        and t.number not in retried
        and not t.user_attrs.get(TrialAttr.INTERRUPTED)
    ]


def budget_counts(trials: Iterable[FrozenTrial]) -> tuple[int, int]:
    """``(counted, running)``: trials that count against the budget (:func:`counted_trials`),
    and trials running."""
    trials = list(trials)
    running = sum(1 for t in trials if t.state == TrialState.RUNNING)
    return len(counted_trials(trials)), running


@dataclass(frozen=True)
class Claim:
    """A trial this worker runs, with its storage id (for heartbeats)."""

    trial: optuna.Trial
    trial_id: int


#: What a study's ``decide`` answers while others' trials may still change what it can start.
WAIT: Final = object()


def claim(
    study: optuna.Study,
    storage: RetryingStorage,
    lock: StorageLock,
    *,
    decide: Callable[[optuna.Study, list[FrozenTrial]], Any],
    deadline: float | None,
    poll_s: float,
) -> Claim | None:
    """Start the next trial this worker may run, waiting while others' trials run.

    Under the lock: fail lost trials (queuing their retries), then ask ``decide(study,
    trials)``: None when the budget is spent, :data:`WAIT` while running trials may still
    change that, else a function that starts the trial (it sees the lock held). A claimed
    trial gets its first heartbeat and the ``worker`` user attribute before the lock is
    released. Each try, the waits included, is retried as a whole through the storage's
    :class:`Retry` while the database is unreachable; a trial that a try left without its
    worker (the outage struck between its start and the heartbeat) is taken over by the next
    claim, under the lock. Returns None once the budget is spent or ``deadline``
    (``time.monotonic()``) has passed.

    Raises:
        StoreError: the storage stayed unreachable for the retry's patience.
    """
    while deadline is None or time.monotonic() < deadline:
        claimed = storage.retry.call(lambda: _try_claim(study, storage, lock, decide), "claim")
        if claimed is not WAIT:
            return claimed
        time.sleep(
            poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic()))
        )
    return None


def _try_claim(
    study: optuna.Study,
    storage: RetryingStorage,
    lock: StorageLock,
    decide: Callable[[optuna.Study, list[FrozenTrial]], Any],
) -> Any:
    """One claim under the lock: a trial left without its worker, the trial ``decide``
    starts, None when the budget is spent, or :data:`WAIT`."""
    with lock:
        fail_lost_trials(study)
        trials = study.get_trials(deepcopy=False)
        orphan = next((t for t in trials if _unowned(t)), None)
        if orphan is not None:
            trial_id = _trial_id(study, storage, orphan.number)
            return _own(study, storage, optuna.Trial(study, trial_id))
        start = decide(study, trials)
        if start is None or start is WAIT:
            return start
        return _own(study, storage, start())


def trial_budget(budget: int | None) -> Callable[[optuna.Study, list[FrozenTrial]], Any]:
    """The plain ``decide`` of :func:`claim`: a new trial (Optuna's ``ask``) while counted and
    running trials are fewer than ``budget``; None once ``budget`` trials count."""

    def decide(study: optuna.Study, trials: list[FrozenTrial]) -> Any:
        counted, running = budget_counts(trials)
        if budget is not None and counted >= budget:
            return None
        if budget is not None and counted + running >= budget:
            return WAIT
        return lambda: _ask(study)

    return decide


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():  # we record heartbeats ourselves, see Heartbeat
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


def _unowned(trial: FrozenTrial) -> bool:
    """A running trial that no worker owns: a claim stopped between ask and its heartbeat."""
    return trial.state == TrialState.RUNNING and TrialAttr.WORKER not in trial.user_attrs


def _trial_id(study: optuna.Study, storage: RetryingStorage, number: int) -> int:
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def _own(study: optuna.Study, storage: RetryingStorage, trial: optuna.Trial) -> Claim:
    """Make ``trial`` this worker's: its first heartbeat, then the ``worker`` attribute."""
    trial_id = _trial_id(study, storage, trial.number)
    storage.record_heartbeat(trial_id)
    trial.set_user_attr(TrialAttr.WORKER, worker_info())
    return Claim(trial, trial_id)
