"""The Pareto front of a study: which trials, as a table, and as a figure against the dense model.

Every table row says what the trial is: where its settings came from (``origin``:
:mod:`.origin`), its rung and training epochs, and its per-layer settings in a few characters
(``layers``: ``conv1 .60/2b conv2 .19/3b ...``, :meth:`admmsearch.plan.Plan.compact`), rebuilt
from its params and the study file the study recorded; :func:`table_records` gives them as
structured data (``settings``) for JSON.

The figure draws validation accuracy against the packed file's size in KiB on a log axis
labelled at 1, 2, 5, 10, 20 ... from below its smallest point to above its largest
(:mod:`.ticks`): the front's trials numbered, the dominated
and the infeasible ones told apart, and with successive halving the lower rungs' trials (trained
less) drawn apart as hollow grey circles, never as part of the front; the dense model is a
star. PNG through matplotlib; interactive HTML through plotly (hover a point for its trial,
origin and per-layer settings), written only when asked for, as it holds plotly's 4.8 MB.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd
from pydantic import ValidationError

from ..config import StudyConfig
from ..config.schema import ConstraintsConfig
from ..errors import AdmmSearchError, ConfigError, NoTrialError, quote
from ..plan import Plan
from ..record import BITS_PER_KIB, Metric, StudyAttr, TrialAttr
from .feasibility import closest_first, infeasible_note
from .origin import trial_origin
from .rungs import nondominated_ranks
from .space import settings_from_params
from .ticks import matplotlib_log_x, plotly_log_x

if TYPE_CHECKING:
    import matplotlib.axes
    import plotly.graph_objects as go

__all__ = [
    "FRONT_SUFFIXES",
    "POINT_GROUPS",
    "FrontFiles",
    "all_trial_records",
    "closest_table",
    "feasible",
    "front_figure",
    "front_frame",
    "front_points",
    "front_records",
    "front_table",
    "front_trials",
    "full_fidelity",
    "plot_front",
    "study_space",
    "table_records",
    "trial_plan",
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


#: The figures of a trial that :func:`trials_frame` copies from its metrics.
_FIGURES = (
    Metric.VAL_ACCURACY,
    Metric.TEST_ACCURACY,
    Metric.ACCURACY_DROP,
    Metric.STORAGE_BITS,
    Metric.PAYLOAD_BITS,
    Metric.COMPRESSION_RATIO,
    Metric.DATA_BITS,
    Metric.WEIGHT_RATIO_NO_INDEX,
    Metric.WEIGHT_RATIO_WITH_INDEX,
)


def study_space(study: optuna.Study) -> tuple[StudyConfig, list[str]] | None:
    """The study file and the compressed layers ``study`` recorded when it started: what its
    trials' params replay against. None where it recorded none (not made by admmsearch) or
    the recorded file no longer validates."""
    recorded = study.user_attrs.get(StudyAttr.CONFIG)
    layers = study.user_attrs.get(StudyAttr.LAYERS)
    if not recorded or not layers:
        return None
    try:
        return StudyConfig.model_validate(recorded), list(layers)
    except (ValidationError, ConfigError):
        return None


def trial_plan(
    trial: optuna.trial.FrozenTrial, space: tuple[StudyConfig, Sequence[str]] | None
) -> Plan | None:
    """The per-layer plan ``trial`` ran, rebuilt from its params in ``space``
    (:func:`study_space`; :func:`.space.settings_from_params`); None without a space, or for
    params that do not replay (a trial that failed before it drew all of them)."""
    if space is None:
        return None
    try:
        return settings_from_params(trial.params, space[0], space[1]).plan
    except ConfigError:
        return None


def trials_frame(study: optuna.Study, objectives: list[str]) -> pd.DataFrame:
    """One row per finished trial: its objectives, figures, ``origin``, ``rung``, ``epochs``
    (what it added to the budget), feasibility, front flag and per-layer settings
    (``layers``, :meth:`Plan.compact`; None where :func:`trial_plan` has none); and, from
    its setting's chain of rungs, ``continues`` (the lower-rung trial a promotion continues),
    ``total_epochs`` (the setting's training in all, its lower rungs' included) and
    ``family`` (the allocation prior the setting came from; None if none)."""
    front = {t.number for t in front_trials(study)}
    space = study_space(study)
    every = {t.number: t for t in study.get_trials(deepcopy=False)}
    done = [t for t in every.values() if t.state == _DONE]
    rows = [_trial_row(t, objectives, front, space) | _chain_columns(t, every) for t in done]
    columns = ["trial", *objectives]
    return pd.DataFrame(rows, columns=None if rows else columns)


def _trial_row(
    t: optuna.trial.FrozenTrial,
    objectives: list[str],
    front: set[int],
    space: tuple[StudyConfig, list[str]] | None,
) -> dict[str, Any]:
    metrics: dict[str, Any] = t.user_attrs.get(TrialAttr.METRICS, {})
    row: dict[str, Any] = {"trial": t.number}
    row.update(dict(zip(objectives, t.values, strict=True)))
    for key in _FIGURES:
        row.setdefault(key, metrics.get(key))
    plan = trial_plan(t, space)
    row["origin"] = trial_origin(t.user_attrs)
    row["rung"] = t.user_attrs.get(TrialAttr.RUNG)
    row["epochs"] = t.user_attrs.get(TrialAttr.EPOCHS)
    row["feasible"] = feasible(t)
    row["front"] = t.number in front
    row["layers"] = None if plan is None else plan.compact()
    return row


def _chain_columns(
    t: optuna.trial.FrozenTrial, trials: Mapping[int, optuna.trial.FrozenTrial]
) -> dict[str, Any]:
    """``continues``, ``total_epochs`` and ``family`` of :func:`trials_frame`: the trial and
    the lower-rung trials it continues, down to the setting's rung-0 trial."""
    continues = t.user_attrs.get(TrialAttr.CONTINUES)
    total, now, seen = 0, t, set()
    while now is not None and now.number not in seen:  # a chain has no loops; be safe
        seen.add(now.number)
        total += int(now.user_attrs.get(TrialAttr.EPOCHS) or 0)
        below = now.user_attrs.get(TrialAttr.CONTINUES)
        if below is None:
            break
        now = trials.get(below)
    prior = None if now is None else now.user_attrs.get(TrialAttr.PRIOR)
    family = prior.get("family") if isinstance(prior, dict) else None
    return {"continues": continues, "total_epochs": total, "family": family}


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
    """The front as records (JSON's rows, :func:`table_records`: each with its per-layer
    ``settings``); when no completed trial is feasible, every completed trial, the closest to
    the constraints first, with a note naming what they break
    (:func:`.feasibility.infeasible_note`).

    Raises:
        NoTrialError: no trial completed, or none at full fidelity yet.
    """
    table = front_table(study, objectives)
    if not table.empty:
        return table_records(study, table), None
    note = infeasible_note(study, limits)
    if note is None:
        done = study.get_trials(deepcopy=False, states=(_DONE,))
        what = "at full fidelity (the top rung)" if done else ""
        raise NoTrialError(f"study {quote(study.study_name)} has no completed trial {what}")
    return table_records(study, closest_table(study, objectives, limits)), note


def all_trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial, whatever its state, as ``show --all`` lists it: ``trial``, ``state``,
    ``origin``, ``family`` (only where the study has priors), ``rung``, ``continues`` and
    ``total_epochs`` (only where it has rungs; :func:`trials_frame`), ``epochs``,
    ``val_accuracy``, ``storage_kib``, ``feasible`` (None without figures), ``layers`` (its
    per-layer settings in a few characters), ``reason`` (the recorded reason a trial failed)
    and ``settings`` (as data; None where :func:`trial_plan` has none)."""
    space = study_space(study)
    trials = study.get_trials(deepcopy=False)
    every = {t.number: t for t in trials}
    records = [_trial_record(t, space, _chain_columns(t, every)) for t in trials]
    unused = []
    if all(r["rung"] is None for r in records):
        unused += ["rung", "continues", "total_epochs"]
    if all(r["family"] is None for r in records):
        unused.append("family")
    return [{k: v for k, v in r.items() if k not in unused} for r in records]


def _trial_record(
    t: optuna.trial.FrozenTrial,
    space: tuple[StudyConfig, list[str]] | None,
    chain: Mapping[str, Any],
) -> dict[str, Any]:
    m = t.user_attrs.get(TrialAttr.METRICS) or {}
    storage, accuracy = m.get(Metric.STORAGE_BITS), m.get(Metric.VAL_ACCURACY)
    plan = trial_plan(t, space)
    return {
        "trial": t.number,
        "state": t.state.name.lower(),
        "origin": trial_origin(t.user_attrs),
        "family": chain["family"],
        "rung": t.user_attrs.get(TrialAttr.RUNG),
        "continues": chain["continues"],
        "epochs": t.user_attrs.get(TrialAttr.EPOCHS),
        "total_epochs": chain["total_epochs"],
        "val_accuracy": None if accuracy is None else round(float(accuracy), 4),
        "storage_kib": None if storage is None else round(storage / _KIB_BITS, 3),
        "feasible": feasible(t) if m else None,
        "layers": None if plan is None else plan.compact(),
        "reason": t.user_attrs.get(TrialAttr.FAIL_REASON),
        "settings": None if plan is None else plan.to_dict()["layers"],
    }


def _readable(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns people read, in reading order: the per-layer settings last (the longest);
    the rung, the trial a promotion continues and the setting's total epochs only where the
    study has rungs, the prior family only where it has priors."""
    if frame.empty:
        return frame
    table = pd.DataFrame(
        {
            "trial": frame["trial"],
            "origin": frame["origin"],
            "family": frame["family"],
            "rung": frame["rung"].astype("Int64"),
            "continues": frame["continues"].astype("Int64"),
            "epochs": frame["epochs"].astype("Int64"),
            "total_epochs": frame["total_epochs"].astype("Int64"),
            "val_accuracy": frame["val_accuracy"].round(4),
            "test_accuracy": frame["test_accuracy"].round(4),
            "accuracy_drop": frame["accuracy_drop"].round(4),
            "storage_kib": (frame["storage_bits_with_index"] / _KIB_BITS).round(3),
            "payload_kib": (pd.to_numeric(frame["payload_bits"]) / _KIB_BITS).round(3),
            "ratio_with_index": frame["compression_ratio_with_index"].round(1),
            "weight_ratio_no_index": frame["weight_ratio_no_index"].round(1),
            "feasible": frame["feasible"],
            "layers": frame["layers"],
        }
    )
    if table["rung"].isna().all():
        table = table.drop(columns=["rung", "continues", "total_epochs"])
    if table["family"].isna().all():
        table = table.drop(columns="family")
    return table.reset_index(drop=True)


def table_records(study: optuna.Study, table: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``table`` (:func:`front_table`, :func:`closest_table`, or any table with a
    ``trial`` column) as JSON-ready records, each with its trial's per-layer ``settings``: a
    plan file's ``layers:`` block (``{"conv1": {"keep": 0.6, "bits": 2}, ...}``; None where
    :func:`trial_plan` has none)."""
    records = json.loads(table.to_json(orient="records"))
    space = study_space(study)
    trials = study.get_trials(deepcopy=False)
    for record in records:
        plan = trial_plan(trials[record["trial"]], space)
        record["settings"] = None if plan is None else plan.to_dict()["layers"]
    return records


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
    """Write the front of ``study`` to ``path``, by its suffix: ``.csv`` the table of
    :func:`front_table`, ``.json`` its :func:`table_records` (each with its per-layer
    ``settings``); ``.png`` the figure, ``.html`` the interactive figure (only that file).

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
        plot_front(study, **{path.suffix[1:]: path})
        return FrontFiles((path,), len(front_trials(study)))
    table = _table_to_write(study, list(objectives), limits)
    text = (
        json.dumps(table_records(study, table), indent=2) + "\n"
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


#: How each kind of point is drawn: (label, colour, matplotlib marker, hollow).
POINT_GROUPS = {
    "front": ("Pareto front (full fidelity)", "#d62728", "o", False),
    "dominated": ("dominated", "#1f77b4", "o", False),
    "infeasible": ("infeasible (breaks a constraint)", "#7f7f7f", "x", False),
    "lower rung": ("lower rung (trained less, not on the front)", "#9a9a9a", "o", True),
}
_POINT_COLUMNS = ["trial", "kib", "val_accuracy", "group", "origin", "layers"]


def front_points(study: optuna.Study) -> pd.DataFrame:
    """Every completed trial as the figure draws it: ``trial``, ``kib`` (its packed file),
    ``val_accuracy``, ``group`` (a key of :data:`POINT_GROUPS`: with successive halving a
    lower rung's trial is ``lower rung``, never ``front``), ``origin`` and ``layers``."""
    front = {t.number for t in front_trials(study)}
    space = study_space(study)
    rows = []
    for t in study.get_trials(deepcopy=False, states=(_DONE,)):
        metrics = t.user_attrs.get(TrialAttr.METRICS)
        if not metrics:
            continue
        plan = trial_plan(t, space)
        rows.append(
            {
                "trial": t.number,
                "kib": metrics.get(Metric.STORAGE_BITS, float("nan")) / _KIB_BITS,
                "val_accuracy": metrics.get(Metric.VAL_ACCURACY, float("nan")),
                "group": _group(t, study, front),
                "origin": trial_origin(t.user_attrs),
                "layers": "" if plan is None else plan.compact(),
            }
        )
    return pd.DataFrame(rows, columns=_POINT_COLUMNS)


def _group(t: optuna.trial.FrozenTrial, study: optuna.Study, front: set[int]) -> str:
    if not full_fidelity(t, study):
        return "lower rung"
    if not feasible(t):
        return "infeasible"
    return "front" if t.number in front else "dominated"


def _title(study: optuna.Study, points: pd.DataFrame) -> str:
    front = int((points["group"] == "front").sum())
    return f"Pareto front of {study.study_name}: {front} of {len(points)} completed trials"


def _kib_range(points: pd.DataFrame, dense: Mapping[str, float]) -> tuple[float, float]:
    """The smallest and largest packed file drawn, in KiB: every point's and the dense one's."""
    kib = [dense["storage_bits"] / _KIB_BITS, *points["kib"].dropna()]
    kib = [k for k in kib if k > 0] or [1.0]
    return min(kib), max(kib)


def _hover(row: Any) -> str:
    """A point's hover text: its trial, origin, figures and settings, four layers a line."""
    parts = row.layers.split(" ")
    layers = [" ".join(parts[i : i + 8]) for i in range(0, len(parts), 8)]
    lines = [
        f"trial {row.trial} ({row.origin})",
        f"{row.kib:.2f} KiB, val acc {row.val_accuracy:.4f}",
        *layers,
    ]
    return "<br>".join(line for line in lines if line)


def front_figure(study: optuna.Study, dense: Mapping[str, float] | None = None) -> go.Figure:
    """The front of ``study`` as a plotly figure (see the module's docstring): every completed
    trial by its group (:data:`POINT_GROUPS`), front points numbered, hover text with each
    point's trial, origin and per-layer settings, the dense model as a black star.

    Args:
        study: a study made by admmsearch.
        dense: the dense model's ``storage_bits`` and ``val_accuracy`` [default: the study's].

    Raises:
        AdmmSearchError: no ``dense`` given and the study recorded none.
    """
    import plotly.graph_objects as go

    dense, points = _dense(study, dense), front_points(study)
    fig = go.Figure()
    for group, rows in _by_group(points):
        fig.add_trace(_plotly_points(group, rows))
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
    fig.update_xaxes(**plotly_log_x(*_kib_range(points, dense)))
    fig.update_layout(title=_title(study, points), template="plotly_white")
    fig.update_layout(xaxis_title=_AXES[0], yaxis_title=_AXES[1])
    return fig


def _by_group(points: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The points of each group that has some, in :data:`POINT_GROUPS` order; the front's by
    storage (its line runs left to right)."""
    out = []
    for group in POINT_GROUPS:
        rows = points[points["group"] == group]
        if not rows.empty:
            out.append((group, rows.sort_values("kib") if group == "front" else rows))
    return out


def _plotly_points(group: str, rows: pd.DataFrame) -> go.Scatter:
    import plotly.graph_objects as go

    label, color, marker, hollow = POINT_GROUPS[group]
    symbol = {"x": "x", "o": "circle-open" if hollow else "circle"}[marker]
    front = group == "front"
    return go.Scatter(
        x=rows["kib"],
        y=rows["val_accuracy"],
        mode="lines+markers+text" if front else "markers",
        name=label,
        text=[str(n) for n in rows["trial"]] if front else None,
        textposition="top center",
        line={"color": color, "width": 1},
        marker={"symbol": symbol, "size": 9, "color": color},
        hovertext=[_hover(r) for r in rows.itertuples()],
        hoverinfo="text",
    )


def plot_front(
    study: optuna.Study,
    png: str | Path | None = None,
    html: str | Path | None = None,
    dense: Mapping[str, float] | None = None,
) -> None:
    """Write the front's figure as a PNG (120 dpi, matplotlib), as an interactive HTML page
    (:func:`front_figure`; plotly, about 4.8 MB), or both: the files given.

    Raises:
        AdmmSearchError: no ``dense`` given and the study recorded none, or a file cannot be
            written.
    """
    dense = _dense(study, dense)
    if png is not None:
        _plot_png(study, dense, Path(png))
    if html is None:
        return
    try:
        front_figure(study, dense).write_html(html, include_plotlyjs=True, full_html=True)
    except OSError as exc:
        raise AdmmSearchError(f"cannot write {html}: {exc.strerror or exc}") from None


def _plot_png(study: optuna.Study, dense: Mapping[str, float], png: Path) -> None:
    """The figure through matplotlib, without pyplot (no global figure state, no style)."""
    from matplotlib.figure import Figure

    points = front_points(study)
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    for group, rows in _by_group(points):
        _matplotlib_points(ax, group, rows)
    ax.scatter(
        [dense["storage_bits"] / _KIB_BITS],
        [dense["val_accuracy"]],
        marker="*",
        s=160,
        c="black",
        label="dense fp32",
        zorder=3,
    )
    matplotlib_log_x(ax, *_kib_range(points, dense))
    ax.set(xlabel=_AXES[0], ylabel=_AXES[1], title=_title(study, points))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(png, dpi=120)
    except OSError as exc:
        raise AdmmSearchError(f"cannot write {png}: {exc.strerror or exc}") from None


def _matplotlib_points(ax: matplotlib.axes.Axes, group: str, rows: pd.DataFrame) -> None:
    """One group's points; the front's joined by a thin line and numbered by trial."""
    label, color, marker, hollow = POINT_GROUPS[group]
    style = {"facecolors": "none", "edgecolors": color} if hollow else {"c": color}
    ax.scatter(rows["kib"], rows["val_accuracy"], marker=marker, s=36, label=label, **style)
    if group != "front":
        return
    ax.plot(rows["kib"], rows["val_accuracy"], "-", lw=0.8, color=color, alpha=0.6)
    for row in rows.itertuples():
        ax.annotate(
            str(row.trial),
            (row.kib, row.val_accuracy),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
        )
