"""MLflow tracking: one parent run per study, one nested run per trial. The only mlflow import.

Runs are written through ``MlflowClient`` with explicit run ids, never through the global
"active run", so several worker processes can log into one study without stepping on each other.
Long structures (per-layer tables, the resolved study file, the front) go in as artifacts, not
tags, which MLflow truncates.

MLflow accepts only some characters in param, metric and tag keys, but a layer may be named
anything a torch module can be named (``fc@in``). Every key goes through :func:`mlflow_key`, an
injective escaping that leaves ordinary names alone; a run whose keys were changed holds the
mapping (safe key -> original key) in its artifact ``mlflow_keys.json``.

MLflow retries a failed HTTP request for minutes by default; unless the user set them, the
retries and timeouts are bounded here (:data:`HTTP_DEFAULTS`), and a server that does not answer
is reported as unreachable in one line (:class:`TrackingError` with ``unreachable``).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import string
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import TrackingError
from .redact import redact_text, redact_url

if TYPE_CHECKING:  # mlflow loads on first use: importing this module stays cheap
    import pandas as pd

__all__ = [
    "FRONT_TAG",
    "HTTP_DEFAULTS",
    "KEYS_ARTIFACT",
    "MAX_PARAM_CHARS",
    "PARAMS_FOLDER",
    "PARENT_TAG",
    "REASON_TAG",
    "ROLE_TAG",
    "STUDY_TAG",
    "TRIAL_TAG",
    "Tracker",
    "artifact_root",
    "check_experiment",
    "default_tracking_uri",
    "mlflow_key",
    "search_runs",
    "set_mlflow_defaults",
]

STUDY_TAG = "admmsearch.study"
ROLE_TAG = "admmsearch.role"
TRIAL_TAG = "admmsearch.trial"
PARENT_TAG = "mlflow.parentRunId"
REASON_TAG = "admmsearch.fail_reason"
#: ``true`` on the run of each trial on the study's front, ``false`` once it left it: the
#: filter ``tags.admmsearch.front = "true"`` shows the front in MLflow's run list.
FRONT_TAG = "admmsearch.front"
KEYS_ARTIFACT = "mlflow_keys.json"
#: MLflow's HTTP settings where the user set none: 3 retries, 1 s backoff factor (waits of about
#: 0, 2 and 4 s), 30 s per connect or read; a stopped server is given up on within seconds.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
_BATCH = 900
#: The longest param value MLflow stores whole (``mlflow.utils.validation.MAX_PARAM_VAL_LENGTH``).
MAX_PARAM_CHARS = 6000
#: Where a param value too long for MLflow goes, as ``<key>.txt``.
PARAMS_FOLDER = "params"
_MAX_KEY = 250  # MLflow's limit on key length
_MAX_TAG = 5000  # well within MLflow's limit on a tag value
_PLAIN = frozenset(string.ascii_letters + string.digits + "_.")
_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def mlflow_key(key: str) -> str:
    """``key`` in the characters MLflow accepts everywhere (letters, digits, ``_ . -``).

    Letters, digits, ``_`` and ``.`` stay; ``-`` becomes ``--``; any other character becomes
    ``-`` and two lowercase hex digits per UTF-8 byte (``@`` -> ``-40``, ``é`` -> ``-c3-a9``).
    A result longer than 250 characters is cut to 233 and followed by ``-``, 15 hex digits of
    the escaped key's SHA-256, and ``-`` (an ending no escaped key has). Distinct keys give
    distinct results (up to a hash collision).

    >>> mlflow_key("keep.fc@in"), mlflow_key("bits.conv-1"), mlflow_key("keep.conv1")
    ('keep.fc-40in', 'bits.conv--1', 'keep.conv1')
    """
    escaped = "".join(_escape(c) for c in key)
    if len(escaped) <= _MAX_KEY:
        return escaped
    digest = hashlib.sha256(escaped.encode()).hexdigest()[:15]
    return f"{escaped[: _MAX_KEY - 17]}-{digest}-"


def _escape(char: str) -> str:
    if char in _PLAIN:
        return char
    if char == "-":
        return "--"
    return "".join(f"-{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))


def _unreachable(exc: BaseException) -> str | None:
    """Why the server could not be reached (``Connection refused``, ``timed out``), or None
    when ``exc`` (or what caused it) is no connection failure or timeout."""
    import requests

    chain, seen, found = exc, set(), False
    reason = None
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            found = True
        if isinstance(chain, OSError) and chain.strerror:
            reason = chain.strerror
        chain = chain.__cause__ or chain.__context__
    if not found:
        return None
    return reason or type(exc).__name__


def _store_errors(method: _Fn) -> _Fn:
    """MLflow failures become one-line :class:`TrackingError` naming the URI, password masked
    (MLflow's own messages quote the full request URL)."""

    @functools.wraps(method)
    def wrapper(self: Tracker, *args: Any, **kwargs: Any) -> Any:
        import mlflow
        import requests

        try:
            return method(self, *args, **kwargs)
        except (mlflow.exceptions.MlflowException, requests.exceptions.RequestException) as exc:
            raise _tracking_error(self.uri, exc) from None

    return wrapper  # type: ignore[return-value]


def _tracking_error(uri: str, exc: Exception) -> TrackingError:
    where = redact_url(uri)
    reason = _unreachable(exc)
    if reason is not None:
        settings = ", ".join(f"{k}={os.environ.get(k, '?')}" for k in HTTP_DEFAULTS)
        return TrackingError(
            f"tracking server {where} is unreachable ({reason}; gave up after {settings}); "
            "run again once it answers: the study resumes where it stopped",
            unreachable=True,
        )
    text = " ".join(redact_text(str(getattr(exc, "message", exc)), uri).split())
    return TrackingError(f"tracking URI {where}: {text}")


def check_experiment(uri: str, study_name: str) -> None:
    """Refuse, before anything is created, a study whose MLflow experiment (named after it) is
    deleted: MLflow keeps a deleted experiment's name and refuses new runs in it. An SQLite
    store that does not exist yet is not created by looking.

    Raises:
        TrackingError: the experiment is deleted (the message names it, the store and the ways
            out), or the store cannot be read.
    """
    import mlflow
    import requests
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        return
    try:
        found = MlflowClient(uri).get_experiment_by_name(study_name)
    except (mlflow.exceptions.MlflowException, requests.exceptions.RequestException) as exc:
        raise _tracking_error(uri, exc) from None
    if found is not None:
        _refuse_deleted(uri, found)


def _refuse_deleted(uri: str, experiment: Any) -> None:
    if experiment.lifecycle_stage != "deleted":
        return
    where, number = redact_url(uri), experiment.experiment_id
    raise TrackingError(
        f"tracking URI {where}: this study's MLflow experiment {experiment.name!r} (id {number}) "
        "was deleted, and MLflow keeps a deleted experiment's name; restore it (mlflow "
        f"experiments restore --experiment-id {number}), remove it for good (mlflow gc "
        f"--backend-store-uri {where} --experiment-ids {number}), or give the study another "
        "name: or tracking URI"
    )


def default_tracking_uri(root: str | Path = "mlruns", *, create: bool = True) -> str:
    """The embedded store: an SQLite file in ``root`` (MLflow 3 retired the plain file store),
    the folder made unless ``create`` is False."""
    root = Path(root).resolve()
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """Where the artifacts of a tracking store live: for an embedded SQLite store, the folder
    ``artifacts`` beside the database file (as a ``file://`` URI); None for any other store,
    whose server decides.

    >>> artifact_root("sqlite:////data/mlruns/mlflow.db"), artifact_root("http://host:5000")
    ('file:///data/mlruns/artifacts', None)
    """
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
    return None


class Tracker:
    """Logs a study and its trials into one MLflow experiment named after the study."""

    def __init__(self, tracking_uri: str, study_name: str) -> None:
        self.uri = tracking_uri
        self.study_name = study_name
        self._renamed: dict[str, dict[str, str]] = {}  # run id -> safe key -> original key
        self._open()

    @_store_errors
    def _open(self) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.uri)
        self.experiment_id = self._experiment()

    def _experiment(self) -> str:
        """The study's experiment; a worker that loses the race to create it takes the winner's.

        Raises:
            TrackingError: the experiment of that name is deleted (see :func:`check_experiment`).
        """
        found = self.client.get_experiment_by_name(self.study_name)
        if found is not None:
            _refuse_deleted(self.uri, found)
            return found.experiment_id
        import mlflow

        root = artifact_root(self.uri)
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
        import mlflow

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
        """Params, scalar metrics, stepped series (step = index) and tags, in batches.

        Keys go through :func:`mlflow_key`; where one changes, the run's ``mlflow_keys.json``
        maps it back. A param value longer than MLflow takes (:data:`MAX_PARAM_CHARS`; e.g.
        the normalisation of an input with hundreds of channels) goes whole into the artifact
        ``params/<key>.txt``, and the param says so, rather than being cut.
        """
        from mlflow.entities import Metric, RunTag

        names = [*(params or {}), *(metrics or {}), *(series or {}), *(tags or {})]
        key = {name: mlflow_key(name) for name in names}
        items, long = _param_items(params or {}, key)
        items += [Metric(key[k], float(v), 0, 0) for k, v in (metrics or {}).items() if _finite(v)]
        for name, values in (series or {}).items():
            items += [
                Metric(key[name], float(v), 0, i) for i, v in enumerate(values) if _finite(v)
            ]
        items += [RunTag(key[k], str(v)) for k, v in (tags or {}).items()]
        self._log_batches(run_id, items)
        for safe, text in long.items():
            self.client.log_text(run_id, text, f"{PARAMS_FOLDER}/{safe}.txt")
        renamed = self._renamed.setdefault(run_id, {})
        fresh = {safe: name for name, safe in key.items() if safe != name and safe not in renamed}
        if fresh:
            renamed.update(fresh)
            self.client.log_dict(run_id, dict(sorted(renamed.items())), KEYS_ARTIFACT)

    def _log_batches(self, run_id: str, items: list[Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

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

    @_store_errors
    def end_stale_runs(self, finished: Mapping[int, str], status: str = "KILLED") -> int:
        """End every trial run of this study still RUNNING whose trial is in ``finished``
        (trial number -> reason: the trial failed, or finished without its run being ended,
        e.g. while the tracking server was away), tagged with the reason; returns how many."""
        if not finished:
            return 0
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{ROLE_TAG}` = 'trial' "
                f"and tags.`{STUDY_TAG}` = '{self.study_name}' "
                "and attributes.status = 'RUNNING'"
            ),
            max_results=50000,
        )
        ended = 0
        for run in runs:
            number = run.data.tags.get(TRIAL_TAG, "")
            if number.isdigit() and int(number) in finished:
                reason = finished[int(number)][:_MAX_TAG]
                self.client.set_tag(run.info.run_id, REASON_TAG, reason)
                self.client.set_terminated(run.info.run_id, status=status)
                ended += 1
        return ended


def _param_items(
    params: Mapping[str, Any], key: Mapping[str, str]
) -> tuple[list[Any], dict[str, str]]:
    """MLflow params of ``params`` (keys made safe by ``key``), and the values too long for a
    param by safe key: their param points at the artifact that holds them."""
    from mlflow.entities import Param

    items, long = [], {}
    for name, value in params.items():
        text, safe = str(value), key[name]
        if len(text) > MAX_PARAM_CHARS:
            long[safe] = text
            text = f"{len(text)} characters, in artifact {PARAMS_FOLDER}/{safe}.txt"
        items.append(Param(safe, text))
    return items, long


def search_runs(tracking_uri: str, study_name: str) -> pd.DataFrame:
    """Every run of a study as MLflow's own ``search_runs`` frame (for readers and tests); the
    process's MLflow tracking URI (and ``$MLFLOW_TRACKING_URI``) are left as they were."""
    import mlflow
    import pandas as pd

    with _using(tracking_uri):
        experiment = mlflow.get_experiment_by_name(study_name)
        if experiment is None:
            return pd.DataFrame()
        return mlflow.search_runs([experiment.experiment_id], max_results=100000)


@contextmanager
def _using(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API on ``tracking_uri`` for the block, then back as it was (MLflow's
    ``set_tracking_uri`` also sets ``$MLFLOW_TRACKING_URI``, which admmsearch reads)."""
    import mlflow

    env = os.environ.get("MLFLOW_TRACKING_URI")
    was = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(was)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def set_mlflow_defaults() -> None:
    """MLflow's settings where the user set none: the bounded HTTP retries and timeouts of
    :data:`HTTP_DEFAULTS`, no artifact progress bar, and no "View run at <tracking URI>" line
    when a run ends on a server (noise in a worker's log, and it would show a password written
    in the URI). They go into ``os.environ``, where MLflow reads them (and worker processes
    inherit them), so only a program's entry point calls this: the ``admmsearch`` command does,
    before MLflow is used; a library call never changes the environment."""
    for name, value in {**HTTP_DEFAULTS, **_QUIET}.items():
        os.environ.setdefault(name, value)


_QUIET = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
