"""The Pareto front of a study: which trials, as a table, and as a figure against the dense model.

The figure is Optuna's own Pareto-front plot (:func:`optuna.visualization.plot_pareto_front`)
over validation accuracy and the packed file's size, with the dense model added as a star and
the size on a log axis: interactive HTML from its plotly variant, PNG from its matplotlib variant
(plotly's PNG export needs kaleido and a Chrome browser, which an install does not bring).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd

from ..config.schema import ConstraintsConfig
from ..errors import AdmmSearchError, ConfigError, NoTrialError, quote
from ..record import BITS_PER_KIB, Metric, StudyAttr, TrialAttr
from .feasibility import closest_first, infeasible_note
from .quiet import quiet_optuna
from .rungs import nondominated_ranks

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "FRONT_SUFFIXES",
    "FrontFiles",
    "closest_table",
    "feasible",
    "all_trial_records",
    "front_figure",
    "front_frame",
    "front_records",
    "front_table",
    "front_trials",
    "full_fidelity",
    "plot_front",
    "trials_frame",
    "write_front",
]

#: What :func:`write_front` writes, by file suffix: the front's table or its figure.
FRONT_SUFFIXES = (".csv", ".json", ".png", ".html")
_KIB_BITS = BITS_PER_KIB
_AXES = ["packed model file (KiB)", "validation accuracy"]
_DONE = optuna.trial.TrialState.COMPLETE


def front_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The non-dominated feasible trials at full fidelity, by trial number: with successive
    halving, trials of the top rung only (lower rungs trained less: :func:`full_fidelity`)."""
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(_DONE,))
        if feasible(t) and full_fidelity(t, study)
    ]
    signs = [1 if d == optuna.study.StudyDirection.MINIMIZE else -1 for d in study.directions]
    points = [tuple(s * v for s, v in zip(signs, t.values, strict=True)) for t in done]
    if len(signs) == 1:  # the best, or those tied for it
        best = min(points, default=None)
        return [t for t, p in zip(done, points, strict=True) if p == best]
    ranks = nondominated_ranks(points)
    return [t for t, r in zip(done, ranks, strict=True) if r == 0]


def full_fidelity(trial: optuna.trial.FrozenTrial, study: optuna.Study) -> bool:
    """A trial ran the study's whole pipeline: it has no rung, or the study's top one."""
    rung = trial.user_attrs.get(TrialAttr.RUNG)
    return rung is None or rung == study.user_attrs.get(StudyAttr.TOP_RUNG)


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """All constraint values are <= 0 (Optuna's rule); a trial without any is feasible."""
    c = trial.constraints or {}
    return all(v <= 0 for v in (c.values() if isinstance(c, dict) else c))


def trials_frame(study: optuna.Study, objectives: list[str]) -> pd.DataFrame:
    """One row per finished trial: its objectives, test accuracy, feasibility and front flag."""
    front = {t.number for t in front_trials(study)}
    rows = []
    for t in study.get_trials(deepcopy=False, states=(_DONE,)):
        metrics: dict[str, Any] = t.user_attrs.get(TrialAttr.METRICS, {})
        row = {"trial": t.number}
        row.update(dict(zip(objectives, t.values, strict=True)))
        for key in (
            Metric.VAL_ACCURACY,
            Metric.TEST_ACCURACY,
            Metric.ACCURACY_DROP,
            Metric.STORAGE_BITS,
            Metric.PAYLOAD_BITS,
            Metric.COMPRESSION_RATIO,
            Metric.DATA_BITS,
            Metric.WEIGHT_RATIO_NO_INDEX,
            Metric.WEIGHT_RATIO_WITH_INDEX,
        ):
            row.setdefault(key, metrics.get(key))
        row["rung"] = t.user_attrs.get(TrialAttr.RUNG)
        row["epochs"] = t.user_attrs.get(TrialAttr.EPOCHS)
        row["feasible"] = feasible(t)
        row["front"] = t.number in front
        rows.append(row)
    columns = ["trial", *objectives]
    return pd.DataFrame(rows, columns=None if rows else columns)


def front_frame(study: optuna.Study, objectives: list[str]) -> pd.DataFrame:
    """Only the front's rows, ordered by storage (or by the first objective)."""
    frame = trials_frame(study, objectives)
    if frame.empty:
        return frame
    frame = frame[frame["front"]].drop(columns=["front"])
    key = Metric.STORAGE_BITS if Metric.STORAGE_BITS in frame else objectives[0]
    return frame.sort_values(key).reset_index(drop=True)


def front_table(study: optuna.Study, objectives: list[str]) -> pd.DataFrame:
    """The front as people read it: accuracy, drop, the packed file in KiB (with its payload,
    the storage accounting, beside it) and the ratios."""
    return _readable(front_frame(study, objectives))


def closest_table(
    study: optuna.Study, objectives: list[str], limits: ConstraintsConfig
) -> pd.DataFrame:
    """Every completed trial as :func:`front_table` shows the front, the closest to meeting
    the constraints first (:func:`admmsearch.feasibility.closest_first`): what a study without
    a feasible trial has to show."""
    frame = trials_frame(study, objectives)
    if frame.empty:
        return frame
    done = study.get_trials(deepcopy=False, states=(_DONE,))
    order = [t.number for t in closest_first(done, limits)]
    return _readable(frame.set_index("trial").loc[order].reset_index())


def front_records(
    study: optuna.Study, objectives: list[str], limits: ConstraintsConfig
) -> tuple[list[dict[str, Any]], str | None]:
    """The front as records (JSON's rows); when no completed trial is feasible, every
    completed trial, the closest to the constraints first, with a note naming what they
    break (:func:`.feasibility.infeasible_note`).

    Raises:
        NoTrialError: no trial completed, or none at full fidelity yet.
    """
    table = front_table(study, objectives)
    if not table.empty:
        return table.to_dict("records"), None
    note = infeasible_note(study, limits)
    if note is None:
        done = study.get_trials(deepcopy=False, states=(_DONE,))
        what = "at full fidelity (the top rung)" if done else ""
        raise NoTrialError(f"study {quote(study.study_name)} has no completed trial {what}")
    return closest_table(study, objectives, limits).to_dict("records"), note


def all_trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial, as ``show --all`` lists it: state, rung and epochs, validation accuracy,
    the packed file in KiB, feasibility, and why a trial failed."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        m = t.user_attrs.get(TrialAttr.METRICS) or {}
        storage = m.get(Metric.STORAGE_BITS)
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "rung": t.user_attrs.get(TrialAttr.RUNG),
                "epochs": t.user_attrs.get(TrialAttr.EPOCHS),
                "val_accuracy": m.get(Metric.VAL_ACCURACY),
                "storage_kib": None if storage is None else round(storage / _KIB_BITS, 3),
                "feasible": feasible(t) if m else None,
                "reason": t.user_attrs.get(TrialAttr.FAIL_REASON),
            }
        )
    return rows


def _readable(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    table = pd.DataFrame(
        {
            "trial": frame["trial"],
            "val_accuracy": frame["val_accuracy"].round(4),
            "test_accuracy": frame["test_accuracy"].round(4),
            "accuracy_drop": frame["accuracy_drop"].round(4),
            "storage_kib": (frame["storage_bits_with_index"] / _KIB_BITS).round(3),
            "payload_kib": (pd.to_numeric(frame["payload_bits"]) / _KIB_BITS).round(3),
            "ratio_with_index": frame["compression_ratio_with_index"].round(1),
            "weight_ratio_no_index": frame["weight_ratio_no_index"].round(1),
            "feasible": frame["feasible"],
        }
    )
    return table.reset_index(drop=True)


@dataclass(frozen=True)
class FrontFiles:
    """What :func:`write_front` wrote: the files, and how many front trials they hold."""

    paths: tuple[Path, ...]
    trials: int


def write_front(
    study: optuna.Study,
    path: str | Path,
    objectives: Sequence[str],
    limits: ConstraintsConfig | None = None,
) -> FrontFiles:
    """Write the front of ``study`` to ``path``, by its suffix: ``.csv`` or ``.json`` the
    table of :func:`front_table`; ``.png`` or ``.html`` the figure, both files side by side
    (``front.png`` and ``front.html``).

    Args:
        study: a study made by admmsearch (its trials carry their metrics).
        path: the file; its folder must exist.
        objectives: the study's objectives, in order (``config.objectives``).
        limits: the study's constraints; given, a table of a study without a feasible trial
            holds every completed trial, the closest to the constraints first
            (:func:`closest_table`).

    Raises:
        ConfigError: the suffix is none of :data:`FRONT_SUFFIXES`.
        NoTrialError: a table is asked for and no trial has completed (with ``limits``), or
            no feasible one (without).
        AdmmSearchError: a figure is asked for and the study recorded no dense model, or a file
            cannot be written.
    """
    path = Path(path)
    if path.suffix not in FRONT_SUFFIXES:
        raise ConfigError(f"{path}: writes only {', '.join(FRONT_SUFFIXES)} files; name it so")
    if path.suffix in (".png", ".html"):
        png, html = path.with_suffix(".png"), path.with_suffix(".html")
        plot_front(study, png, html)
        return FrontFiles((png, html), len(front_trials(study)))
    table = _table_to_write(study, list(objectives), limits)
    text = (
        table.to_json(orient="records", indent=2) + "\n"
        if path.suffix == ".json"
        else table.to_csv(index=False)
    )
    _write(path, text)
    return FrontFiles((path,), len(table))


def _table_to_write(
    study: optuna.Study, objectives: list[str], limits: ConstraintsConfig | None
) -> pd.DataFrame:
    table = front_table(study, objectives)
    if table.empty and limits is not None:
        table = closest_table(study, objectives, limits)
    if table.empty:
        what = "completed" if limits is not None else "feasible completed"
        raise NoTrialError(f"study {study.study_name!r} has no {what} trial")
    return table


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise AdmmSearchError(f"cannot write {path}: {exc.strerror or exc}") from None


def _dense(study: optuna.Study, dense: Mapping[str, float] | None) -> Mapping[str, float]:
    dense = dense if dense is not None else study.user_attrs.get("dense")
    if dense is None:
        raise AdmmSearchError(f"study {study.study_name!r} has no dense model recorded")
    return dense


@contextmanager
def _quiet() -> Iterator[None]:
    """Optuna's plots without its notes: the experimental ``targets`` warning, and the log line
    for a study with no feasible trial yet (the figure shows that)."""
    with quiet_optuna(optuna.logging.ERROR), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _targets(trial: optuna.trial.FrozenTrial) -> tuple[float, float]:
    """Where a trial is drawn: its packed file in KiB, its validation accuracy."""
    metrics = trial.user_attrs.get("metrics", {})
    bits = metrics.get("storage_bits_with_index", float("nan"))
    return bits / _KIB_BITS, metrics.get("val_accuracy", float("nan"))


def front_figure(study: optuna.Study, dense: Mapping[str, float] | None = None) -> go.Figure:
    """Optuna's Pareto-front plot of ``study`` (every finished trial; the front, the dominated
    and the infeasible ones told apart) over the packed file in KiB (log axis) and validation
    accuracy, with the dense model as a black star.

    Args:
        study: a study made by admmsearch.
        dense: the dense model's ``storage_bits`` and ``val_accuracy`` [default: the study's].

    Raises:
        AdmmSearchError: no ``dense`` given and the study recorded none.
    """
    import plotly.graph_objects as go

    dense = _dense(study, dense)
    with _quiet():
        fig = optuna.visualization.plot_pareto_front(study, targets=_targets, target_names=_AXES)
    fig.add_trace(
        go.Scatter(
            x=[dense["storage_bits"] / _KIB_BITS],
            y=[dense["val_accuracy"]],
            mode="markers",
            name="dense fp32",
            marker={"symbol": "star", "size": 14, "color": "black"},
            hovertemplate="dense fp32<br>%{x:.2f} KiB<br>val acc %{y:.4f}<extra></extra>",
        )
    )
    fig.update_xaxes(type="log")
    fig.update_layout(title="Pareto front", template="plotly_white")
    return fig


def plot_front(
    study: optuna.Study,
    png: str | Path,
    html: str | Path,
    dense: Mapping[str, float] | None = None,
) -> None:
    """Write the front's figure (see :func:`front_figure`) as a PNG (120 dpi) and as an
    interactive HTML page (plotly; hovering a point shows its trial, params and figures).

    Raises:
        AdmmSearchError: no ``dense`` given and the study recorded none, or a file cannot be
            written.
    """
    dense = _dense(study, dense)
    _plot_png(study, dense, Path(png))
    try:
        front_figure(study, dense).write_html(html, include_plotlyjs=True, full_html=True)
    except OSError as exc:
        raise AdmmSearchError(f"cannot write {html}: {exc.strerror or exc}") from None


def _plot_png(study: optuna.Study, dense: Mapping[str, float], png: Path) -> None:
    """The figure through Optuna's matplotlib variant; its style stays inside this call."""
    import matplotlib
    import matplotlib.pyplot as plt

    with matplotlib.rc_context(), _quiet():
        ax = optuna.visualization.matplotlib.plot_pareto_front(
            study, targets=_targets, target_names=_AXES
        )
        ax.scatter(
            [dense["storage_bits"] / _KIB_BITS],
            [dense["val_accuracy"]],
            marker="*",
            s=160,
            c="black",
            label="dense fp32",
            zorder=3,
        )
        ax.set_xscale("log")
        ax.set_title("Pareto front")
        ax.legend()
        fig = ax.get_figure()
        fig.set_size_inches(7, 4.5)
        fig.tight_layout()
        try:
            fig.savefig(png, dpi=120)
        except OSError as exc:
            raise AdmmSearchError(f"cannot write {png}: {exc.strerror or exc}") from None
        finally:
            plt.close(fig)
