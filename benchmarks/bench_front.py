"""Front quality at equal total training: the study, in an ablation of what issue 21 added,
against six magnitude-pruning sweeps, over several seeds, on Fashion-MNIST or the digits.

For every seed (the study's seed: dense model, data split, sampler and stages) one dense model
is trained and cached; every method below starts from it. The study
(``benchmarks/studies/front-<dataset>.yaml``: pruning only, per-layer keep ratios searched on
validation accuracy and storage with indices, ``budget.epochs`` training epochs) runs in four
variants, the file's ``search.priors`` and ``search.rungs`` switched off by overrides:

* **today's study**: no priors, no rungs (the sensitivity pass seeds its first trials, as
  since issue 12; every trial trains the pipeline as written);
* **+ priors**: zero-cost allocation priors (global magnitude, LAMP, ERK, uniform and the
  sensitivity allocator) as its first trials, placed one at a time on 8 storage targets over
  the search space by the knee search (``placement: knee``);
* **+ successive halving**: every setting screened short (rung 0), the best continued to the
  pipeline as written; only top-rung trials make the study's front, so only they are scored;
* **+ both**: the study as recommended (**the study** of the headline).

The rungs are chosen so that a top-rung trial trains about as long as a baseline point. On
the digits the budget of 74 epochs buys a 4-point sweep 18 epochs a point, the pipeline as
written is 2 ADMM + 16 retraining epochs, and ``{eta: 2, count: 2}`` screens a setting at 1 + 8
epochs and adds 8 retraining epochs to the best half (K settings screened at e0 epochs with n
continued to E cost K e0 + n (E - e0): 5 x 9 + 3 x 8 = 69 of 74). Fashion-MNIST is the same at
half the length (38 epochs, 1 + 8 a trial, 9 a baseline point; see CUTS).

Six baseline sweeps start from the same dense model, each retrained with the study's
retraining stage (optimizer, learning rate, batch size, best-epoch keeping) and each spending
the study's total training: its ``budget.epochs`` plus its sensitivity pass converted to epochs
at the measured epoch time, spread evenly over the sweep's points. **one-shot hand** and
**IMP hand**: magnitude pruning to the ADMM paper's LeNet-5 per-layer shape, scaled by
``--hand-scales``, in one shot or in ``--imp-rounds`` rounds; **one-shot global**, **LAMP**,
**ERK** and **uniform** (the first and last layers kept dense): the allocations of
:mod:`admmsearch.search.priors` at ``--points`` storage targets log-spaced over the storage the
hand sweep spans (its ends included), pruned in one shot.

Every method's points are scored per seed on test accuracy (the headline; the study only sees
validation accuracy) and on validation accuracy: the exact 2-D hypervolume in (log10 storage /
dense, accuracy in points) above dense accuracy - ``--hv-drop``, and the highest compression
within 0.5 and 1 point of the dense accuracy (1x when no point is that close: the dense model
is). The report gives mean +- standard deviation over the seeds, the study's margin over each
baseline paired by seed, its compression within 1 point against the best baseline's, the
ablation and every seed.

What was cut to fit about an hour per dataset on a 2-core CPU (one torch thread, beside other
work): three seeds on Fashion-MNIST (nine on the digits, :data:`SEEDS`); four points a sweep;
one run of each study (no resume in halves, unlike issue 12's benchmark); issue 12's variants
(distinct trials, the ADMM schedule) are gone, being part of today's study; on Fashion-MNIST,
where an epoch of 6,000 images took 5.3 s, half the training images, validation images and
epochs (:data:`CUTS`, also stated in the report).
Usage::

    python benchmarks/bench_front.py --dataset digits      # about 9 min (9 seeds)
    python benchmarks/bench_front.py --dataset fashion     # about an hour (see CUTS)
    python benchmarks/bench_front.py --dataset digits --smoke --out /tmp/bench

Writes ``OUT/front-<dataset>.md``, ``.json`` and ``.png`` and prints the markdown.
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
import numpy as np
import optuna
import torch
from common import (
    Clock,
    argument_parser,
    best_within_drop,
    hypervolume_2d,
    log,
    pareto_indices,
    read_study,
    stores,
    trial_seconds,
    write_study,
)
from front_report import plot, render_markdown

from admmsearch.compression import Job, compress_dense
from admmsearch.config import StudyConfig, base_pipeline
from admmsearch.dense import build_model, packed_meta
from admmsearch.plan import LayerPlan, Plan
from admmsearch.record import Metric, StudyAttr, TrialAttr
from admmsearch.search.context import StudyContext
from admmsearch.search.priors import prior_at_storage
from admmsearch.search.schedule import spent
from admmsearch.search.seeding import prior_problem, study_sensitivity
from admmsearch.search.study import prepare, run_study

STUDIES = Path(__file__).resolve().parent / "studies"
DATASETS = {"fashion": "LeNet-5 / Fashion-MNIST", "digits": "digits CNN / 8x8 digits"}
#: What each dataset's study file gave up to fit about an hour on 2 cores (the report says it).
CUTS = {
    "digits": "",
    "fashion": (
        "Cut to fit about an hour on 2 cores (an epoch of 6,000 training images with 6,000 "
        "validation images took 5.3 s, so 74 epochs would have taken 3.5 hours): 3,000 "
        "training and 3,000 validation images (test: all 10,000), a budget of 38 epochs "
        "rather than 74, so a pipeline of 9 epochs a trial rather than 18."
    ),
}
#: Per-layer keep ratios of Zhang et al. 2018's LeNet-5 (71x on MNIST), scaled by --hand-scales;
#: the digits CNN has layers of the same names.
HAND_SHAPE = {"conv1": 0.2, "conv2": 0.08, "fc1": 0.009, "fc2": 0.07}
DROPS = (0.005, 0.01)
VARIANTS = {
    "today": "today's study (no priors, no rungs)",
    "priors": "+ priors",
    "rungs": "+ successive halving",
    "study": "+ both (the study as recommended)",
}
#: The study's lower-rung trials scored too: not its front, shown for what they would add.
EVERY_RUNG = {"study_every_rung": "+ both, lower-rung trials counted too"}
BASELINES = {
    "hand": "one-shot magnitude, hand shape",
    "imp": "IMP, hand shape",
    "global": "one-shot global magnitude",
    "lamp": "one-shot LAMP",
    "erk": "one-shot ERK",
    "uniform": "one-shot uniform (first and last layers dense)",
}
PRIOR_SWEEPS = ("global", "lamp", "erk", "uniform")
FULL = {"seeds": "0,1,2", "hand_scales": "4,2,1,0.5", "points": 4, "imp_rounds": 3}
#: Each dataset's seeds: nine on the digits, where a seed's hypervolume moves by about 0.5
#: on 360 test images (three could not tell the methods apart) and nine cost 9 minutes.
SEEDS = {"digits": "0,1,2,3,4,5,6,7,8", "fashion": FULL["seeds"]}
SMOKE = {"seeds": "0,1", "hand_scales": "2,0.5", "points": 2, "imp_rounds": 2}
#: A seconds-long version of the study for --smoke (explicit flags still win).
SMOKE_STUDY = {
    "dataset.limit_train": 400,
    "dense.train.epochs": 3,
    "pipeline.admm_prune.train.epochs": 1,
    "pipeline.admm_prune.rho.updates": 4,
    "pipeline.retrain.epochs": 2,
    "budget.epochs": 8,
    "sensitivity.keep_points": 3,
    "sensitivity.samples": 200,
    "sensitivity.budgets": 1,
}
SMOKE_DATA = {"fashion": {"dataset.name": "common:fashion_mnist_small"}, "digits": {}}


@dataclasses.dataclass(frozen=True)
class Options:
    dataset: str
    study: Path
    seeds: tuple[int, ...]
    epochs: int | None
    limit_train: int | None
    variants: tuple[str, ...]
    hand_scales: tuple[float, ...]
    points: int
    imp_rounds: int
    hv_drop: float
    threads: int
    out: Path
    smoke: bool


def parse_args(argv: list[str]) -> Options:
    """Command line -> Options; ``--smoke`` changes the defaults, explicit flags still win."""
    p = argument_parser(__doc__, smoke="about 1 min on digits", threads=True)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="fashion")
    p.add_argument("--study", type=Path, help="study file (default: studies/front-<dataset>)")
    p.add_argument("--seeds", help="study seeds (default: 0-8 on the digits, 0,1,2 else)")
    p.add_argument("--epochs", type=int, help="the study's budget.epochs (default: the file's)")
    p.add_argument("--limit-train", type=int, help="training images (default: the study's)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="study variants (all)")
    p.add_argument("--hand-scales", help=f"scales of the hand shape ({FULL['hand_scales']})")
    p.add_argument("--points", type=int, help=f"points a prior sweep ({FULL['points']})")
    p.add_argument("--imp-rounds", type=int, help=f"IMP rounds (default {FULL['imp_rounds']})")
    p.add_argument("--hv-drop", type=float, default=0.02, help="HV reference: dense - this")
    a = p.parse_args(argv)
    sizes = common.sized(a, SMOKE, {**FULL, "seeds": SEEDS[a.dataset]})
    if sizes["imp_rounds"] < 2:
        p.error("--imp-rounds: at least 2 (one round is one-shot pruning)")
    variants = tuple(v for v in a.variants.split(",") if v)
    if "study" not in variants or any(v not in VARIANTS for v in variants):
        p.error(f"--variants: from {', '.join(VARIANTS)}, including study; got {a.variants!r}")
    return Options(
        dataset=a.dataset,
        study=a.study or STUDIES / f"front-{a.dataset}.yaml",
        seeds=tuple(int(s) for s in sizes["seeds"].split(",") if s),
        epochs=a.epochs,
        limit_train=a.limit_train,
        variants=variants,
        hand_scales=tuple(float(x) for x in sizes["hand_scales"].split(",") if x),
        points=sizes["points"],
        imp_rounds=sizes["imp_rounds"],
        hv_drop=a.hv_drop,
        threads=a.threads,
        out=a.out,
        smoke=a.smoke,
    )


def study_overrides(opts: Options, seed: int, variant: str) -> dict[str, Any]:
    """The study file's changes for one seed and variant (see the module docstring)."""
    changes: dict[str, Any] = {}
    if opts.smoke:
        changes.update({**SMOKE_STUDY, **SMOKE_DATA[opts.dataset]})
    changes.update({"name": f"front-{variant}-seed{seed}", "seed": seed})
    if opts.epochs is not None:
        changes["budget.epochs"] = opts.epochs
    if opts.limit_train is not None:
        changes["dataset.limit_train"] = opts.limit_train
    if variant in ("today", "rungs"):
        changes["search.priors"] = None
    if variant in ("today", "priors"):
        changes["search.rungs"] = None
    return changes


# ------------------------------------------------------------------------------- the studies


def top_rung(config: StudyConfig) -> int | None:
    r = config.search.rungs
    return None if r is None else r.count - 1


def run_variant(
    opts: Options, seed: int, variant: str, tmp: Path, cache: Path
) -> tuple[StudyContext, dict[str, Any]]:
    """One study variant to its epoch budget; its top-rung points and figures."""
    data = read_study(opts.study, study_overrides(opts, seed, variant))
    folder = tmp / f"{variant}-{seed}"
    config, layers = write_study(data, folder / "study.yaml")
    start = time.perf_counter()
    ctx = prepare(config, layers, **stores(folder), workdir=folder / "work", cache_dir=cache)
    prepare_seconds = time.perf_counter() - start
    run_study(ctx, on_epoch=_progress(ctx, variant, seed))
    trials = ctx.study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    top = [t for t in done if t.user_attrs.get(TrialAttr.RUNG) == top_rung(config)]
    # Charged only where the study ran the pass (read from the seed's cache: its measured
    # time); a study whose priors never reach the sensitivity family and seed nothing skips it.
    ran = StudyAttr.SENSITIVITY in ctx.study.user_attrs
    sensitivity = study_sensitivity(ctx) if ran else None
    figures = {
        "trials": len(done),
        "top_rung_trials": len(top),
        "origins": origins(done),
        "epochs": spent(trials).epochs,
        "wall_seconds": time.perf_counter() - start,
        "prepare_seconds": prepare_seconds,
        "trial_seconds": _mean([trial_seconds(t) for t in done]),
        "epoch_seconds": epoch_seconds(done),
        "sensitivity_seconds": None if sensitivity is None else sensitivity.seconds,
    }
    numbers = {t.number for t in top}
    lower = [trial_point(t, ctx) for t in done if t.number not in numbers]
    return ctx, {
        "figures": figures,
        "epochs": figures["epochs"],
        "points": [trial_point(t, ctx) for t in top],
        "lower_rung_points": lower,
    }


def _progress(ctx: StudyContext, variant: str, seed: int):
    def on_epoch(stage: str, epoch: int, loss: float) -> None:
        trial = len(ctx.study.get_trials(deepcopy=False)) - 1
        log(f"seed {seed} {variant} trial {trial}: {stage} epoch {epoch + 1} loss {loss:.3f}")

    return on_epoch


def origin(t: optuna.trial.FrozenTrial) -> str:
    """Where a trial's setting came from: a promotion, a prior, the sensitivity pass or the
    sampler."""
    if t.user_attrs.get(TrialAttr.CONTINUES) is not None:
        return "promoted"
    if TrialAttr.PRIOR in t.user_attrs:
        return "prior"
    return "seeded" if TrialAttr.SEEDED in t.user_attrs else "sampled"


def origins(trials: Sequence[optuna.trial.FrozenTrial]) -> dict[str, int]:
    out = dict.fromkeys(("prior", "seeded", "sampled", "promoted"), 0)
    for t in trials:
        out[origin(t)] += 1
    return out


def epoch_seconds(trials: Sequence[optuna.trial.FrozenTrial]) -> float:
    """Mean time of one training epoch in the trials' stages (their per-epoch evaluation
    included): ADMM, retraining and the retraining promotions add, over their epochs."""
    seconds = epochs = 0.0
    for t in trials:
        m = t.user_attrs[TrialAttr.METRICS]
        stages = [k for k in m if k.startswith(f"{Metric.SECONDS}.")]
        training = [k for k in stages if k.split(".", 1)[1].startswith(("admm_prune", "retrain"))]
        seconds += sum(m[k] for k in training)
        epochs += int(t.user_attrs.get(TrialAttr.EPOCHS) or 0)
    return seconds / epochs if epochs else math.nan


def _mean(values: Sequence[float]) -> float:
    return statistics.mean(values) if values else math.nan


def trial_point(t: optuna.trial.FrozenTrial, ctx: StudyContext) -> dict[str, Any]:
    m = t.user_attrs[TrialAttr.METRICS]
    return _point(
        f"trial {t.number}",
        {n: 1.0 - m[f"sparsity.{n}"] for n in ctx.layers},
        m,
        ctx.dense.storage_bits,
        trial_seconds(t),
        trial=t.number,
        rung=t.user_attrs.get(TrialAttr.RUNG),
        origin=origin(t),
    )


def _point(
    label: str,
    keep: Mapping[str, float],
    metrics: Mapping[str, float],
    dense_bits: int,
    seconds: float,
    **extra: Any,
) -> dict[str, Any]:
    bits = int(metrics[Metric.STORAGE_BITS])
    return {
        "label": label,
        "keep": dict(keep),
        "test_accuracy": metrics[Metric.TEST_ACCURACY],
        "val_accuracy": metrics[Metric.VAL_ACCURACY],
        "storage_bits": bits,
        "ratio": dense_bits / bits,
        "seconds": seconds,
        **extra,
    }


# ----------------------------------------------------------------------------- the baselines


def magnitude(
    ctx: StudyContext, label: str, keep: Mapping[str, float], epochs: int, rounds: int
) -> dict[str, Any]:
    """Magnitude pruning from the dense model to ``keep``: one-shot (``rounds`` 1) or IMP,
    ``epochs`` retraining epochs in all with the study's retraining stage."""
    base = base_pipeline(ctx.config)
    retrain = base.retrain.replace(epochs=epochs // rounds)
    pipeline = base.replace(admm_prune=None, retrain=retrain, progressive_steps=rounds)
    model = build_model(ctx.config, ctx.data)
    model.load_state_dict(ctx.dense.state)
    plan = Plan(layers={n: LayerPlan(keep=min(1.0, k)) for n, k in keep.items()})
    meta = packed_meta(ctx.config, ctx.data)
    job = Job(model, ctx.data, plan, pipeline, meta, ctx.layers, ctx.config.device, ctx.dense)
    start = time.perf_counter()
    m = compress_dense(job).metrics
    log(f"seed {ctx.config.seed} {label}: test {m[Metric.TEST_ACCURACY]:.4f}")
    kept = {n: 1.0 - m[f"sparsity.{n}"] for n in ctx.layers}
    seconds = time.perf_counter() - start
    return _point(label, kept, m, ctx.dense.storage_bits, seconds, target=dict(keep))


def _sweep(per_point: int, points: list[dict[str, Any]]) -> dict[str, Any]:
    return {"epochs_per_point": per_point, "epochs": per_point * len(points), "points": points}


def hand_sweeps(ctx: StudyContext, opts: Options, total: int) -> dict[str, dict[str, Any]]:
    """One-shot and IMP magnitude pruning at the scaled hand shape."""
    hand = [(s, {n: min(1.0, k * s) for n, k in HAND_SHAPE.items()}) for s in opts.hand_scales]
    per_point = max(1, total // len(hand))
    imp = max(opts.imp_rounds, per_point - per_point % opts.imp_rounds)
    return {
        "hand": _sweep(
            per_point, [magnitude(ctx, f"hand x{s:g}", k, per_point, 1) for s, k in hand]
        ),
        "imp": _sweep(
            imp, [magnitude(ctx, f"IMP hand x{s:g}", k, imp, opts.imp_rounds) for s, k in hand]
        ),
    }


def prior_sweeps(
    ctx: StudyContext, opts: Options, total: int, bits: Sequence[int]
) -> dict[str, dict[str, Any]]:
    """One-shot pruning to each prior family's allocation at ``opts.points`` storage targets
    log-spaced over ``[min(bits), max(bits)]`` (the hand sweep's storage)."""
    model = build_model(ctx.config, ctx.data)
    model.load_state_dict(ctx.dense.state)
    problem = prior_problem(ctx.config, ctx.layers, model, None)
    targets = [round(float(b)) for b in np.geomspace(min(bits), max(bits), opts.points)]
    per_point = max(1, total // len(targets))
    out = {}
    for family in PRIOR_SWEEPS:
        points = []
        for target in targets:
            keep = prior_at_storage(family, problem, target).keeps
            point = magnitude(ctx, f"{family} {target / 8192:.1f} KiB", keep, per_point, 1)
            points.append({**point, "target_bits": target})
        out[family] = _sweep(per_point, points)
    return out


def baselines(ctx: StudyContext, opts: Options, total: int) -> dict[str, dict[str, Any]]:
    """The six sweeps, each spending at most ``total`` epochs spread over its points."""
    sweeps = hand_sweeps(ctx, opts, total)
    bits = [p["storage_bits"] for p in sweeps["hand"]["points"]]
    return {**sweeps, **prior_sweeps(ctx, opts, total, bits)}


# ------------------------------------------------------------------------------- the figures


def summarise(
    points: Sequence[Mapping[str, Any]], dense: Mapping[str, float], accuracy: str, hv_drop: float
) -> dict[str, Any]:
    """Front, hypervolume and best compression within each drop, on ``accuracy``."""
    base = dense[accuracy]
    xy = [
        (math.log10(p["storage_bits"] / dense["storage_bits"]), 100 * p[accuracy]) for p in points
    ]
    ref = (0.0, 100 * (base - hv_drop))
    front = pareto_indices([(p["storage_bits"], p[accuracy]) for p in points])
    at_drop = {}
    for drop in DROPS:
        best = best_within_drop(points, accuracy, base, drop)
        keys = ("label", "ratio", accuracy, "keep")
        at_drop[str(drop)] = None if best is None else {k: best[k] for k in keys}
    return {
        "reference": {"log10_storage_ratio": ref[0], "accuracy_points": ref[1]},
        "hypervolume": hypervolume_2d(xy, ref),
        "front": [points[i]["label"] for i in front],
        "at_drop": at_drop,
    }


def dense_figures(ctx: StudyContext, seconds: float) -> dict[str, Any]:
    return {
        "test_accuracy": ctx.dense.test_accuracy,
        "val_accuracy": ctx.dense.val_accuracy,
        "storage_bits": ctx.dense.storage_bits,
        "epochs": ctx.config.dense.train.epochs,
        "prepare_seconds": seconds,
    }


def sensitivity_epochs(methods: Mapping[str, Mapping[str, Any]]) -> int:
    """The sensitivity pass in epochs at the measured epoch time (of the no-rung trials where
    they ran: every one trains the pipeline as written)."""
    figures = methods["today"]["figures"] if "today" in methods else methods["study"]["figures"]
    seconds = methods["study"]["figures"]["sensitivity_seconds"]
    per_epoch = (seconds or 0.0) / figures["epoch_seconds"]
    return math.ceil(per_epoch) if math.isfinite(per_epoch) else 0


def run_seed(opts: Options, seed: int, tmp: Path) -> dict[str, Any]:
    """Every variant and baseline for one seed, with their summaries."""
    cache = tmp / f"cache-{seed}"  # one dense model and one sensitivity pass per seed
    methods: dict[str, dict[str, Any]] = {}
    contexts = {}
    for variant in opts.variants:
        log(f"seed {seed}: study variant {variant}")
        contexts[variant], methods[variant] = run_variant(opts, seed, variant, tmp, cache)
    ctx = contexts["study"]
    study = methods["study"]
    methods["study_every_rung"] = {
        "epochs": study["epochs"],
        "points": study["points"] + study["lower_rung_points"],
    }
    charged = sensitivity_epochs(methods)
    total = ctx.config.budget.epochs + charged
    methods.update(baselines(ctx, opts, total))
    dense = dense_figures(ctx, methods[opts.variants[0]]["figures"]["prepare_seconds"])
    for m in methods.values():
        m["summary"] = {
            acc: summarise(m["points"], dense, f"{acc}_accuracy", opts.hv_drop)
            for acc in ("test", "val")
        }
    data = {k: len(getattr(ctx.data, f"y_{k}")) for k in ("train", "val", "test")}
    return {
        "seed": seed,
        "dense": dense,
        "data": data,
        "study_config": ctx.config.resolved_dict(),
        "sensitivity_epochs": charged,
        "total_epochs": total,
        "methods": methods,
    }


def aggregate(seeds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over the seeds of every method's figures."""
    out: dict[str, Any] = {}
    for name in seeds[0]["methods"]:
        runs = [s["methods"][name] for s in seeds]
        figures: dict[str, Any] = {}
        for acc in ("test", "val"):
            summaries = [r["summary"][acc] for r in runs]
            figures[f"{acc}_hypervolume"] = _spread([s["hypervolume"] for s in summaries])
            for drop in DROPS:
                best = [s["at_drop"][str(drop)] for s in summaries]
                figures[f"{acc}_ratio_{drop}"] = _spread([b["ratio"] if b else 1.0 for b in best])
        figures["points"] = _spread([len(r["points"]) for r in runs])
        figures["epochs"] = _spread([r["epochs"] for r in runs])
        out[name] = figures
    return out


def _spread(values: Sequence[float]) -> dict[str, Any]:
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": std, "values": values}


def paired_margins(seeds: Sequence[Mapping[str, Any]], acc: str = "test") -> dict[str, Any]:
    """Per baseline: the study's hypervolume minus the baseline's, paired by seed."""
    out = {}
    for name in BASELINES:
        diffs = [
            s["methods"]["study"]["summary"][acc]["hypervolume"]
            - s["methods"][name]["summary"][acc]["hypervolume"]
            for s in seeds
        ]
        spread = _spread(diffs)
        out[name] = {**spread, "above_by_one_std": spread["mean"] - spread["std"] > 0}
    return out


def compression_against_best(agg: Mapping[str, Any], drop: float = 0.01) -> dict[str, Any]:
    """The study's compression within ``drop`` of test accuracy beside the baseline with the
    highest mean compression there."""
    key = f"test_ratio_{drop}"
    best = max(BASELINES, key=lambda n: agg[n][key]["mean"])
    study, other = agg["study"][key], agg[best][key]
    ratios = [a / b for a, b in zip(study["values"], other["values"], strict=True)]
    return {
        "drop": drop,
        "study": study,
        "best_baseline": best,
        "baseline": other,
        "ratio": _spread(ratios),
    }


def _cut(opts: Options) -> str:
    """What the study file gave up (CUTS), where the run uses the file as it is."""
    as_is = opts.epochs is None and opts.limit_train is None and not opts.smoke
    return (
        CUTS[opts.dataset]
        if as_is and opts.study == STUDIES / f"front-{opts.dataset}.yaml"
        else ""
    )


def run_benchmark(opts: Options, command: str) -> dict[str, Any]:
    torch.set_num_threads(opts.threads)
    clock = Clock(command, "cpu")
    with tempfile.TemporaryDirectory(prefix="bench-front-") as tmp:
        seeds = [run_seed(opts, seed, Path(tmp)) for seed in opts.seeds]
    clock.record["machine"]["device"] = seeds[0]["study_config"]["device"]
    report = clock.finish()
    agg = aggregate(seeds)
    report.update(
        {
            "dataset": opts.dataset,
            "dataset_title": DATASETS[opts.dataset],
            "cut": _cut(opts),
            "options": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(opts).items()
            },
            "titles": {**VARIANTS, **EVERY_RUNG, **BASELINES},
            "variants": list(opts.variants),
            "baselines": list(BASELINES),
            "drops": list(DROPS),
            "seeds": seeds,
            "aggregate": agg,
            "margins": paired_margins(seeds),
            "compression": compression_against_best(agg),
        }
    )
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return common.main(
        argv,
        script="bench_front.py",
        parse=parse_args,
        run=run_benchmark,
        render=render_markdown,
        plot=plot,
        stem=f"front-{parse_args(argv).dataset}",
    )


if __name__ == "__main__":
    sys.exit(main())
