"""Search efficiency: the hypervolume a study's front reaches after n trials, per sampler.

The same study (``studies/digits-quick.yaml`` by default: digits, 4 layers, keep and bits per
layer plus rho, 9 parameters) runs once per sampler (NSGA-II with the study's population size,
TPE, random) and seed, without the study's hand-picked first trial, so every trial is the
sampler's own. All runs share one dense model (the study seed is fixed; only the sampler seed
changes) and one stage cache, which saves time but changes no result.

After each trial the hypervolume of the trials so far is computed in the study's own objective
space: validation accuracy in points (maximised) and log10 of storage with indices over the
dense storage (minimised), reference (dense storage, dense accuracy - the study's
``max_accuracy_drop``), so trials the study counts as infeasible add nothing. Usage::

    python benchmarks/bench_search.py          # the full run: about 25 min on 2 idle cores
    python benchmarks/bench_search.py --smoke --out /tmp/bench

Writes ``OUT/search.md``, ``OUT/search.json`` and ``OUT/search.png`` and prints the markdown.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import common
import optuna
import torch
from common import (
    COLORS,
    Clock,
    argument_parser,
    figure,
    hypervolume_2d,
    log,
    pct,
    read_study,
    report_header,
    save_figure,
    sized,
    stores,
    table,
    write_study,
)

from admmsearch.record import kib
from admmsearch.search.study import prepare, run_study

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "digits-quick.yaml"
SAMPLERS = ("nsga2", "tpe", "random")
FULL = {"trials": 50, "seeds": "0,1,2,3,4,5", "checkpoints": "5,10,20,30,40,50"}
SMOKE = {"trials": 4, "seeds": "0", "checkpoints": "2,4"}
SMOKE_STUDY = {
    "dataset.limit_train": 300,
    "dense.train.epochs": 3,
    "pipeline.admm_prune.train.epochs": 1,
    "pipeline.retrain.epochs": 1,
    "pipeline.admm_quantize.train.epochs": 1,
}


@dataclasses.dataclass(frozen=True)
class Options:
    study: Path
    samplers: tuple[str, ...]
    seeds: tuple[int, ...]
    trials: int
    checkpoints: tuple[int, ...]
    population: int | None
    threads: int
    out: Path
    smoke: bool


def parse_args(argv: list[str]) -> Options:
    """Command line -> Options; ``--smoke`` changes the defaults, explicit flags still win."""
    p = argument_parser(__doc__, smoke="< 1 min", threads=True)
    p.add_argument("--study", type=Path, default=STUDY, help="study file (default: %(default)s)")
    p.add_argument("--samplers", default=",".join(SAMPLERS), help="from nsga2, tpe, random, gp")
    p.add_argument("--seeds", help=f"sampler seeds (default {FULL['seeds']})")
    p.add_argument("--trials", type=int, help=f"trials per run (default {FULL['trials']})")
    p.add_argument("--checkpoints", help=f"n reported (default {FULL['checkpoints']})")
    p.add_argument("--population", type=int, help="NSGA-II population (default: the study's)")
    a = p.parse_args(argv)
    sizes = sized(a, SMOKE, FULL)
    trials = sizes["trials"]
    checkpoints = tuple(int(x) for x in sizes["checkpoints"].split(","))
    samplers = tuple(s for s in a.samplers.split(",") if s)
    if any(s not in (*SAMPLERS, "gp") for s in samplers):
        p.error(f"--samplers: choose from nsga2, tpe, random, gp; got {a.samplers!r}")
    return Options(
        study=a.study,
        samplers=samplers,
        seeds=tuple(int(x) for x in sizes["seeds"].split(",")),
        trials=trials,
        checkpoints=tuple(c for c in checkpoints if c <= trials),
        population=a.population,
        threads=a.threads,
        out=a.out,
        smoke=a.smoke,
    )


def run_config(opts: Options, sampler: str, seed: int, base: Mapping[str, Any]) -> dict:
    """The study file's data for one run: its sampler and seed, no enqueued trial."""
    population = opts.population or base["sampler"]["population_size"]
    changes = {
        "name": f"{base['name']}-{sampler}-seed{seed}",
        "sampler": {
            "name": sampler,
            "seed": seed,
            "population_size": population if sampler == "nsga2" else None,
        },
        "enqueue": [],
        "search.seed_from_sensitivity": False,  # the samplers alone, from their first trial
        "budget": {"trials": opts.trials, "timeout_s": None},
        **(SMOKE_STUDY if opts.smoke else {}),
    }
    return read_study(opts.study, changes)


def hypervolume_curve(
    study: optuna.Study, dense_val: float, dense_bits: int, max_drop: float
) -> list[float]:
    """Hypervolume of the first n trials, for n = 1 .. trials (failed trials add no point)."""
    ref = (0.0, 100 * (dense_val - max_drop))
    points, curve = [], []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state == optuna.trial.TrialState.COMPLETE:
            val, bits = t.values
            points.append((math.log10(bits / dense_bits), 100 * val))
        curve.append(hypervolume_2d(points, ref))
    return curve


def run_one(opts: Options, sampler: str, seed: int, tmp: Path) -> dict[str, Any]:
    base = read_study(opts.study)
    config, layers = write_study(
        run_config(opts, sampler, seed, base), tmp / f"{sampler}-{seed}.yaml"
    )
    ctx = prepare(config, layers, **stores(tmp), workdir=tmp / "work", cache_dir=tmp / "cache")
    start = time.perf_counter()
    study = run_study(ctx)
    seconds = time.perf_counter() - start
    max_drop = config.constraints.max_accuracy_drop or 1.0
    curve = hypervolume_curve(study, ctx.dense.val_accuracy, ctx.dense.storage_bits, max_drop)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    feasible = [t for t in done if ctx.dense.val_accuracy - t.values[0] <= max_drop]
    log(
        f"{sampler} seed {seed}: hypervolume {curve[-1]:.3f} after {len(curve)} trials, "
        f"{seconds:.0f} s"
    )
    return {
        "sampler": sampler,
        "seed": seed,
        "curve": curve,
        "seconds": seconds,
        "trials": len(curve),
        "completed": len(done),
        "feasible": len(feasible),
        "points": [
            {"trial": t.number, "val_accuracy": t.values[0], "storage_bits": t.values[1]}
            for t in done
        ],
        "dense": {"val_accuracy": ctx.dense.val_accuracy, "storage_bits": ctx.dense.storage_bits},
        "max_accuracy_drop": max_drop,
    }


def aggregate(runs: Sequence[Mapping[str, Any]], opts: Options) -> dict[str, Any]:
    """Per sampler and checkpoint: mean, standard deviation, min and max over the seeds."""
    out = {}
    for sampler in opts.samplers:
        mine = [r for r in runs if r["sampler"] == sampler]
        at = {}
        for n in opts.checkpoints:
            values = [r["curve"][n - 1] for r in mine]
            at[str(n)] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values),
                "max": max(values),
            }
        mean_curve = [statistics.fmean(c) for c in zip(*(r["curve"] for r in mine), strict=True)]
        out[sampler] = {
            "at": at,
            "mean_curve": mean_curve,
            "mean_over_curve": statistics.fmean(mean_curve),
            "feasible_share": sum(r["feasible"] for r in mine) / sum(r["trials"] for r in mine),
            "seconds": sum(r["seconds"] for r in mine),
        }
    return out


def ranking(samplers: Mapping[str, Any], n: int) -> list[str]:
    return sorted(samplers, key=lambda s: -samplers[s]["at"][str(n)]["mean"])


def seed_wins(runs: Sequence[Mapping[str, Any]], n: int) -> dict[str, float]:
    """Per sampler, the seeds on which it reached the highest hypervolume after ``n`` trials
    (the samplers share their seeds, so this is a paired comparison; ties share the win)."""
    wins: dict[str, float] = {r["sampler"]: 0.0 for r in runs}
    for seed in dict.fromkeys(r["seed"] for r in runs):
        mine = {r["sampler"]: r["curve"][n - 1] for r in runs if r["seed"] == seed}
        top = [s for s, v in mine.items() if v == max(mine.values())]
        for s in top:
            wins[s] += 1 / len(top)
    return wins


def verdict(samplers: Mapping[str, Any], n: int) -> str:
    """Whether the best mean stands clear of the second one by more than the seeds' spread."""
    first, second = ranking(samplers, n)[:2]
    a, b = samplers[first]["at"][str(n)], samplers[second]["at"][str(n)]
    gap, spread = a["mean"] - b["mean"], max(a["std"], b["std"])
    if gap > spread:
        return (
            f"{first} leads {second} by {gap:.3f}, more than the spread over seeds ({spread:.3f})"
        )
    return (
        f"{first} leads {second} by only {gap:.3f}, less than the spread over seeds "
        f"({spread:.3f}): not a clear winner at this number of seeds"
    )


def run_benchmark(opts: Options, command: str) -> dict[str, Any]:
    torch.set_num_threads(opts.threads)
    clock = Clock(command, "cpu")
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        runs = [run_one(opts, s, seed, Path(tmp)) for seed in opts.seeds for s in opts.samplers]
    samplers = aggregate(runs, opts)
    last = opts.checkpoints[-1]
    report = clock.finish()
    report.update(
        {
            "options": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(opts).items()
            },
            "runs": runs,
            "samplers": samplers,
            "ranking": {str(n): ranking(samplers, n) for n in opts.checkpoints},
            "recommended": ranking(samplers, last)[0],
            "seed_wins": seed_wins(runs, last),
            "verdict": verdict(samplers, last),
        }
    )
    return report


def render_markdown(report: Mapping[str, Any]) -> str:
    o, samplers = report["options"], report["samplers"]
    head = [
        "sampler",
        *(f"n = {n}" for n in o["checkpoints"]),
        "mean over n = 1..N",
        "feasible",
        "wall s",
    ]
    rows = [
        [
            s,
            *(f"{a['mean']:.3f} ± {a['std']:.3f}" for a in v["at"].values()),
            f"{v['mean_over_curve']:.3f}",
            pct(v["feasible_share"]),
            f"{v['seconds']:.0f}",
        ]
        for s, v in samplers.items()
    ]
    per_seed = [
        [r["sampler"], r["seed"], *(f"{r['curve'][n - 1]:.3f}" for n in o["checkpoints"])]
        for r in report["runs"]
    ]
    ranks = [[f"n = {n}", " > ".join(order)] for n, order in report["ranking"].items()]
    lines = [
        "# Search efficiency: hypervolume after n trials",
        "",
        report_header(report),
        "",
        *_setup_md(report),
        "",
        *table(head, rows),
        "",
        "Ranking by mean hypervolume:",
        "",
        *table(["after", "order"], ranks),
        "",
        f"**Recommended default sampler: `{report['recommended']}`** (highest mean hypervolume "
        f"after {o['checkpoints'][-1]} trials); {report['verdict']}. Seeds won after "
        f"{o['checkpoints'][-1]} trials (paired, same seeds): "
        + ", ".join(f"{s} {w:.3g}" for s, w in report["seed_wins"].items())
        + ".",
        "",
        "![hypervolume curves](search.png)",
        "",
        "## Every run",
        "",
        *table(["sampler", "seed", *(f"n = {n}" for n in o["checkpoints"])], per_seed),
        "",
    ]
    return "\n".join(lines)


def _setup_md(report: Mapping[str, Any]) -> list[str]:
    """The study, the runs and how the hypervolume is measured."""
    o, first = report["options"], report["runs"][0]
    return [
        f"Study `{Path(o['study']).name}` without its enqueued first trial, {o['trials']} "
        f"trials per run, sampler seeds {', '.join(map(str, o['seeds']))}; NSGA-II population "
        f"{o['population'] or 'as in the study file'}. Dense model: validation "
        f"{pct(first['dense']['val_accuracy'])}, {kib(first['dense']['storage_bits']):.1f} "
        "KiB. Hypervolume in (log10 storage with indices / dense, validation accuracy in "
        f"points), reference (dense storage, dense accuracy - "
        f"{100 * first['max_accuracy_drop']:g} pt = the study's feasibility limit); unit "
        "decade x point. Mean ± standard deviation over the seeds.",
    ]


def plot(report: Mapping[str, Any], png: Path) -> None:
    """Mean hypervolume against trials per sampler, shaded between the seeds' min and max."""
    fig, ax = figure(7, 4.5)
    for (name, v), color in zip(report["samplers"].items(), COLORS, strict=False):
        curves = [r["curve"] for r in report["runs"] if r["sampler"] == name]
        n = range(1, len(v["mean_curve"]) + 1)
        ax.fill_between(
            n,
            [min(c) for c in zip(*curves, strict=True)],
            [max(c) for c in zip(*curves, strict=True)],
            color=color,
            alpha=0.15,
        )
        ax.plot(n, v["mean_curve"], color=color, label=f"{name} (mean of {len(curves)})")
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (decade x point)")
    ax.set_title("Front hypervolume after n trials (shaded: min-max over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_figure(fig, png)


def main(argv: list[str] | None = None) -> int:
    return common.main(
        argv,
        script="bench_search.py",
        parse=parse_args,
        run=run_benchmark,
        render=render_markdown,
        plot=plot,
    )


if __name__ == "__main__":
    sys.exit(main())
