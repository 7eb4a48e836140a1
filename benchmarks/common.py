"""What the study benchmarks share: the machine record, study files with overrides, the exact
2-D hypervolume and Pareto front, markdown tables and the report files.

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

import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import optuna
import torch
import yaml

from admmsearch.config import StudyConfig, load_study, validate_study
from admmsearch.data import DataSplits, load_dataset

__all__ = [
    "SMOKE_EVAL",
    "Clock",
    "best_within_drop",
    "fashion_mnist_small",
    "hypervolume_2d",
    "load_average",
    "log",
    "machine_info",
    "pareto_indices",
    "pct",
    "read_study",
    "report_header",
    "stores",
    "table",
    "trial_seconds",
    "write_outputs",
    "write_study",
]


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
