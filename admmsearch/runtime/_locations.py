"""Where a study's things are kept: its Optuna storage, its MLflow tracking store and its
caches, each from the command line, else the study file, else the environment, else a default
in the current folder."""

from __future__ import annotations

import os
from pathlib import Path

from ..config import StudyConfig
from ..tracking import default_tracking_uri

__all__ = ["DEFAULT_STORAGE_FILE", "resolve_cache_dir", "resolve_storage", "resolve_tracking"]

DEFAULT_STORAGE_FILE = "admmsearch.db"


def resolve_storage(config: StudyConfig | None, override: str | None = None) -> str:
    """--storage, else the study file, else $ADMMSEARCH_STORAGE, else a local SQLite file."""
    url = override or (config and config.storage) or os.environ.get("ADMMSEARCH_STORAGE")
    return url or f"sqlite:///{Path(DEFAULT_STORAGE_FILE).resolve()}"


def resolve_tracking(config: StudyConfig | None, override: str | None = None) -> str:
    """--tracking-uri, else the study file, else $MLFLOW_TRACKING_URI, else the local mlruns/."""
    uri = override or (config and config.tracking_uri) or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or default_tracking_uri("mlruns")


def resolve_cache_dir(
    config: StudyConfig, override: str | Path | None, workdir: str | Path
) -> Path:
    """--cache-dir, else the study file's ``workers.cache_dir``, else $ADMMSEARCH_CACHE_DIR,
    else ``cache/`` in the work directory."""
    path = override or config.workers.cache_dir or os.environ.get("ADMMSEARCH_CACHE_DIR")
    return Path(path) if path else Path(workdir) / "cache"
