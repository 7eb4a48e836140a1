"""Front quality on LeNet-5 / Fashion-MNIST: the study's Pareto front against magnitude pruning.

A real admmsearch study (``benchmarks/studies/front-fashion.yaml``: pruning only, per-layer keep
ratios searched by NSGA-II on validation accuracy and storage with indices, fresh Optuna and
MLflow stores) runs from its cached dense model. Three baselines start from the same dense
model and get the same training epochs per point as one study trial (ADMM + retraining):

* **one-shot uniform**: every layer pruned to the same keep ratio by magnitude, then retrained;
* **one-shot hand-chosen**: the per-layer shape of the ADMM paper's LeNet-5 (conv1 20 %,
  conv2 8 %, fc1 0.9 %, fc2 7 %) scaled up and down, then retrained;
* **iterative magnitude pruning** (IMP): the hand-chosen targets reached in a few prune/retrain
  rounds whose keep ratios fall geometrically, the epochs split evenly between rounds.

Each method's points are scored on test accuracy (the headline; the study only ever saw
validation accuracy) and on validation accuracy. For each: the Pareto front (accuracy up, storage
with indices down), its exact 2-D hypervolume in (log10 storage / dense, accuracy in points)
against the reference (dense storage, dense accuracy - ``--hv-drop``), and the highest
compression reached within 0.5 and 1 point of the dense accuracy. Usage::

    python benchmarks/bench_front.py                        # the full run (about 25 min, 2 cores)
    python benchmarks/bench_front.py --smoke --out /tmp/bench

Writes ``OUT/front.md``, ``OUT/front.json`` and ``OUT/front.png`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
from common import (  # noqa: E402
    Clock,
    best_within_drop,
    hypervolume_2d,
    log,
    pareto_indices,
    pct,
    read_study,
    report_header,
    stores,
    table,
    trial_seconds,
    write_outputs,
    write_study,
)

from admmsearch.config import StudyConfig  # noqa: E402
from admmsearch.objective import build_model  # noqa: E402
from admmsearch.pipeline import PipelineHooks, PipelineSettings, run_pipeline  # noqa: E402
from admmsearch.plan import LayerPlan, Plan  # noqa: E402
from admmsearch.study import StudyContext, prepare, run_study  # noqa: E402

STUDY = Path(__file__).resolve().parent / "studies" / "front-fashion.yaml"
#: Per-layer keep ratios of Zhang et al. 2018's LeNet-5 (71x on MNIST), scaled by --hand-scales.
HAND_SHAPE = {"conv1": 0.2, "conv2": 0.08, "fc1": 0.009, "fc2": 0.07}
DROPS = (0.005, 0.01)
METHODS = {
    "study": "admmsearch study (ADMM, searched per-layer keep)",
    "one_shot_uniform": "one-shot magnitude, uniform keep",
    "one_shot_hand": "one-shot magnitude, hand-chosen per-layer keep",
    "imp": "iterative magnitude pruning, hand-chosen targets",
}
FULL = {"uniform": "0.25,0.12,0.06,0.03,0.015", "hand_scales": "8,4,2,1,0.5", "imp_rounds": 3}
SMOKE = {"uniform": "0.2,0.05", "hand_scales": "2,0.5", "imp_rounds": 2}
#: A few-second version of the study for --smoke (explicit flags still win).
SMOKE_STUDY = {
    "dataset.name": "common:fashion_mnist_small",
    "dataset.limit_train": 512,
    "dense.train.epochs": 1,
    "pipeline.admm_prune.train.epochs": 1,
    "pipeline.admm_prune.update_every": 2,
    "pipeline.retrain.epochs": 1,
    "budget.trials": 3,
    "sampler.population_size": 2,
}


@dataclasses.dataclass(frozen=True)
class Options:
    study: Path
    trials: int | None
    limit_train: int | None
    uniform: tuple[float, ...]
    hand_scales: tuple[float, ...]
    imp_rounds: int
    hv_drop: float
    threads: int
    out: Path
    smoke: bool


def parse_args(argv: list[str]) -> Options:
    """Command line -> Options; ``--smoke`` changes the defaults, explicit flags still win."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", type=Path, default=STUDY, help="study file (default: %(default)s)")
    p.add_argument("--trials", type=int, help="study trials (default: the study's budget)")
    p.add_argument("--limit-train", type=int, help="training images (default: the study's)")
    p.add_argument("--uniform", help=f"uniform keep ratios (default {FULL['uniform']})")
    p.add_argument("--hand-scales", help=f"scales of the hand shape ({FULL['hand_scales']})")
    p.add_argument("--imp-rounds", type=int, help=f"IMP rounds (default {FULL['imp_rounds']})")
    p.add_argument(
        "--hv-drop",
        type=float,
        default=0.02,
        help="hypervolume reference: dense accuracy minus this (default 0.02)",
    )
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--smoke", action="store_true", help="tiny run (< 1 min) to check the script")
    a = p.parse_args(argv)
    sizes = SMOKE if a.smoke else FULL
    imp_rounds = a.imp_rounds or sizes["imp_rounds"]
    if imp_rounds < 2:
        p.error("--imp-rounds: at least 2 (one round is one-shot pruning)")
    return Options(
        study=a.study,
        trials=a.trials,
        limit_train=a.limit_train,
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


def study_overrides(opts: Options) -> dict[str, Any]:
    changes = dict(SMOKE_STUDY) if opts.smoke else {}
    if opts.trials is not None:
        changes["budget.trials"] = opts.trials
    if opts.limit_train is not None:
        changes["dataset.limit_train"] = opts.limit_train
    return changes


# ------------------------------------------------------------------------------- the methods


def epochs_per_point(config: StudyConfig) -> int:
    """Training epochs a study trial spends after the dense model: ADMM plus retraining."""
    p = config.pipeline
    admm = p.admm_prune.train.epochs if p.admm_prune else 0
    return admm + (p.retrain.epochs if p.retrain else 0)


def run_the_study(ctx: StudyContext) -> list[dict[str, Any]]:
    """Run the study to its budget; one point per completed trial."""

    def on_epoch(stage: str, epoch: int, loss: float) -> None:
        trial = len(ctx.study.get_trials(deepcopy=False)) - 1
        log(f"study trial {trial}: {stage} epoch {epoch + 1} loss {loss:.3f}")

    study = run_study(ctx, on_epoch=on_epoch)
    points = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        m = t.user_attrs["metrics"]
        keep = {n: 1.0 - m[f"sparsity.{n}"] for n in ctx.layers}
        seconds = trial_seconds(t)
        points.append(
            _point(
                f"trial {t.number}",
                keep,
                m["test_accuracy"],
                m["val_accuracy"],
                int(m["storage_bits_with_index"]),
                ctx,
                seconds,
                trial=t.number,
            )
        )
    return points


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


def magnitude(
    ctx: StudyContext, label: str, keep: Mapping[str, float], epochs: int, rounds: int
) -> dict[str, Any]:
    """Magnitude pruning from the dense model to ``keep``: one-shot (``rounds`` 1) or IMP."""
    retrain = dataclasses.replace(ctx.config.pipeline.retrain.settings(), epochs=epochs // rounds)
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
    plan = Plan({n: LayerPlan(keep=min(1.0, k)) for n, k in keep.items()})
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
    seconds = time.perf_counter() - start
    kept = {s.name: s.nonzeros / s.numel for s in result.storage.layers}
    return _point(
        label,
        kept,
        result.final.test_accuracy,
        result.final.val_accuracy,
        result.storage.model_stored_bits,
        ctx,
        seconds,
        target=dict(plan.to_dict()),
    )


def baselines(ctx: StudyContext, opts: Options, epochs: int) -> dict[str, list[dict[str, Any]]]:
    """The three magnitude-pruning sweeps, every point with ``epochs`` epochs of retraining."""
    if epochs % opts.imp_rounds:
        raise SystemExit(f"--imp-rounds {opts.imp_rounds} must divide the {epochs} epochs")
    hand = [(s, {n: min(1.0, k * s) for n, k in HAND_SHAPE.items()}) for s in opts.hand_scales]
    return {
        "one_shot_uniform": [
            magnitude(ctx, f"uniform {k:g}", dict.fromkeys(ctx.layers, k), epochs, 1)
            for k in opts.uniform
        ],
        "one_shot_hand": [magnitude(ctx, f"hand x{s:g}", keep, epochs, 1) for s, keep in hand],
        "imp": [
            magnitude(ctx, f"IMP hand x{s:g}", keep, epochs, opts.imp_rounds) for s, keep in hand
        ],
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


def run_benchmark(opts: Options, command: str) -> dict[str, Any]:
    torch.set_num_threads(opts.threads)
    clock = Clock(command, "cpu")
    with tempfile.TemporaryDirectory(prefix="bench-front-") as tmp:
        tmp = Path(tmp)
        config, layers = write_study(
            read_study(opts.study, study_overrides(opts)), tmp / "study.yaml"
        )
        clock.record["machine"]["device"] = config.device
        start = time.perf_counter()
        ctx = prepare(config, layers, **stores(tmp), workdir=tmp / "work", cache_dir=tmp / "cache")
        prepare_seconds = time.perf_counter() - start
        log(f"dense model: test {pct(ctx.dense.test_accuracy)} ({prepare_seconds:.0f} s)")
        epochs = epochs_per_point(config)
        points = {"study": run_the_study(ctx), **baselines(ctx, opts, epochs)}
    dense = {
        "test_accuracy": ctx.dense.test_accuracy,
        "val_accuracy": ctx.dense.val_accuracy,
        "storage_bits": ctx.dense.storage_bits,
        "epochs": config.dense.train.epochs,
        "prepare_seconds": prepare_seconds,
    }
    methods = {
        name: {
            "title": METHODS[name],
            "points": pts,
            "epochs_per_point": epochs,
            "summary": {
                acc: summarise(pts, dense, f"{acc}_accuracy", opts.hv_drop)
                for acc in ("test", "val")
            },
        }
        for name, pts in points.items()
    }
    report = clock.finish()
    report.update(
        {
            "options": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(opts).items()
            },
            "study": config.resolved_dict(),
            "data": {
                "train": len(ctx.data.y_train),
                "val": len(ctx.data.y_val),
                "test": len(ctx.data.y_test),
            },
            "dense": dense,
            "drops": list(DROPS),
            "methods": methods,
        }
    )
    return report


# -------------------------------------------------------------------------------- the report


def _keep(keep: Mapping[str, float]) -> str:
    return " / ".join(f"{k:.3g}" for k in keep.values())


def _best(s: Mapping[str, Any] | None) -> str:
    return "none" if s is None else f"**{s['ratio']:.1f}x** ({pct(s['accuracy'])}, {s['label']})"


def _summary_rows(report: Mapping[str, Any], acc: str) -> list[list[Any]]:
    rows = []
    for m in report["methods"].values():
        s = m["summary"][acc]
        rows.append(
            [
                m["title"],
                len(m["points"]),
                len(m["points"]) * m["epochs_per_point"],
                f"{s['hypervolume']:.3f}",
                *(_best(s["at_drop"][str(d)]) for d in report["drops"]),
            ]
        )
    return rows


def _winners(report: Mapping[str, Any], acc: str) -> str:
    methods = report["methods"]
    best_hv = max(methods, key=lambda n: methods[n]["summary"][acc]["hypervolume"])
    parts = [f"highest hypervolume: {methods[best_hv]['title']}"]
    for d in report["drops"]:
        found = {n: m["summary"][acc]["at_drop"][str(d)] for n, m in methods.items()}
        found = {n: s for n, s in found.items() if s is not None}
        if found:
            n = max(found, key=lambda k: found[k]["ratio"])
            parts.append(
                f"most compression within {100 * d:g} pt: {methods[n]['title']} "
                f"({found[n]['ratio']:.1f}x)"
            )
    return "; ".join(parts) + "."


def render_markdown(report: Mapping[str, Any]) -> str:
    d, data = report["dense"], report["data"]
    epochs = next(iter(report["methods"].values()))["epochs_per_point"]
    study = report["study"]
    drops = [f"≤ {100 * x:g} pt drop" for x in report["drops"]]
    hv = report["options"]["hv_drop"]
    head = ["method", "points", "epochs in all", "hypervolume", *drops]
    lines = [
        "# Front quality: LeNet-5 / Fashion-MNIST, pruning only",
        "",
        report_header(report),
        "",
        f"Data: {data['train']} training images (the study's `limit_train`), {data['val']} "
        f"validation, {data['test']} test. Dense model ({d['epochs']} epochs, cached, shared by "
        f"every method): test {pct(d['test_accuracy'])}, validation {pct(d['val_accuracy'])}, "
        f"{d['storage_bits'] / 8192:.1f} KiB. Every point trains {epochs} epochs after the dense "
        f"model: a study trial {study['pipeline']['admm_prune']['train']['epochs']} ADMM + "
        f"{study['pipeline']['retrain']['epochs']} retraining epochs; one-shot pruning "
        f"{epochs} retraining epochs; IMP {report['options']['imp_rounds']} rounds of "
        f"{epochs // report['options']['imp_rounds']} epochs. The study ran "
        f"{len(report['methods']['study']['points'])} completed trials of the "
        f"{study['sampler']['name']} sampler (searching on validation accuracy).",
        "",
        "Storage is the whole model with indices (`storage_bits_with_index`, float32 "
        "survivors); compression = dense storage / storage. Hypervolume: the exact area "
        "dominated by a method's points in (log10 of storage / dense storage, accuracy in "
        f"points), reference (dense storage, dense accuracy - {100 * hv:g} pt); unit "
        "decade x point (1.0 = tenfold compression held over one point of accuracy).",
        "",
        "## On test accuracy (headline)",
        "",
        *table(head, _summary_rows(report, "test")),
        "",
        _winners(report, "test"),
        "",
        "## On validation accuracy (what the study optimised)",
        "",
        *table(head, _summary_rows(report, "val")),
        "",
        _winners(report, "val"),
        "",
        "## Settings that reach the best compression (test)",
        "",
    ]
    rows = []
    for m in report["methods"].values():
        for drop in report["drops"]:
            s = m["summary"]["test"]["at_drop"][str(drop)]
            if s is not None:
                rows.append(
                    [
                        m["title"],
                        f"{100 * drop:g} pt",
                        s["label"],
                        _keep(s["keep"]),
                        f"{s['ratio']:.1f}x",
                        pct(s["accuracy"]),
                    ]
                )
    lines += table(
        ["method", "drop", "point", "kept conv1 / conv2 / fc1 / fc2", "compression", "test acc"],
        rows,
    )
    lines += ["", "![fronts](front.png)", "", "## Every point", ""]
    for m in report["methods"].values():
        front = set(m["summary"]["test"]["front"])
        lines += [
            f"### {m['title']}",
            "",
            *table(
                [
                    "point",
                    "kept conv1 / conv2 / fc1 / fc2",
                    "KiB",
                    "compression",
                    "test acc",
                    "val acc",
                    "s",
                    "test front",
                ],
                [
                    [
                        p["label"],
                        _keep(p["keep"]),
                        f"{p['storage_bits'] / 8192:.1f}",
                        f"{p['ratio']:.1f}x",
                        pct(p["test_accuracy"]),
                        pct(p["val_accuracy"]),
                        f"{p['seconds']:.0f}",
                        "yes" if p["label"] in front else "",
                    ]
                    for p in sorted(m["points"], key=lambda p: p["storage_bits"])
                ],
            ),
            "",
        ]
    return "\n".join(lines)


def plot(report: Mapping[str, Any], png: Path) -> None:
    """Test accuracy against storage (log) for every method: all points faint, fronts joined."""
    d = report["dense"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for m, color in zip(report["methods"].values(), plt.cm.tab10.colors, strict=False):
        pts = m["points"]
        ax.scatter(
            [p["storage_bits"] / 8192 for p in pts],
            [100 * p["test_accuracy"] for p in pts],
            s=14,
            color=color,
            alpha=0.35,
        )
        front = [p for p in pts if p["label"] in set(m["summary"]["test"]["front"])]
        front.sort(key=lambda p: p["storage_bits"])
        hv = m["summary"]["test"]["hypervolume"]
        ax.plot(
            [p["storage_bits"] / 8192 for p in front],
            [100 * p["test_accuracy"] for p in front],
            "o-",
            color=color,
            drawstyle="steps-post",
            label=f"{m['title']} (HV {hv:.2f})",
        )
    ax.scatter(
        [d["storage_bits"] / 8192],
        [100 * d["test_accuracy"]],
        marker="*",
        s=160,
        color="black",
        label="dense float32",
        zorder=5,
    )
    for drop, style in zip(report["drops"], (":", "--"), strict=True):
        ax.axhline(
            100 * (d["test_accuracy"] - drop),
            color="0.4",
            linestyle=style,
            lw=1,
            label=f"dense - {100 * drop:g} pt",
        )
    ax.set_xscale("log")
    low = 100 * (d["test_accuracy"] - 3 * report["options"]["hv_drop"])
    ax.set_ylim(bottom=max(low, ax.get_ylim()[0]))
    ax.set_xlabel("storage with indices (KiB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("LeNet-5 / Fashion-MNIST: pruning fronts at equal epochs per point")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts = parse_args(argv)
    command = shlex.join(["python", "benchmarks/bench_front.py", *argv])
    report = run_benchmark(opts, command)
    write_outputs(opts.out, "front", report, render_markdown(report))
    plot(report, opts.out / "front.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
