"""The benchmark harness: what every ``benchmarks/bench_<name>.py`` script shares.

* the command line: :func:`argument_parser` (``--out`` and ``--smoke``, with ``--threads`` and
  ``--device`` where a script asks) and :func:`sized` (a flag given wins, else the smoke or the
  full default);
* the run: :func:`main` parses, runs, writes ``OUT/<stem>.json`` and ``OUT/<stem>.md``, prints
  the markdown and draws ``OUT/<stem>.png``; :class:`Clock` records the command, date, machine
  and load for the report's header line (:func:`report_header`);
* the figures: :func:`figure` and :func:`save_figure` (matplotlib without pyplot, so no backend
  is chosen or changed), :data:`COLORS`;
* the study files: :func:`read_study` with overrides, :func:`write_study`;
* fronts: the exact 2-D hypervolume and Pareto front (checked against Optuna's in the tests);
* markdown: :func:`table`, :func:`pct`.

The scripts run as ``python benchmarks/bench_<name>.py``, which puts this folder on
``sys.path``; they import this module as ``common``.

Hypervolume, worked example: points ``(x, y)`` with ``x`` minimised and ``y`` maximised,
reference ``(0, 0)``. The points ``(-2, 1)`` and ``(-1, 3)`` dominate the rectangles
``[-2, 0] x [0, 1]`` (area 2) and ``[-1, 0] x [0, 3]`` (area 3), which overlap on
``[-1, 0] x [0, 1]`` (area 1): the union is 2 + 3 - 1 = 4. A point no better than the
reference in either coordinate adds nothing.

>>> hypervolume_2d([(-2, 1), (-1, 3), (0.5, 9)], (0, 0))
4.0
>>> pareto_indices([(-2, 1), (-1, 3), (-1, 2), (-2, 1)])
[0, 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from admmsearch.config import StudyConfig, load_study, validate_study

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

    from admmsearch.data import DataSplits

__all__ = [
    "COLORS",
    "RESULTS",
    "SMOKE_EVAL",
    "Clock",
    "argument_parser",
    "best_within_drop",
    "fashion_mnist_small",
    "figure",
    "hypervolume_2d",
    "load_average",
    "log",
    "machine_info",
    "main",
    "pareto_indices",
    "pct",
    "read_study",
    "report_header",
    "save_figure",
    "sized",
    "stores",
    "table",
    "trial_seconds",
    "write_outputs",
    "write_study",
]


#: Where the reports go unless ``--out`` says otherwise.
RESULTS = Path("benchmarks/results")
#: The colours of the figures' series, in order (matplotlib's tab10).
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


# --------------------------------------------------------------------------- the command line


def argument_parser(
    doc: str | None, *, smoke: str = "< 2 min", threads: bool = False, device: bool = False
) -> argparse.ArgumentParser:
    """The parser every benchmark starts from: its description is the first paragraph of
    ``doc`` (the script's docstring); ``--out`` (default ``benchmarks/results``) and
    ``--smoke`` (a tiny run taking ``smoke``, to check the script); ``--threads`` (torch
    threads, default every core) and ``--device`` (default cpu) where asked for."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    if threads:
        p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    if device:
        p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--out", type=Path, default=RESULTS, help="report folder (%(default)s)")
    p.add_argument("--smoke", action="store_true", help=f"tiny run ({smoke}) to check the script")
    return p


def sized(
    args: argparse.Namespace, smoke: Mapping[str, Any], full: Mapping[str, Any]
) -> dict[str, Any]:
    """The run's sizes: for each key of ``full``, the flag of that name where it was given
    (not None), else the ``smoke`` default under ``--smoke``, else the ``full`` one.

    >>> a = argparse.Namespace(smoke=True, trials=None, seeds="3")
    >>> sized(a, {"trials": 4, "seeds": "0"}, {"trials": 50, "seeds": "0,1"})
    {'trials': 4, 'seeds': '3'}
    """
    sizes = smoke if args.smoke else full
    return {k: v if (v := getattr(args, k, None)) is not None else sizes[k] for k in full}


def main(
    argv: list[str] | None,
    *,
    script: str,
    parse: Callable[[list[str]], Any],
    run: Callable[[Any, str], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    plot: Callable[[dict[str, Any], Path], None] | None = None,
    stem: str | None = None,
) -> int:
    """Run one benchmark script: parse ``argv`` (``sys.argv[1:]`` when None), run it with the
    command line as the report records it, write ``OUT/<stem>.json`` and ``OUT/<stem>.md``
    (``stem``: the script's name after ``bench_``), print the markdown, and draw
    ``OUT/<stem>.png`` when ``plot`` is given. Returns the exit status (0)."""
    argv = sys.argv[1:] if argv is None else argv
    opts = parse(argv)
    stem = stem or Path(script).stem.removeprefix("bench_")
    report = run(opts, shlex.join(["python", f"benchmarks/{script}", *argv]))
    write_outputs(opts.out, stem, report, render(report))
    if plot is not None:
        plot(report, opts.out / f"{stem}.png")
    log(f"done in {report['total_seconds']:.0f} s")
    return 0


def log(what: str) -> None:
    """Progress on stderr, so a long run can be followed; stdout keeps only the markdown."""
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine skews every time figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict[str, Any]:
    """CPU, cores, torch threads, device and the versions that shape every figure."""
    import mlflow
    import optuna
    import torch

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "mlflow": mlflow.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class Clock:
    """The run record every report starts with: command, date, machine, load, wall time."""

    def __init__(self, command: str, device: str) -> None:
        self.started = time.perf_counter()
        self.record: dict[str, Any] = {
            "command": command,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": {**machine_info(device), "load_start": load_average()},
        }

    def finish(self) -> dict[str, Any]:
        """The record with the total wall time and the load average at the end."""
        self.record["machine"]["load_end"] = load_average()
        self.record["total_seconds"] = time.perf_counter() - self.started
        return self.record


def report_header(report: Mapping[str, Any]) -> str:
    """One line: command, date, machine, threads, versions, total time, load averages."""
    m = report["machine"]
    return (
        f"`{report['command']}` · {report['date']} · {m['cpu']} ({m['cores']} cores), "
        f"{m['torch_threads']} torch threads, device {m['device']}, torch {m['torch']}, "
        f"optuna {m['optuna']}, mlflow {m['mlflow']} · total {report['total_seconds']:.0f} s · "
        f"load average (1/5/15 min) {m['load_start']} at start, {m['load_end']} at end"
    )


# ------------------------------------------------------------------------------ study files


def read_study(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A study file as plain data with every default filled in, then ``overrides`` applied.

    ``overrides`` maps dotted paths to values, e.g. ``{"dataset.limit_train": 512}``; a path
    through a null section creates it.
    """
    data = load_study(path).resolved_dict()  # admmsearch's one YAML reader
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
        node[last] = value
    return data


def write_study(data: Mapping[str, Any], path: Path) -> tuple[StudyConfig, list[str]]:
    """Write a study file and validate it the way the CLI does; returns config and layers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return validate_study(path)


#: Validation and test images the smoke runs evaluate on (evaluation dominates a tiny run).
SMOKE_EVAL = 1000


def fashion_mnist_small() -> DataSplits:
    """Fashion-MNIST with 1,000 validation and 1,000 test images, for ``--smoke`` runs only.

    A study names it as the dataset ``common:fashion_mnist_small``; its ``limit_train`` still
    cuts the training split.
    """
    from admmsearch.data import load_dataset

    data = load_dataset("fashion-mnist", download=False)
    n = SMOKE_EVAL
    return dataclasses.replace(
        data,
        x_val=data.x_val[:n],
        y_val=data.y_val[:n],
        x_test=data.x_test[:n],
        y_test=data.y_test[:n],
    )


def trial_seconds(trial: optuna.trial.FrozenTrial) -> float:
    """Wall time of a finished trial, from Optuna's start and completion times."""
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def stores(folder: Path) -> dict[str, str]:
    """Fresh Optuna and MLflow SQLite stores inside ``folder``."""
    (folder / "mlruns").mkdir(parents=True, exist_ok=True)
    return {
        "storage": f"sqlite:///{folder / 'optuna.db'}",
        "tracking_uri": f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}",
    }


# ---------------------------------------------------------------------- fronts and volumes


def pareto_indices(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, ``x`` minimised and ``y`` maximised.

    Of several identical points only the first is kept; the result is sorted by ``x``.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front, best_y = [], float("-inf")
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def hypervolume_2d(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Exact area dominated by ``points`` (``x`` minimised, ``y`` maximised) within ``ref``.

    Sweeps the points by increasing ``x``: each one that raises the best ``y`` so far adds the
    slab between the old and the new best ``y``, reaching from its ``x`` to ``ref[0]``.
    """
    inside = sorted((x, y) for x, y in points if x < ref[0] and y > ref[1])
    area, best_y = 0.0, ref[1]
    for x, y in inside:
        if y > best_y:
            area += (ref[0] - x) * (y - best_y)
            best_y = y
    return area


def best_within_drop(
    points: Sequence[Mapping[str, Any]], accuracy: str, dense_accuracy: float, drop: float
) -> Mapping[str, Any] | None:
    """The point of highest ``ratio`` whose ``accuracy`` lost at most ``drop`` from dense."""
    ok = [p for p in points if dense_accuracy - p[accuracy] <= drop + 1e-12]
    return max(ok, key=lambda p: (p["ratio"], p[accuracy])) if ok else None


# --------------------------------------------------------------------------------- figures


def figure(width: float, height: float, rows: int = 1, cols: int = 1, **kw: Any) -> tuple:
    """A figure of ``width`` x ``height`` inches and its axes (``Figure.subplots``), drawn by
    matplotlib without pyplot: no backend is chosen, nothing global changes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(rows, cols, **kw)


def save_figure(fig: Figure, png: Path) -> None:
    """Lay the figure out tightly and write it as a 120 dpi PNG."""
    fig.tight_layout()
    fig.savefig(png, dpi=120)


# -------------------------------------------------------------------------------- markdown


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def write_outputs(out: Path, stem: str, report: Mapping[str, Any], markdown: str) -> None:
    """``OUT/<stem>.json`` and ``OUT/<stem>.md``; the markdown also goes to stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    print(markdown)
