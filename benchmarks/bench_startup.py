"""Start-up: the wall time of ``admmsearch --help`` and of ``admmsearch COMMAND --help`` for
every command, and whether each loads torch, MLflow, Optuna, matplotlib or plotly.

Each command line runs as a fresh process (the ``admmsearch`` script beside this Python, else
``python -m admmsearch``), several times in turn; the report gives the median, min and max
against the goal of 1 s. A second pass runs each command line once inside a small wrapper that
lists the heavy modules it left in ``sys.modules``: none should be loaded just to print help.
Usage::

    python benchmarks/bench_startup.py                        # 7 runs of each (about 15 s)
    python benchmarks/bench_startup.py --smoke --out /tmp/bench

Writes ``OUT/startup.md`` and ``OUT/startup.json`` and prints the markdown.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import common
from common import Clock, argument_parser, log, report_header, sized, table

from admmsearch.cli import main as cli

FULL = {"repeats": 7}
SMOKE = {"repeats": 1}
GOAL_S = 1.0
#: Modules that `--help` has no need of; each costs from 0.1 s (plotly) to several (torch).
HEAVY = ("torch", "mlflow", "optuna", "matplotlib", "plotly", "pandas", "sklearn")
#: Runs the command line in-process and prints which of HEAVY it loaded, as JSON.
_WRAPPER = """
import json, sys
from admmsearch.cli import main
try:
    main(sys.argv[1:], prog_name="admmsearch")
except SystemExit:
    pass
print(json.dumps([m for m in {heavy!r} if m in sys.modules]))
"""


@dataclasses.dataclass(frozen=True)
class Options:
    repeats: int
    out: Path
    smoke: bool


def parse_args(argv: list[str]) -> Options:
    """Command line -> Options; ``--smoke`` changes the defaults, explicit flags still win."""
    p = argument_parser(__doc__, smoke="a few seconds")
    p.add_argument("--repeats", type=int, help=f"runs of each command (default {FULL['repeats']})")
    a = p.parse_args(argv)
    sizes = sized(a, SMOKE, FULL)
    if sizes["repeats"] < 1:
        p.error("--repeats: at least 1")
    return Options(sizes["repeats"], a.out, a.smoke)


def command_lines() -> list[list[str]]:
    """``--help`` of the group, then of every command in order."""
    return [["--help"], *([name, "--help"] for name in sorted(cli.commands))]


def launcher() -> list[str]:
    """How a user starts admmsearch: its script beside this Python, else ``python -m``."""
    script = Path(sys.executable).with_name("admmsearch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "admmsearch"]


def wall_seconds(command: Sequence[str]) -> float:
    """One run of ``command`` from start to exit; it must succeed."""
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed ({run.returncode}): {run.stderr[-2000:]}")
    return seconds


def heavy_modules(args: Sequence[str]) -> list[str]:
    """Which of :data:`HEAVY` the command line loads (run once inside :data:`_WRAPPER`)."""
    code = _WRAPPER.format(heavy=HEAVY)
    run = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )
    if run.returncode != 0:
        raise SystemExit(f"the import check of {args} failed: {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def measure(opts: Options) -> list[dict[str, Any]]:
    """Every command line ``repeats`` times, in turn (so that a slow spell hits them all)."""
    lines = command_lines()
    base = launcher()
    times: dict[int, list[float]] = {i: [] for i in range(len(lines))}
    wall_seconds([*base, "--help"])  # warm the file cache; not counted
    for repeat in range(opts.repeats):
        for i, args in enumerate(lines):
            times[i].append(wall_seconds([*base, *args]))
        log(f"run {repeat + 1} of {opts.repeats}")
    return [
        {
            "command": " ".join(["admmsearch", *args]),
            "seconds": times[i],
            "median": statistics.median(times[i]),
            "min": min(times[i]),
            "max": max(times[i]),
            "within_goal": statistics.median(times[i]) < GOAL_S,
            "heavy_modules": heavy_modules(args),
        }
        for i, args in enumerate(lines)
    ]


def run_benchmark(opts: Options, command: str) -> dict[str, Any]:
    clock = Clock(command, "cpu")
    rows = measure(opts)
    return {
        **clock.finish(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
        "launcher": " ".join(launcher()),
        "goal_seconds": GOAL_S,
        "commands": rows,
        "all_within_goal": all(r["within_goal"] for r in rows),
        "none_heavy": not any(r["heavy_modules"] for r in rows),
    }


def render_markdown(report: Mapping[str, Any]) -> str:
    rows = [
        [
            f"`{r['command']}`",
            f"{r['median']:.3f}",
            f"{r['min']:.3f}",
            f"{r['max']:.3f}",
            ", ".join(r["heavy_modules"]) or "none",
        ]
        for r in report["commands"]
    ]
    worst = max(report["commands"], key=lambda r: r["median"])
    goal = "every command within" if report["all_within_goal"] else "NOT every command within"
    lines = [
        "# Start-up: `admmsearch --help` and every command's `--help`",
        "",
        report_header(report),
        "",
        f"Each command line as a fresh process (`{report['launcher']}`), "
        f"{report['options']['repeats']} runs each, in turn; seconds of wall time. Heavy "
        f"modules: which of {', '.join(HEAVY)} the command line loads.",
        "",
        *table(["command", "median s", "min s", "max s", "heavy modules loaded"], rows),
        "",
        f"**{goal} the {report['goal_seconds']:g} s goal**; the slowest median is "
        f"`{worst['command']}`, {worst['median']:.3f} s. Heavy modules loaded by any: "
        f"{'none' if report['none_heavy'] else 'yes (see the table)'}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return common.main(
        argv,
        script="bench_startup.py",
        parse=parse_args,
        run=run_benchmark,
        render=render_markdown,
    )


if __name__ == "__main__":
    sys.exit(main())
