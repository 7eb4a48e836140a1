"""Optuna's INFO lines ("A new study created in RDB ...") kept out of a study's output, for the
block only: the library leaves Optuna's global verbosity as it found it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import optuna

__all__ = ["quiet_optuna"]


@contextmanager
def quiet_optuna(level: int = optuna.logging.WARNING) -> Iterator[None]:
    """Optuna logs at ``level`` and above inside the block, then as before.

    >>> before = optuna.logging.get_verbosity()
    >>> with quiet_optuna():
    ...     optuna.logging.get_verbosity() == optuna.logging.WARNING
    True
    >>> optuna.logging.get_verbosity() == before
    True
    """
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(level, verbosity))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)
