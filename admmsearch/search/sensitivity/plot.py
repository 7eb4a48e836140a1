"""The sensitivity table as files: ``sensitivity.csv``, ``sensitivity.png`` and, when asked
for (the study's MLflow run has it), an interactive ``sensitivity.html`` (it holds plotly's
4.8 MB); one curve per unit, accuracy against keep ratio (float32 survivors; a log axis
labelled at 0.02, 0.05, 0.1 ...: :mod:`..ticks`) and against bits (every weight kept), the
dense accuracy marked, each panel with its legend."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ...record import kib
from ..ticks import matplotlib_log_x, plotly_log_x
from .table import Sensitivity

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FILES", "curves", "keep_range", "sensitivity_figure", "write_sensitivity"]

FILES = ("sensitivity.csv", "sensitivity.png", "sensitivity.html")


def curves(frame: pd.DataFrame) -> dict[str, dict[str, pd.DataFrame]]:
    """Per unit: ``keep`` (rows without quantization, by keep ratio) and ``bits`` (rows keeping
    every weight, by bits; a cluster count k is plotted at log2 k bits)."""
    out = {}
    for unit, rows in frame.groupby("unit", sort=False):
        pruned = rows[rows["levels"].isna()].sort_values("keep")
        quantized = rows[(rows["keep"] == 1.0) & rows["levels"].notna()].copy()
        clusters = quantized["quantizer"] == "clusters"
        quantized["bits"] = quantized["levels"].astype(float)
        quantized.loc[clusters, "bits"] = quantized.loc[clusters, "levels"].map(
            lambda k: math.log2(float(k))
        )
        out[str(unit)] = {"keep": pruned, "bits": quantized.sort_values("bits")}
    return out


def write_sensitivity(result: Sensitivity, folder: Path, html: bool = False) -> list[Path]:
    """Write the table and the PNG into ``folder``, and the interactive HTML where ``html``;
    returns their paths (CSV, PNG, then HTML)."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = result.frame()
    paths = [folder / name for name in FILES[: 3 if html else 2]]
    frame.to_csv(paths[0], index=False)
    _png(frame, result.dense_val_accuracy, paths[1])
    if html:
        _html(frame, result.dense_val_accuracy, paths[2])
    return paths


def keep_range(frame: pd.DataFrame) -> tuple[float, float]:
    """The smallest and largest keep ratio of the table (its log axis spans them)."""
    keeps = frame["keep"][frame["keep"] > 0]
    return (float(keeps.min()), float(keeps.max())) if not keeps.empty else (0.1, 1.0)


def _png(frame: pd.DataFrame, dense: float, path: Path) -> None:
    sensitivity_figure(frame, dense).savefig(path, dpi=120)


def sensitivity_figure(frame: pd.DataFrame, dense: float) -> Figure:
    """The PNG's figure of the table ``frame`` (:meth:`Sensitivity.frame`) against the dense
    validation accuracy ``dense``: two panels, keep ratio (log axis, readable ticks) and bits,
    each with its legend. Matplotlib without pyplot: no backend, no global figure state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2, sharey=True)
    for unit, c in curves(frame).items():
        left.plot(c["keep"]["keep"], c["keep"]["val_accuracy"], "o-", ms=3, label=unit)
        right.plot(c["bits"]["bits"], c["bits"]["val_accuracy"], "o-", ms=3, label=unit)
    for ax in (left, right):
        ax.axhline(dense, color="black", lw=1, ls="--", label="dense")
        ax.grid(True, which="both", alpha=0.3)
    matplotlib_log_x(left, *keep_range(frame))
    left.set_xlabel("keep ratio (this unit alone, magnitude pruned, float32)")
    right.set_xlabel("bits (this unit alone, every weight kept; clusters at log2 k)")
    left.set_ylabel("validation accuracy")
    for ax in (left, right):
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Sensitivity: each unit compressed alone, nothing retrained")
    fig.tight_layout()
    return fig


def _html(frame: pd.DataFrame, dense: float, path: Path) -> None:
    import matplotlib
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        subplot_titles=("magnitude pruning, float32", "quantization, every weight kept"),
    )
    palette = matplotlib.colormaps["tab10"].colors
    for i, (unit, c) in enumerate(curves(frame).items()):
        color = "rgb({:.0f},{:.0f},{:.0f})".format(*(255 * x for x in palette[i % 10]))
        for col, (x, part) in enumerate((("keep", c["keep"]), ("bits", c["bits"])), start=1):
            fig.add_trace(_curve(unit, x, part, color, legend=col == 1), row=1, col=col)
    fig.add_hline(y=dense, line_dash="dash", annotation_text=f"dense {dense:.4f}")
    fig.update_xaxes(title_text="keep ratio", **plotly_log_x(*keep_range(frame)), row=1, col=1)
    fig.update_xaxes(title_text="bits (clusters: log2 k)", row=1, col=2)
    fig.update_yaxes(title_text="validation accuracy", row=1, col=1)
    fig.update_layout(template="plotly_white")
    fig.write_html(path, include_plotlyjs=True, full_html=True)


def _curve(unit: str, x: str, part: pd.DataFrame, color: str, legend: bool) -> Any:
    """One unit's plotly curve over ``x`` (``keep`` or ``bits``), hover with its KiB."""
    import plotly.graph_objects as go

    return go.Scatter(
        x=part[x],
        y=part["val_accuracy"],
        mode="lines+markers",
        name=unit,
        legendgroup=unit,
        showlegend=legend,
        line={"color": color},
        customdata=kib(part[["storage_bits"]].to_numpy()),
        hovertemplate=f"{unit}<br>{x} %{{x:.4g}}<br>val acc %{{y:.4f}}"
        "<br>%{customdata[0]:.2f} KiB<extra></extra>",
    )
