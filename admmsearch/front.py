"""The Pareto front of a study: which trials, as a table, and as a plot against the dense model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from .record import Metric, TrialAttr  # noqa: E402

__all__ = ["feasible", "front_frame", "front_trials", "plot_front", "trials_frame"]

_DONE = optuna.trial.TrialState.COMPLETE


def front_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The non-dominated feasible trials (Optuna's ``best_trials``), by trial number."""
    if len(study.directions) == 1:
        done = [t for t in study.get_trials(deepcopy=False, states=(_DONE,)) if feasible(t)]
        return [study.best_trial] if done else []
    return sorted(study.best_trials, key=lambda t: t.number)


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


def plot_front(frame: pd.DataFrame, dense: dict[str, float], png: Path, html: Path) -> None:
    """Validation accuracy against storage (log scale): all trials, the front, the dense model."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if not frame.empty:
        rest = frame[~frame["front"]]
        ax.scatter(
            rest["storage_bits_with_index"] / 8192,
            rest["val_accuracy"],
            s=18,
            c="0.6",
            label="trials",
        )
        front = frame[frame["front"]].sort_values("storage_bits_with_index")
        ax.plot(
            front["storage_bits_with_index"] / 8192,
            front["val_accuracy"],
            "o-",
            c="tab:blue",
            label="Pareto front",
        )
    ax.scatter(
        [dense["storage_bits"] / 8192],
        [dense["val_accuracy"]],
        marker="*",
        s=160,
        c="tab:red",
        label="dense fp32",
    )
    ax.set_xscale("log")
    ax.set_xlabel("packed model file (KiB)")
    ax.set_ylabel("validation accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    _plot_html(frame, dense, html)


def _plot_html(frame: pd.DataFrame, dense: dict[str, float], html: Path) -> None:
    """The same plot, interactive (plotly): hovering a point shows its trial and figures."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if not frame.empty:
        styles = ((False, "trials", "#999"), (True, "Pareto front", "#1f77b4"))
        for on_front, name, color in styles:
            part = frame[frame["front"] == on_front].sort_values("storage_bits_with_index")
            fig.add_trace(
                go.Scatter(
                    x=part["storage_bits_with_index"] / 8192,
                    y=part["val_accuracy"],
                    mode="lines+markers" if on_front else "markers",
                    name=name,
                    marker={"color": color},
                    text=[f"trial {t}" for t in part["trial"]],
                    hovertemplate="%{text}<br>%{x:.2f} KiB<br>val acc %{y:.4f}<extra></extra>",
                )
            )
    fig.add_trace(
        go.Scatter(
            x=[dense["storage_bits"] / 8192],
            y=[dense["val_accuracy"]],
            mode="markers",
            name="dense fp32",
            marker={"symbol": "star", "size": 14, "color": "#d62728"},
        )
    )
    fig.update_layout(
        xaxis={"type": "log", "title": "packed model file (KiB)"},
        yaxis={"title": "validation accuracy"},
        template="plotly_white",
    )
    fig.write_html(html, include_plotlyjs=True, full_html=True)
