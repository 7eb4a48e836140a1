"""Where a study writes, and checks of it made before any work, so that a store that clashes
or cannot be written stops the start in one line rather than a traceback after the dense model
trained.

* :func:`resolve_storage`, :func:`resolve_tracking`, :func:`resolve_cache_dir`: the Optuna
  storage, the MLflow tracking store and the caches, each from the command line, else the
  study file, else the environment, else a default in the current folder.

* :func:`writable_folder`: a file can be written in the folder, or in the nearest folder above
  it that exists (for folders admmsearch makes: the caches, the work folder, ``mlruns/``). The
  probe writes and syncs 4 KiB in a temporary file and removes it, so a folder without write
  permission, a read-only file system, a full disk or a file size limit all show here, with the
  system's own reason.
* :func:`check_clash`: the Optuna storage and the MLflow tracking store are different
  databases. Both keep their schema version in a table named ``alembic_version``, so MLflow
  started on an Optuna database adds its tables to it and fails ("Can't locate revision").

Example::

    check_clash("sqlite:////w/admmsearch.db", "sqlite:////w/admmsearch.db")
    # StoreError: tracking URI sqlite:////w/admmsearch.db is the study storage ...
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path

import sqlalchemy

from .config import StudyConfig
from .errors import StoreError
from .redact import redact_url
from .tracking import default_tracking_uri

__all__ = [
    "DEFAULT_STORAGE_FILE",
    "PROBE_BYTES",
    "cache_setting",
    "check_clash",
    "database_file",
    "resolve_cache_dir",
    "resolve_storage",
    "resolve_tracking",
    "writable_folder",
]

#: What the write probe writes (and syncs) before removing it.
PROBE_BYTES = 4096
_OPTUNA_TABLES = {"studies", "trials", "version_info"}
_MLFLOW_TABLES = {"experiments", "runs", "metrics"}


def writable_folder(path: Path) -> str | None:
    """Why a file cannot be written in ``path`` (or, where it does not exist yet, in the
    nearest folder above it that does), as the system says it; None when one can."""
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".admmsearch-probe-") as probe:
            probe.write(b"\0" * PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return f"cannot write in {existing} ({exc.strerror or exc})"
    return None


def database_file(url: str) -> Path | None:
    """The file of an SQLite URL (resolved), else None."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    return None if database.startswith("file:") else Path(database).expanduser().resolve()


def _server_database(url: str) -> tuple[str, str, int | None, str] | None:
    """(backend, host, port, database) of a database server URL, else None."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return None
    if parsed.get_backend_name() in ("sqlite", "file") or not parsed.database:
        return None
    return parsed.get_backend_name(), parsed.host or "", parsed.port, parsed.database


def _tables(path: Path) -> set[str]:
    """The tables of an SQLite file, read-only; none when it is missing or no database."""
    if not path.is_file():
        return set()
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            return {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error:
        return set()


def check_clash(storage: str, tracking: str) -> None:
    """Refuse a tracking store that is the Optuna storage, or either store in a database that
    holds the other's tables.

    Raises:
        StoreError: names both stores (passwords masked) and what to change.
    """
    s, t = redact_url(storage), redact_url(tracking)
    same_file = database_file(storage) is not None and database_file(storage) == database_file(
        tracking
    )
    if same_file or (_server_database(storage) or 0) == (_server_database(tracking) or 1):
        raise StoreError(
            f"tracking URI {t} is the study storage {s}: Optuna and MLflow each need a "
            "database of their own; give --tracking-uri another one (e.g. "
            "sqlite:///mlruns/mlflow.db)"
        )
    if (file := database_file(tracking)) and _OPTUNA_TABLES <= _tables(file):
        raise StoreError(
            f"tracking URI {t} is an Optuna database (it holds Optuna's tables); give MLflow "
            "its own file, e.g. sqlite:///mlruns/mlflow.db"
        )
    if (file := database_file(storage)) and _MLFLOW_TABLES <= _tables(file):
        raise StoreError(
            f"storage {s} is an MLflow tracking database (it holds MLflow's tables); give "
            "Optuna its own file, e.g. sqlite:///admmsearch.db"
        )


DEFAULT_STORAGE_FILE = "admmsearch.db"


def resolve_storage(config: StudyConfig | None, override: str | None = None) -> str:
    """--storage, else the study file, else $ADMMSEARCH_STORAGE, else a local SQLite file."""
    url = override or (config and config.storage) or os.environ.get("ADMMSEARCH_STORAGE")
    return url or f"sqlite:///{Path(DEFAULT_STORAGE_FILE).resolve()}"


def resolve_tracking(
    config: StudyConfig | None, override: str | None = None, *, create: bool = True
) -> str:
    """--tracking-uri, else the study file, else $MLFLOW_TRACKING_URI, else the local mlruns/
    (made, unless ``create`` is False: to name it without touching anything)."""
    uri = override or (config and config.tracking_uri) or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or default_tracking_uri("mlruns", create=create)


def resolve_cache_dir(
    config: StudyConfig, override: str | Path | None, workdir: str | Path
) -> Path:
    """--cache-dir, else the study file's ``workers.cache_dir``, else $ADMMSEARCH_CACHE_DIR,
    else ``cache/`` in the work directory."""
    path = override or config.workers.cache_dir or os.environ.get("ADMMSEARCH_CACHE_DIR")
    return Path(path) if path else Path(workdir) / "cache"


def cache_setting(config: StudyConfig, override: str | Path | None) -> str:
    """Which setting chose the cache folder (see :func:`resolve_cache_dir`), for messages."""
    if override:
        return "--cache-dir"
    if config.workers.cache_dir:
        return "workers.cache_dir"
    return "$ADMMSEARCH_CACHE_DIR" if os.environ.get("ADMMSEARCH_CACHE_DIR") else "the default"
