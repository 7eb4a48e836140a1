"""MLflow tracking: one parent run per study, one nested run per trial. The only mlflow import.

Runs are written through ``MlflowClient`` with explicit run ids, never through the global
"active run", so several worker processes can log into one study without stepping on each other.
Long structures (per-layer tables, the resolved study file, the front) go in as artifacts, not
tags, which MLflow truncates.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from .errors import AdmmSearchError

__all__ = ["Tracker", "default_tracking_uri", "search_runs"]

STUDY_TAG = "admmsearch.study"
ROLE_TAG = "admmsearch.role"
TRIAL_TAG = "admmsearch.trial"
PARENT_TAG = "mlflow.parentRunId"
_BATCH = 900


def default_tracking_uri(root: str | Path = "mlruns") -> str:
    """The embedded store: an SQLite file in ``root`` (MLflow 3 retired the plain file store)."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    """Artifacts of an embedded SQLite store live beside the database file."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
    return None


class Tracker:
    """Logs a study and its trials into one MLflow experiment named after the study."""

    def __init__(self, tracking_uri: str, study_name: str) -> None:
        self.uri = tracking_uri
        self.study_name = study_name
        try:
            self.client = MlflowClient(tracking_uri)
            self.experiment_id = self._experiment()
        except mlflow.exceptions.MlflowException as exc:
            raise AdmmSearchError(f"tracking URI {_redact(tracking_uri)}: {exc.message}") from None

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.study_name)
        if found is not None:
            return found.experiment_id
        root = _artifact_root(self.uri)
        location = None if root is None else f"{root}/{self.study_name}"
        return self.client.create_experiment(self.study_name, artifact_location=location)

    def study_run(self, config: Mapping[str, Any]) -> str:
        """The study's parent run, created once and found again on resume."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(f"tags.`{ROLE_TAG}` = 'study' "
                           f"and tags.`{STUDY_TAG}` = '{self.study_name}'"),
        )
        if runs:
            return runs[0].info.run_id
        run = self.client.create_run(
            self.experiment_id, run_name=self.study_name,
            tags={ROLE_TAG: "study", STUDY_TAG: self.study_name})
        self.log_dict(run.info.run_id, config, "study.yaml")
        return run.info.run_id

    def trial_run(self, parent: str, number: int) -> str:
        """A nested run for trial ``number``, tagged with the study and trial."""
        run = self.client.create_run(
            self.experiment_id, run_name=f"trial-{number}",
            tags={PARENT_TAG: parent, ROLE_TAG: "trial", STUDY_TAG: self.study_name,
                  TRIAL_TAG: str(number)})
        return run.info.run_id

    def log(self, run_id: str, *, params: Mapping[str, Any] | None = None,
            metrics: Mapping[str, float] | None = None,
            series: Mapping[str, Iterable[float]] | None = None,
            tags: Mapping[str, str] | None = None) -> None:
        """Params, scalar metrics, stepped series (step = index) and tags, in batches."""
        items: list[Any] = [Param(k, str(v)) for k, v in (params or {}).items()]
        items += [Metric(k, float(v), 0, 0) for k, v in (metrics or {}).items() if _finite(v)]
        for key, values in (series or {}).items():
            items += [Metric(key, float(v), 0, i) for i, v in enumerate(values) if _finite(v)]
        items += [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for start in range(0, len(items), _BATCH):
            chunk = items[start:start + _BATCH]
            self.client.log_batch(
                run_id, metrics=[i for i in chunk if isinstance(i, Metric)],
                params=[i for i in chunk if isinstance(i, Param)],
                tags=[i for i in chunk if isinstance(i, RunTag)])

    def log_frame(self, run_id: str, frame: pd.DataFrame, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            frame.to_csv(path, index=False)
            self.client.log_artifact(run_id, str(path))

    def log_dict(self, run_id: str, data: Mapping[str, Any], name: str) -> None:
        self.client.log_dict(run_id, dict(data), name)

    def log_file(self, run_id: str, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


def search_runs(tracking_uri: str, study_name: str) -> pd.DataFrame:
    """Every run of a study as MLflow's own ``search_runs`` frame (for readers and tests)."""
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name(study_name)
    if experiment is None:
        return pd.DataFrame()
    return mlflow.search_runs([experiment.experiment_id], max_results=100000)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _redact(uri: str) -> str:
    """A URI with any password replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
