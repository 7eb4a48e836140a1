"""How well a short rung ranks settings: Spearman correlation between the validation accuracy
after a few epochs and the test accuracy after the full pipeline, on 20 or more settings.

Successive halving (``search.rungs``) promotes a setting on its rung-0 result, so that result
must rank settings as their full-fidelity results would. For each setting (zero-cost priors at
several storage targets, and random per-layer keep ratios within the study's ranges) this script
compresses the study's dense model once at full fidelity (the study's pipeline as written) and
once per short schedule (``--short``, ADMM + retraining epochs, e.g. ``1+1``), every run from the
same dense model, and reports, per short schedule, Spearman's rank correlation of its
validation accuracy with the full run's test accuracy, beside the full run's own validation
accuracy (the best a screen on the validation split can do), and the share of the best third
by non-dominated sorting (accuracy, storage) that the short schedule picks. Usage::

    python benchmarks/bench_rank.py                      # Fashion-MNIST, LeNet-5
    python benchmarks/bench_rank.py --dataset digits     # the digits CNN
    python benchmarks/bench_rank.py --smoke --out /tmp/bench

Writes ``OUT/rank-<dataset>.md`` and ``.json`` and prints the markdown.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import common
import torch
from common import Clock, argument_parser, log, read_study, table, write_study
from scipy.stats import spearmanr

from admmsearch.compression import Job, compress_dense
from admmsearch.config import FloatRange, StudyConfig, base_pipeline, study_data, unit_spaces
from admmsearch.data import DataSplits
from admmsearch.dense import DenseModel, build_model, dense_model, packed_meta
from admmsearch.plan import LayerPlan, Plan
from admmsearch.record import Metric
from admmsearch.search.priors import prior_at_storage, storage_range, storage_targets
from admmsearch.search.rungs import nondominated_ranks
from admmsearch.search.seeding import prior_problem
from admmsearch.settings import PipelineSettings

STUDIES = Path(__file__).resolve().parent / "studies"
DATASETS = {"fashion": STUDIES / "front-fashion.yaml", "digits": STUDIES / "front-digits.yaml"}
FULL = {"settings": 24, "short": "1+1,0+2,1+3", "full": "2+16"}
SMOKE = {"settings": 4, "short": "1+1", "full": "1+2"}
SMOKE_STUDY = {"dataset.limit_train": 512, "dense.train.epochs": 2}


@dataclasses.dataclass(frozen=True)
class Options:
    dataset: str
    settings: int
    short: tuple[tuple[int, int], ...]
    full: tuple[int, int]
    seed: int
    threads: int
    out: Path
    smoke: bool


def _schedule(text: str) -> tuple[int, int]:
    admm, retrain = text.split("+")
    return int(admm), int(retrain)


def parse_args(argv: list[str]) -> Options:
    p = argument_parser(__doc__, smoke="about 1 min", threads=True)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="fashion")
    p.add_argument("--settings", type=int, help=f"settings (default {FULL['settings']})")
    p.add_argument("--short", help=f"short schedules, ADMM+retrain (default {FULL['short']})")
    p.add_argument("--full", help=f"the full schedule (default {FULL['full']})")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    d = SMOKE if a.smoke else FULL
    return Options(
        a.dataset,
        a.settings or d["settings"],
        tuple(_schedule(s) for s in (a.short or d["short"]).split(",")),
        _schedule(a.full or d["full"]),
        a.seed,
        a.threads,
        a.out,
        a.smoke,
    )


def _with_schedule(p: PipelineSettings, admm: int, retrain: int) -> PipelineSettings:
    admm_prune = p.admm_prune.replace(train=p.admm_prune.train.replace(epochs=admm))
    return p.replace(admm_prune=admm_prune, retrain=p.retrain.replace(epochs=retrain))


def _plans(config: StudyConfig, layers: list[str], dense: DenseModel, data, n: int) -> list[Plan]:
    """Zero-cost priors at four storage targets, then random keep ratios within each unit's
    range (log-uniform), ``n`` in all."""
    model = build_model(config, data)
    model.load_state_dict(dense.state)
    problem = prior_problem(config, layers, model, None)
    plans = []
    for target in storage_targets(*storage_range(problem), 4):
        for family in ("global", "lamp", "erk", "uniform"):
            keeps = prior_at_storage(family, problem, target).keeps
            plans.append(Plan(layers={u: LayerPlan(keep=k) for u, k in keeps.items()}))
    rng = random.Random(config.seed)
    units = unit_spaces(config, layers)
    while len(plans) < n + n // 3:
        plans.append(Plan(layers={u.name: LayerPlan(keep=_draw(u.keep, rng)) for u in units}))
    rng.shuffle(plans)
    return plans[:n]


def _draw(spec: Any, rng: random.Random) -> float:
    """A keep ratio drawn log-uniformly from a searched range (a fixed keep as it is)."""
    if not isinstance(spec, FloatRange):
        return float(spec)
    return math.exp(rng.uniform(math.log(spec.low), math.log(spec.high)))


def _run(config, layers, data, dense, plan: Plan, pipeline: PipelineSettings) -> dict[str, float]:
    model = build_model(config, data)
    model.load_state_dict(dense.state)
    job = Job(model, data, plan, pipeline, packed_meta(config, data), layers, "cpu", dense)
    m = compress_dense(job).metrics
    return {k: m[k] for k in (Metric.VAL_ACCURACY, Metric.TEST_ACCURACY, Metric.STORAGE_BITS)}


def _best_share(short: list[dict], full: list[dict]) -> float:
    """Of the best third by non-dominated rank at full fidelity (test accuracy, storage), the
    share the short runs' best third (validation accuracy, storage) holds."""
    k = max(1, len(full) // 3)

    def best(rows: list[dict], acc: str) -> set[int]:
        ranks = nondominated_ranks([(-r[acc], r[Metric.STORAGE_BITS]) for r in rows])
        return set(sorted(range(len(rows)), key=lambda i: (ranks[i], -rows[i][acc]))[:k])

    return len(best(short, Metric.VAL_ACCURACY) & best(full, Metric.TEST_ACCURACY)) / k


def run(opts: Options, command: str) -> dict[str, Any]:
    torch.set_num_threads(opts.threads)
    clock = Clock(command, "cpu")
    overrides = {"seed": opts.seed, **(SMOKE_STUDY if opts.smoke else {})}
    with tempfile.TemporaryDirectory() as tmp:
        study = read_study(DATASETS[opts.dataset], overrides)
        config, layers = write_study(study, Path(tmp) / "s.yaml")
        data: DataSplits = study_data(config)
        dense = dense_model(config, data, Path(tmp) / "cache", layers)
        plans = _plans(config, layers, dense, data, opts.settings)
        base = base_pipeline(config)
        full, short = [], {s: [] for s in opts.short}
        for i, plan in enumerate(plans):
            full.append(_run(config, layers, data, dense, plan, _with_schedule(base, *opts.full)))
            for s in opts.short:
                short[s].append(_run(config, layers, data, dense, plan, _with_schedule(base, *s)))
            log(f"setting {i + 1}/{len(plans)}: full test {full[-1][Metric.TEST_ACCURACY]:.4f}")
    test = [r[Metric.TEST_ACCURACY] for r in full]
    rows = [
        {
            "schedule": f"{a}+{r}",
            "epochs": a + r,
            "spearman": float(spearmanr([x[Metric.VAL_ACCURACY] for x in short[(a, r)]], test)[0]),
            "best_third": _best_share(short[(a, r)], full),
        }
        for a, r in opts.short
    ]
    own = float(spearmanr([x[Metric.VAL_ACCURACY] for x in full], test)[0])
    return {
        **clock.finish(),
        "dataset": opts.dataset,
        "settings": len(plans),
        "full": f"{opts.full[0]}+{opts.full[1]}",
        "full_val_spearman": own,
        "rows": rows,
        "plans": [p.to_dict() for p in plans],
        "full_results": full,
        "short_results": {f"{a}+{r}": v for (a, r), v in short.items()},
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"# Rank correlation of short rungs ({report['dataset']})",
        "",
        common.report_header(report),
        "",
        f"{report['settings']} settings; full fidelity {report['full']} (ADMM + retraining "
        f"epochs). Spearman of the full run's own validation accuracy with its test accuracy: "
        f"{report['full_val_spearman']:.2f}.",
        "",
    ]
    body = [
        (r["schedule"], r["epochs"], f"{r['spearman']:.2f}", f"{r['best_third']:.0%}")
        for r in report["rows"]
    ]
    header = ("short schedule", "epochs", "Spearman with full test accuracy", "best third kept")
    return "\n".join([*lines, *table(header, body), ""])


if __name__ == "__main__":
    stem = f"rank-{parse_args(sys.argv[1:]).dataset}"
    sys.exit(
        common.main(
            None, script="bench_rank.py", parse=parse_args, run=run, render=render, stem=stem
        )
    )
