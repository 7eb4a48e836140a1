"""Riding out a short outage of the Optuna storage: one retry rule for every storage call.

A worker's database calls (claiming a trial, polling the budget, heartbeats, writing a trial's
attributes and constraints, telling Optuna how it ended, updating the front) all go through
:meth:`Retry.call`. A call that fails because the database cannot be reached (a connection
refused, dropped or timed out; for SQLite, a database locked by another process) is tried again
after 0.5 s, then 1, 2, 4 and 8 s between tries, for up to ``patience_s`` seconds (a worker
uses ``workers.grace_period_s``: an outage shorter than the grace period costs nothing). Then
it is given up with one :class:`~admmsearch.errors.StoreError` line naming the storage, its
password masked, and the driver's reason. Any other failure is raised at once.

Calls nest: only the outermost one retries. A claim, retried as a whole under the storage lock,
runs its inner storage calls once each; a lone ``trial.set_user_attr`` retries by itself.

Example::

    retry = Retry("postgresql+psycopg://optuna@db.lan/optuna", patience_s=180)
    counted = retry.call(lambda: len(study.trials), "count")
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import optuna
import sqlalchemy

from ..errors import StoreError
from ..redact import redact_text, redact_url

__all__ = ["Retry", "driver_reason", "transient"]

_log = logging.getLogger("admmsearch.runtime")
_local = threading.local()  # .active: an outer call of this thread is already retrying
_FIRST_WAIT_S = 0.5
_LONGEST_WAIT_S = 8.0
#: SQLAlchemy's kinds of "the database could not be reached or answered" (psycopg's
#: OperationalError, a connection closed under a query, a pool that timed out).
_UNREACHABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,
)
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")
T = TypeVar("T")


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and what caused it (``__cause__``, else ``__context__``), outermost first."""
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def driver_reason(exc: BaseException) -> str:
    """The first line of the database driver's own message behind ``exc``.

    Optuna wraps driver errors in ``StorageInternalError`` ("An exception is raised during the
    commit...") and SQLAlchemy in its own classes; the reason is found by walking ``__cause__``
    and ``__context__`` to the driver's exception (``DBAPIError.orig``), else to the innermost
    exception that is not Optuna's wrapper.
    """
    chain = _chain(exc)
    for link in chain:
        if isinstance(link, sqlalchemy.exc.DBAPIError) and link.orig is not None:
            return _first_line(link.orig)
    plain = [e for e in chain if not isinstance(e, optuna.exceptions.StorageInternalError)]
    return _first_line(plain[-1] if plain else chain[-1])


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def transient(exc: BaseException, url: str = "") -> bool:
    """Whether ``exc`` says the database could not be reached, so that trying again later
    may succeed: a connection error anywhere in its chain. For SQLite (``url``), whose every
    error is an ``OperationalError``, only a database locked or busy."""
    for link in _chain(exc):
        if isinstance(link, _UNREACHABLE):
            if not url.startswith("sqlite"):
                return True
            return any(text in str(link) for text in _SQLITE_BUSY)
    return False


@dataclass
class Retry:
    """Retries the storage calls of one worker (see the module's docstring).

    Attributes:
        url: the storage, for messages (its password is masked).
        patience_s: how long a call is retried before it is given up; 0 tries once.
        setting: where ``patience_s`` comes from, named when a call is given up.
        on_call: called with the name of every outermost call before it runs (where a test
            cuts the database at a chosen call, or a debugger watches them).
        retried: how many times each call, by name, was tried again.
    """

    url: str
    patience_s: float = 0.0
    setting: str = "workers.grace_period_s"
    on_call: Callable[[str], None] | None = None
    retried: Counter[str] = field(default_factory=Counter)

    def call(
        self, fn: Callable[[], T], what: str, wait: Callable[[float], bool | None] = time.sleep
    ) -> T:
        """``fn()``, tried again while the storage is unreachable, for up to ``patience_s``.

        Args:
            fn: the storage call (or a unit of them, such as a claim).
            what: its name, for ``on_call``, ``retried`` and the debug log.
            wait: sleeps between tries; one that returns True (``threading.Event.wait`` of a
                stop event) gives up at once.

        Raises:
            StoreError: the storage stayed unreachable for ``patience_s``; one line naming it
                and the driver's reason.
            Exception: whatever else ``fn`` raised, unchanged.
        """
        if getattr(_local, "active", False):
            return fn()
        if self.on_call is not None:
            self.on_call(what)
        _local.active = True
        try:
            return self._tries(fn, what, wait)
        finally:
            _local.active = False

    def _tries(self, fn: Callable[[], T], what: str, wait: Callable[[float], bool | None]) -> T:
        start, delay = time.monotonic(), _FIRST_WAIT_S
        while True:
            try:
                return fn()
            except Exception as exc:
                if not transient(exc, self.url):
                    raise
                waited = time.monotonic() - start
                if waited + delay > self.patience_s:
                    raise self._given_up(exc, waited) from exc
                _log.debug("storage call %s failed, again in %.1f s: %s", what, delay, exc)
            self.retried[what] += 1
            if wait(delay):
                raise StoreError(f"storage {redact_url(self.url)}: {what} stopped while retrying")
            delay = min(2 * delay, _LONGEST_WAIT_S)

    def _given_up(self, exc: BaseException, waited: float) -> StoreError:
        reason = redact_text(driver_reason(exc), self.url)
        tried = ""
        if self.patience_s:
            tried = (
                f"; gave up after {waited:.0f} s of retries ({self.setting} is "
                f"{self.patience_s:g} s)"
            )
        return StoreError(f"storage {redact_url(self.url)}: {reason}{tried}")
