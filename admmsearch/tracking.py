"""MLflow tracking: one parent run per study, one nested run per trial. The only mlflow import.

Runs are written through ``MlflowClient`` with explicit run ids, never through the global
"active run", so several worker processes can log into one study without stepping on each other.
Long structures (per-layer tables, the resolved study file, the front) go in as artifacts, not
tags, which MLflow truncates.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from .errors import StoreError
from .redact import redact_text, redact_url

__all__ = ["Tracker", "default_tracking_uri", "search_runs"]

STUDY_TAG = "admmsearch.study"
ROLE_TAG = "admmsearch.role"
TRIAL_TAG = "admmsearch.trial"
PARENT_TAG = "mlflow.parentRunId"
REASON_TAG = "admmsearch.fail_reason"
_BATCH = 900
_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def _store_errors(method: _Fn) -> _Fn:
    """MLflow failures become :class:`StoreError` naming the URI, password masked (MLflow's
    own messages quote the full request URL)."""

    @functools.wraps(method)
    def wrapper(self: Tracker, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except mlflow.exceptions.MlflowException as exc:
            text = redact_text(exc.message, self.uri)
            raise StoreError(f"tracking URI {redact_url(self.uri)}: {text}") from None

    return wrapper  # type: ignore[return-value]


def default_tracking_uri(root: str | Path = "mlruns") -> str:
    """The embedded store: an SQLite file in ``root`` (MLflow 3 retired the plain file store)."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    """Artifacts of an embedded SQLite store live beside the database file."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
    return None


class Tracker:
    """Logs a study and its trials into one MLflow experiment named after the study."""

    def __init__(self, tracking_uri: str, study_name: str) -> None:
        self.uri = tracking_uri
        self.study_name = study_name
        self._open()

    @_store_errors
    def _open(self) -> None:
        self.client = MlflowClient(self.uri)
        self.experiment_id = self._experiment()

    def _experiment(self) -> str:
        """The study's experiment; a worker that loses the race to create it takes the winner's."""
        found = self.client.get_experiment_by_name(self.study_name)
        if found is not None:
            return found.experiment_id
        root = _artifact_root(self.uri)
        location = None if root is None else f"{root}/{self.study_name}"
        try:
            return self.client.create_experiment(self.study_name, artifact_location=location)
        except mlflow.exceptions.MlflowException:
            found = self.client.get_experiment_by_name(self.study_name)
            if found is None:
                raise
            return found.experiment_id

    @_store_errors
    def study_run(self, config: Mapping[str, Any], known: str | None = None) -> str:
        """The study's parent run: ``known`` (the id the study stored) if it is still in this
        experiment, else the earliest run tagged as the study's, else a new one.

        Callers that may race (several workers starting at once) hold the storage lock.
        """
        if known is not None:
            try:
                if self.client.get_run(known).info.experiment_id == self.experiment_id:
                    return known
            except mlflow.exceptions.MlflowException:
                pass  # another tracking store, or the run was deleted: find or create it
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{self.study_name}'"
            ),
            order_by=["attributes.start_time ASC"],
        )
        if runs:
            return runs[0].info.run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.study_name,
            tags={ROLE_TAG: "study", STUDY_TAG: self.study_name},
        )
        self.log_dict(run.info.run_id, config, "study.yaml")
        return run.info.run_id

    @_store_errors
    def trial_run(self, parent: str, number: int) -> str:
        """A nested run for trial ``number``, tagged with the study and trial."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number}",
            tags={
                PARENT_TAG: parent,
                ROLE_TAG: "trial",
                STUDY_TAG: self.study_name,
                TRIAL_TAG: str(number),
            },
        )
        return run.info.run_id

    @_store_errors
    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        series: Mapping[str, Iterable[float]] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Params, scalar metrics, stepped series (step = index) and tags, in batches."""
        items: list[Any] = [Param(k, str(v)) for k, v in (params or {}).items()]
        items += [Metric(k, float(v), 0, 0) for k, v in (metrics or {}).items() if _finite(v)]
        for key, values in (series or {}).items():
            items += [Metric(key, float(v), 0, i) for i, v in enumerate(values) if _finite(v)]
        items += [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for start in range(0, len(items), _BATCH):
            chunk = items[start : start + _BATCH]
            self.client.log_batch(
                run_id,
                metrics=[i for i in chunk if isinstance(i, Metric)],
                params=[i for i in chunk if isinstance(i, Param)],
                tags=[i for i in chunk if isinstance(i, RunTag)],
            )

    @_store_errors
    def log_frame(self, run_id: str, frame: pd.DataFrame, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            frame.to_csv(path, index=False)
            self.client.log_artifact(run_id, str(path))

    @_store_errors
    def log_dict(self, run_id: str, data: Mapping[str, Any], name: str) -> None:
        self.client.log_dict(run_id, dict(data), name)

    @_store_errors
    def log_file(self, run_id: str, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    @_store_errors
    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    @_store_errors
    def set_status(self, run_id: str, status: str) -> None:
        """RUNNING while a study has work left, FINISHED when done (a resumed study reopens)."""
        if self.client.get_run(run_id).info.status != status:
            self.client.update_run(run_id, status=status)

    @_store_errors
    def end_trial_runs(self, number: int, reason: str, status: str = "KILLED") -> int:
        """End every still-running MLflow run of trial ``number`` (its worker is gone), tagged
        with ``reason``; returns how many."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{ROLE_TAG}` = 'trial' "
                f"and tags.`{STUDY_TAG}` = '{self.study_name}' "
                f"and tags.`{TRIAL_TAG}` = '{number}' "
                "and attributes.status = 'RUNNING'"
            ),
        )
        for run in runs:
            self.client.set_tag(run.info.run_id, REASON_TAG, reason)
            self.client.set_terminated(run.info.run_id, status=status)
        return len(runs)


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


os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow prints "View run at <tracking URI>" when a run ends on a server: noise in a worker's
# log, and it would show a password written in the URI.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
