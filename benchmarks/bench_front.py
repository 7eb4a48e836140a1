"""Front quality on LeNet-5 / Fashion-MNIST at equal total training: the study against
magnitude-pruning sweeps, over several seeds, with an ablation of what the study adds.

For every seed (the study's seed: dense model, data split, sampler and stages) a real admmsearch
study (``benchmarks/studies/front-fashion.yaml``: pruning only, per-layer keep ratios searched
on validation accuracy and storage with indices) runs from the seed's cached dense model in four
variants, each with the same trial budget and each run the way a user who resumes runs it: half
the trials, then a second ``run`` (a fresh process's context) to the full budget:

* **plain**: the study as it was before issue 12: every process seeds its sampler with the
  study seed (so the resumed half replays the first half's draws), no sensitivity pass, Z and
  U updated once per epoch (rho x1.8 per update from 5e-3), retraining keeps its last epoch;
* **+ distinct trials**: each trial's sampler seeded from (seed, trial number);
* **+ seeding**: the sensitivity pass, and its budgeted allocations as the first trials;
* **+ ADMM schedule**: rho from 5e-3 to 1 over 12 Z/U updates spread over the stage, and
  retraining that keeps its best validation epoch: admmsearch as shipped (**the study**).

Three baselines start from the same dense model and spend, per sweep, the same total training
epochs as the study: its trials' epochs plus its sensitivity pass converted to epochs at the
measured epoch time, spread evenly over the sweep's points (so each point trains longer than a
trial): **one-shot uniform** keep, **one-shot hand-chosen** per-layer keep (the ADMM paper's
LeNet-5 shape, scaled), **iterative magnitude pruning** to the hand-chosen targets in rounds.

Every method's points are scored per seed on test accuracy (the headline; the study only sees
validation accuracy) and on validation accuracy: the exact 2-D hypervolume in (log10 storage /
dense, accuracy in points) above dense accuracy - ``--hv-drop``, and the highest compression
within 0.5 and 1 point of the dense accuracy (1x when no point is that close: the dense model
is). The report gives mean +- standard deviation over the seeds. Usage::

    python benchmarks/bench_front.py                        # the full run (see README)
    python benchmarks/bench_front.py --smoke --out /tmp/bench

Writes ``OUT/front.md``, ``OUT/front.json`` and ``OUT/front.png`` and prints the markdown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import common
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

from admmsearch.config import StudyConfig
from admmsearch.dense import build_model
from admmsearch.pipeline import PipelineHooks, PipelineSettings, run_pipeline
from admmsearch.plan import LayerPlan, Plan
from admmsearch.record import Metric, TrialAttr, per_stage
from admmsearch.search import study as study_module
from admmsearch.search.context import StudyContext
from admmsearch.search.seeding import study_sensitivity
from admmsearch.search.study import prepare, run_study

STUDY = Path(__file__).resolve().parent / "studies" / "front-fashion.yaml"
#: Per-layer keep ratios of Zhang et al. 2018's LeNet-5 (71x on MNIST), scaled by --hand-scales.
HAND_SHAPE = {"conv1": 0.2, "conv2": 0.08, "fc1": 0.009, "fc2": 0.07}
DROPS = (0.005, 0.01)
VARIANTS = {
    "plain": "plain study (before issue 12)",
    "distinct": "+ distinct trials",
    "seeding": "+ sensitivity seeding",
    "study": "+ ADMM schedule, best-epoch retraining (the study)",
}
BASELINES = {
    "one_shot_uniform": "one-shot magnitude, uniform keep",
    "one_shot_hand": "one-shot magnitude, hand-chosen per-layer keep",
    "imp": "iterative magnitude pruning, hand-chosen targets",
}
OLD_RHO_GROWTH = 1.8  # the old study file's rho multiplier per Z/U update
FULL = {
    "seeds": "0,1,2",
    "uniform": "0.25,0.1,0.04,0.015",
    "hand_scales": "4,2,1,0.5",
    "imp_rounds": 3,
}
SMOKE = {"seeds": "0,1", "uniform": "0.2,0.05", "hand_scales": "2,0.5", "imp_rounds": 2}
#: A few-second version of the study for --smoke (explicit flags still win).
SMOKE_STUDY = {
    "dataset.name": "common:fashion_mnist_small",
    "dataset.limit_train": 512,
    "dense.train.epochs": 3,
    "pipeline.admm_prune.train.epochs": 1,
    "pipeline.admm_prune.rho.updates": 4,
    "pipeline.retrain.epochs": 1,
    "budget.trials": 2,
    "sampler.population_size": 2,
    "sensitivity.keep_points": 3,
    "sensitivity.samples": 300,
    "sensitivity.budgets": 1,
}


@dataclasses.dataclass(frozen=True)
class Options:
    study: Path
    seeds: tuple[int, ...]
    trials: int | None
    limit_train: int | None
    variants: tuple[str, ...]
    uniform: tuple[float, ...]
    hand_scales: tuple[float, ...]
    imp_rounds: int
    hv_drop: float
    threads: int
    out: Path
    smoke: bool


def parse_args(argv: list[str]) -> Options:
    """Command line -> Options; ``--smoke`` changes the defaults, explicit flags still win."""
    p = argument_parser(__doc__, smoke="about 2 min", threads=True)
    p.add_argument("--study", type=Path, default=STUDY, help="study file (default: %(default)s)")
    p.add_argument("--seeds", help=f"study seeds (default {FULL['seeds']})")
    p.add_argument("--trials", type=int, help="trials per study (default: the study's budget)")
    p.add_argument("--limit-train", type=int, help="training images (default: the study's)")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"study variants to run, from {', '.join(VARIANTS)} (default: all)",
    )
    p.add_argument("--uniform", help=f"uniform keep ratios (default {FULL['uniform']})")
    p.add_argument("--hand-scales", help=f"scales of the hand shape ({FULL['hand_scales']})")
    p.add_argument("--imp-rounds", type=int, help=f"IMP rounds (default {FULL['imp_rounds']})")
    p.add_argument(
        "--hv-drop",
        type=float,
        default=0.02,
        help="hypervolume reference: dense accuracy minus this (default 0.02)",
    )
    a = p.parse_args(argv)
    sizes = SMOKE if a.smoke else FULL
    imp_rounds = a.imp_rounds or sizes["imp_rounds"]
    if imp_rounds < 2:
        p.error("--imp-rounds: at least 2 (one round is one-shot pruning)")
    variants = tuple(v for v in a.variants.split(",") if v)
    if "study" not in variants or any(v not in VARIANTS for v in variants):
        p.error(f"--variants: from {', '.join(VARIANTS)}, including study; got {a.variants!r}")
    return Options(
        study=a.study,
        seeds=tuple(int(s) for s in (a.seeds or sizes["seeds"]).split(",") if s),
        trials=a.trials,
        limit_train=a.limit_train,
        variants=variants,
        uniform=_floats(a.uniform or sizes["uniform"]),
        hand_scales=_floats(a.hand_scales or sizes["hand_scales"]),
        imp_rounds=imp_rounds,
        hv_drop=a.hv_drop,
        threads=a.threads,
        out=a.out,
        smoke=a.smoke,
    )


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x)


def study_overrides(opts: Options, seed: int, variant: str, base: StudyConfig) -> dict:
    """The study file's changes for one seed and variant (see the module docstring)."""
    changes: dict[str, Any] = dict(SMOKE_STUDY) if opts.smoke else {}
    changes.update({"name": f"front-{variant}-seed{seed}", "seed": seed})
    if opts.trials is not None:
        changes["budget.trials"] = opts.trials
    if opts.limit_train is not None:
        changes["dataset.limit_train"] = opts.limit_train
    if variant in ("plain", "distinct"):
        changes["search.seed_from_sensitivity"] = False
    if variant != "study":
        epochs = changes.get("pipeline.admm_prune.train.epochs")
        epochs = epochs or base.pipeline.admm_prune.train.epochs
        start = base.pipeline.admm_prune.rho.start
        changes["pipeline.admm_prune.rho"] = {
            "start": start,
            "end": start * OLD_RHO_GROWTH ** max(epochs - 1, 0),
            "updates": epochs,  # one Z/U update per epoch, at its end
        }
        changes["pipeline.retrain.keep_best"] = False
    return changes


# ------------------------------------------------------------------------------- the studies


@contextlib.contextmanager
def process_seeded_sampler(enabled: bool) -> Iterator[None]:
    """With ``enabled``, studies opened inside get the sampler of before issue 12: one seeded
    with the study seed in every process, whatever the trial."""
    if not enabled:
        yield
        return
    original = study_module.PerTrialSampler
    study_module.PerTrialSampler = lambda factory, seed: factory(seed)  # type: ignore[assignment]
    try:
        yield
    finally:
        study_module.PerTrialSampler = original


def run_variant(
    opts: Options, seed: int, variant: str, tmp: Path, cache: Path
) -> tuple[StudyContext, dict[str, Any]]:
    """One study variant, run in two halves (a resume); its points and figures."""
    base = StudyConfig.model_validate(read_study(opts.study))
    data = read_study(opts.study, study_overrides(opts, seed, variant, base))
    folder = tmp / f"{variant}-{seed}"
    config, layers = write_study(data, folder / "study.yaml")
    trials = config.budget.trials
    start = time.perf_counter()
    prepare_seconds = None
    with process_seeded_sampler(variant == "plain"):
        for part in (trials // 2, trials):  # the second `run` resumes the first
            ctx = prepare(
                config, layers, **stores(folder), workdir=folder / "work", cache_dir=cache
            )
            prepare_seconds = prepare_seconds or time.perf_counter() - start
            run_study(ctx, trials=part, on_epoch=_progress(ctx, variant, seed))
    wall = time.perf_counter() - start
    done = ctx.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    sensitivity = study_sensitivity(ctx) if config.search.seed_from_sensitivity else None
    figures = {
        "trials": len(done),
        "duplicates": duplicates(done),
        "seeded": sum(TrialAttr.SEEDED in t.user_attrs for t in done),
        "epochs": len(done) * epochs_per_trial(config),
        "wall_seconds": wall,
        "prepare_seconds": prepare_seconds,
        "trial_seconds": _mean([trial_seconds(t) for t in done]),
        "epoch_seconds": epoch_seconds(done, config),
        "sensitivity_seconds": None if sensitivity is None else sensitivity.seconds,
    }
    points = [trial_point(t, ctx) for t in done]
    return ctx, {"figures": figures, "points": points}


def _progress(ctx: StudyContext, variant: str, seed: int):
    def on_epoch(stage: str, epoch: int, loss: float) -> None:
        trial = len(ctx.study.get_trials(deepcopy=False)) - 1
        log(f"seed {seed} {variant} trial {trial}: {stage} epoch {epoch + 1} loss {loss:.3f}")

    return on_epoch


def duplicates(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """Trials whose params repeat an earlier trial's: budget spent on nothing new."""
    seen, repeats = set(), 0
    for t in sorted(trials, key=lambda t: t.number):
        params = t.params.items()
        key = tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in params))
        repeats += key in seen
        seen.add(key)
    return repeats


def epochs_per_trial(config: StudyConfig) -> int:
    """Training epochs a study trial spends after the dense model: ADMM plus retraining."""
    p = config.pipeline
    admm = p.admm_prune.train.epochs if p.admm_prune else 0
    return admm + (p.retrain.epochs if p.retrain else 0)


def epoch_seconds(trials: Sequence[optuna.trial.FrozenTrial], config: StudyConfig) -> float:
    """Mean training time of one epoch in the trials' stages (evaluation excluded)."""
    seconds = [
        t.user_attrs[TrialAttr.METRICS].get(per_stage(Metric.SECONDS, "admm_prune"), 0.0)
        + t.user_attrs[TrialAttr.METRICS].get(per_stage(Metric.SECONDS, "retrain"), 0.0)
        for t in trials
    ]
    return _mean(seconds) / max(epochs_per_trial(config), 1)


def _mean(values: Sequence[float]) -> float:
    return statistics.mean(values) if values else math.nan


def trial_point(t: optuna.trial.FrozenTrial, ctx: StudyContext) -> dict[str, Any]:
    m = t.user_attrs[TrialAttr.METRICS]
    keep = {n: 1.0 - m[f"sparsity.{n}"] for n in ctx.layers}
    origin = "seeded" if TrialAttr.SEEDED in t.user_attrs else "sampled"
    return _point(
        f"trial {t.number}",
        keep,
        m["test_accuracy"],
        m[Metric.VAL_ACCURACY],
        int(m[Metric.STORAGE_BITS]),
        ctx,
        trial_seconds(t),
        trial=t.number,
        origin=origin,
    )


def _point(
    label: str,
    keep: Mapping[str, float],
    test: float,
    val: float,
    bits: int,
    ctx: StudyContext,
    seconds: float,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "label": label,
        "keep": dict(keep),
        "test_accuracy": test,
        "val_accuracy": val,
        "storage_bits": bits,
        "ratio": ctx.dense.storage_bits / bits,
        "seconds": seconds,
        **extra,
    }


# ----------------------------------------------------------------------------- the baselines


def magnitude(
    ctx: StudyContext, label: str, keep: Mapping[str, float], epochs: int, rounds: int
) -> dict[str, Any]:
    """Magnitude pruning from the dense model to ``keep``: one-shot (``rounds`` 1) or IMP,
    ``epochs`` retraining epochs in all, keeping each round's best epoch."""
    retrain = ctx.config.pipeline.retrain.replace(epochs=epochs // rounds)
    settings = PipelineSettings(
        pretrain=None,
        admm_prune=None,
        retrain=retrain,
        admm_quantize=None,
        quant_retrain=None,
        progressive_steps=rounds,
        seed=ctx.config.seed,
        index_format=ctx.config.pipeline.index_format,
    )
    model = build_model(ctx.config, ctx.data)
    model.load_state_dict(ctx.dense.state)
    plan = Plan(layers={n: LayerPlan(keep=min(1.0, k)) for n, k in keep.items()})
    start = time.perf_counter()
    result = run_pipeline(
        model,
        ctx.data,
        plan,
        settings,
        layer_patterns=list(ctx.layers),
        device=ctx.config.device,
        hooks=PipelineHooks(on_stage=lambda s: log(f"{label}: {s.name}")),
    )
    kept = {s.name: s.nonzeros / s.numel for s in result.storage.layers}
    return _point(
        label,
        kept,
        result.final.test_accuracy,
        result.final.val_accuracy,
        result.storage.model_stored_bits,
        ctx,
        time.perf_counter() - start,
        target=dict(plan.to_dict()),
    )


def baselines(ctx: StudyContext, opts: Options, total_epochs: int) -> dict[str, dict[str, Any]]:
    """The three sweeps, each spending ``total_epochs`` spread over its points."""
    hand = [(s, {n: min(1.0, k * s) for n, k in HAND_SHAPE.items()}) for s in opts.hand_scales]
    uniform_epochs = max(1, total_epochs // len(opts.uniform))
    hand_epochs = max(1, total_epochs // len(hand))
    imp_epochs = max(opts.imp_rounds, hand_epochs - hand_epochs % opts.imp_rounds)
    sweeps = {
        "one_shot_uniform": (
            uniform_epochs,
            [
                magnitude(ctx, f"uniform {k:g}", dict.fromkeys(ctx.layers, k), uniform_epochs, 1)
                for k in opts.uniform
            ],
        ),
        "one_shot_hand": (
            hand_epochs,
            [magnitude(ctx, f"hand x{s:g}", keep, hand_epochs, 1) for s, keep in hand],
        ),
        "imp": (
            imp_epochs,
            [
                magnitude(ctx, f"IMP hand x{s:g}", keep, imp_epochs, opts.imp_rounds)
                for s, keep in hand
            ],
        ),
    }
    return {
        name: {"epochs_per_point": e, "epochs": e * len(points), "points": points}
        for name, (e, points) in sweeps.items()
    }


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
        at_drop[str(drop)] = (
            None
            if best is None
            else {
                "label": best["label"],
                "ratio": best["ratio"],
                "accuracy": best[accuracy],
                "keep": best["keep"],
            }
        )
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


def run_seed(opts: Options, seed: int, tmp: Path) -> dict[str, Any]:
    """Every variant and baseline for one seed, with their summaries."""
    cache = tmp / f"cache-{seed}"  # one dense model and one sensitivity pass per seed
    methods: dict[str, dict[str, Any]] = {}
    contexts = {}
    for variant in opts.variants:
        log(f"seed {seed}: study variant {variant}")
        contexts[variant], methods[variant] = run_variant(opts, seed, variant, tmp, cache)
    ctx = contexts["study"]
    study = methods["study"]["figures"]
    per_epoch = study["sensitivity_seconds"] / study["epoch_seconds"]
    sensitivity_epochs = math.ceil(per_epoch) if math.isfinite(per_epoch) else 0
    total = study["epochs"] + sensitivity_epochs
    for name, sweep in baselines(ctx, opts, total).items():
        methods[name] = sweep
    dense = dense_figures(ctx, methods[opts.variants[0]]["figures"]["prepare_seconds"])
    for m in methods.values():
        m["summary"] = {
            acc: summarise(m["points"], dense, f"{acc}_accuracy", opts.hv_drop)
            for acc in ("test", "val")
        }
    return {
        "seed": seed,
        "dense": dense,
        "data": {
            "train": len(ctx.data.y_train),
            "val": len(ctx.data.y_val),
            "test": len(ctx.data.y_test),
        },
        "study_config": ctx.config.resolved_dict(),
        "sensitivity_epochs": sensitivity_epochs,
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
            figures[f"{acc}_hypervolume"] = _spread(
                [r["summary"][acc]["hypervolume"] for r in runs]
            )
            for drop in DROPS:
                ratios = [
                    (r["summary"][acc]["at_drop"][str(drop)] or {"ratio": 1.0})["ratio"]
                    for r in runs
                ]
                figures[f"{acc}_ratio_{drop}"] = _spread(ratios)
        figures["points"] = _spread([len(r["points"]) for r in runs])
        figures["epochs"] = _spread(
            [r.get("epochs", r.get("figures", {}).get("epochs", 0)) for r in runs]
        )
        out[name] = figures
    return out


def _spread(values: Sequence[float]) -> dict[str, float]:
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


def run_benchmark(opts: Options, command: str) -> dict[str, Any]:
    torch.set_num_threads(opts.threads)
    clock = Clock(command, "cpu")
    with tempfile.TemporaryDirectory(prefix="bench-front-") as tmp:
        seeds = [run_seed(opts, seed, Path(tmp)) for seed in opts.seeds]
    clock.record["machine"]["device"] = seeds[0]["study_config"]["device"]
    report = clock.finish()
    report.update(
        {
            "options": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(opts).items()
            },
            "titles": {**VARIANTS, **BASELINES},
            "drops": list(DROPS),
            "seeds": seeds,
            "aggregate": aggregate(seeds),
            "margins": paired_margins(seeds),
        }
    )
    return report


def main(argv: list[str] | None = None) -> int:
    return common.main(
        argv,
        script="bench_front.py",
        parse=parse_args,
        run=run_benchmark,
        render=render_markdown,
        plot=plot,
    )


if __name__ == "__main__":
    sys.exit(main())
