"""Engine benchmark on LeNet-5: ADMM against one-shot magnitude pruning, the joint pipeline, and
the cost of an ADMM epoch.

For every seed a dense model is trained and every method starts from a deep copy of it:

* **comparison** (every seed): at the same per-layer keep targets (about 44x and 113x fewer
  weights) and the same epoch budget after the dense model, ADMM pruning (A epochs, rho from
  5e-3 to 1 over 4 Z/U updates an epoch, spread over its steps) + masked retraining (R epochs)
  against one-shot magnitude pruning + masked retraining (A + R epochs); both retrainings keep
  their best validation epoch. Reported as mean +- standard deviation over the seeds, and the
  ADMM - one-shot difference paired by seed;
* **joint** (first seed only, to fit in an hour): ADMM prune -> retrain -> ADMM quantize ->
  iterative quantized retraining, accounted with and without indices and packed to a real file
  whose size is checked against the bits;
* **epoch time** (first seed only): a training epoch with the ADMM penalty (plus one Z/U
  update) against a plain epoch, alternated, reported as medians and their ratio.

Test accuracy is the headline; the validation split is only reported. Usage::

    python benchmarks/bench_engine.py                      # the full run (see README)
    python benchmarks/bench_engine.py --smoke --out /tmp/bench

Writes ``OUT/engine.md`` and ``OUT/engine.json`` and prints the markdown.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch
from common import Clock, argument_parser, load_average, pct, report_header, sized, table
from torch import nn

from admmsearch.admm import AdmmState, RhoSchedule
from admmsearch.constraints import Sparsity
from admmsearch.data import DataSplits, load_dataset
from admmsearch.models import compressible_layers, create_model
from admmsearch.packed._format import pack_model
from admmsearch.pipeline import (
    AdmmSettings,
    PipelineHooks,
    PipelineResult,
    PipelineSettings,
    QuantRetrainSettings,
    run_pipeline,
)
from admmsearch.plan import Plan
from admmsearch.train import Epoch, StepHooks, TrainSettings, evaluate, fit, train_epoch

LAYERS = ("conv1", "conv2", "fc1", "fc2")
#: Keep ratios per layer. "paper" follows the ADMM paper's LeNet-5 shape (convs pruned less
#: than fc1), about 44x; "harsh" is about 113x, where one-shot pruning loses more.
TARGETS = {
    "paper": {"conv1": 0.5, "conv2": 0.12, "fc1": 0.015, "fc2": 0.12},
    "harsh": {"conv1": 0.3, "conv2": 0.05, "fc1": 0.005, "fc2": 0.08},
}
JOINT_TARGETS = "paper"
JOINT_BITS = {"conv1": 5, "conv2": 5, "fc1": 3, "fc2": 5}
UPDATES_PER_EPOCH = 4  # Z/U updates per ADMM epoch in the pipeline runs
RHO_START, RHO_END = 5e-3, 1.0  # rho grows geometrically over the stage's updates
TIMING_TARGET = 1.15
FULL = {
    "dense_epochs": 6,
    "admm_epochs": 4,
    "retrain_epochs": 3,
    "quant_admm_epochs": 2,
    "limit_train": None,
    "limit_eval": None,
    "timing_repeats": 3,
    "seeds": "0,1,2",
}
SMOKE = {
    "dense_epochs": 1,
    "admm_epochs": 1,
    "retrain_epochs": 1,
    "quant_admm_epochs": 1,
    "limit_train": 512,
    "limit_eval": 1000,
    "timing_repeats": 2,
    "seeds": "0,1",
}


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of one benchmark run, resolved from the command line."""

    dataset: str
    device: str
    dense_epochs: int
    admm_epochs: int
    retrain_epochs: int
    quant_admm_epochs: int
    limit_train: int | None
    limit_eval: int | None
    timing_repeats: int
    seeds: tuple[int, ...]
    seed: int  # the seed being run, one of ``seeds``
    threads: int
    lr: float
    batch_size: int
    targets: tuple[str, ...]
    out: Path
    smoke: bool


def parse_args(argv: list[str]) -> BenchConfig:
    """Command line -> BenchConfig; ``--smoke`` changes the defaults, explicit flags still win."""
    p = argument_parser(__doc__, smoke="< 1 min", threads=True, device=True)
    p.add_argument("--dataset", default="fashion-mnist")
    for name in tuple(FULL)[:-1]:  # every size but the seeds
        flag = "--" + name.replace("_", "-")
        p.add_argument(
            flag, type=int, default=None, help=f"default {FULL[name]} ({SMOKE[name]} with --smoke)"
        )
    p.add_argument("--seeds", help=f"seeds (default {FULL['seeds']}; {SMOKE['seeds']} smoke)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--targets", default=",".join(TARGETS), help=f"from {', '.join(TARGETS)}")
    a = p.parse_args(argv)
    sizes = sized(a, SMOKE, FULL)
    targets = tuple(t for t in a.targets.split(",") if t)
    if not targets or any(t not in TARGETS for t in targets):
        p.error(f"--targets: choose from {', '.join(TARGETS)}, got {a.targets!r}")
    seeds = tuple(int(x) for x in sizes.pop("seeds").split(",") if x)
    return BenchConfig(
        dataset=a.dataset,
        device=a.device,
        seeds=seeds,
        seed=seeds[0],
        threads=a.threads,
        lr=a.lr,
        batch_size=a.batch_size,
        targets=targets,
        out=a.out,
        smoke=a.smoke,
        **sizes,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_data(cfg: BenchConfig) -> DataSplits:
    """The dataset, with the validation and test splits cut to ``limit_eval`` if given."""
    data = load_dataset(cfg.dataset, seed=cfg.seed, limit_train=cfg.limit_train)
    if cfg.limit_eval is not None:
        n = cfg.limit_eval
        data = dataclasses.replace(
            data,
            x_val=data.x_val[:n],
            y_val=data.y_val[:n],
            x_test=data.x_test[:n],
            y_test=data.y_test[:n],
        )
    return data.to(cfg.device)


def train(
    cfg: BenchConfig, epochs: int, lr: float | None = None, keep_best: bool = False
) -> TrainSettings:
    return TrainSettings(
        epochs=epochs, lr=lr or cfg.lr, batch_size=cfg.batch_size, keep_best=keep_best
    )


def train_dense(cfg: BenchConfig, data: DataSplits) -> tuple[nn.Module, dict[str, float]]:
    """The shared starting point: LeNet-5 trained ``dense_epochs`` epochs from a seeded init."""
    seed_everything(cfg.seed)
    model = create_model("lenet5", num_classes=data.num_classes, input_shape=data.input_shape)
    model.to(cfg.device)
    start = time.perf_counter()
    fit(model, data, train(cfg, cfg.dense_epochs), seed=cfg.seed)
    seconds = time.perf_counter() - start
    log("dense trained")
    return model, {
        "epochs": cfg.dense_epochs,
        "test_accuracy": evaluate(model, data.x_test, data.y_test),
        "val_accuracy": evaluate(model, data.x_val, data.y_val),
        "seconds": seconds,
    }


def admm_settings(cfg: BenchConfig, epochs: int) -> AdmmSettings:
    """ADMM with UPDATES_PER_EPOCH Z/U updates an epoch, rho from RHO_START to RHO_END."""
    rho = RhoSchedule(RHO_START, RHO_END, updates=max(1, UPDATES_PER_EPOCH * epochs))
    return AdmmSettings(train=train(cfg, epochs), rho=rho)


def pipeline_settings(cfg: BenchConfig, data: DataSplits, method: str) -> PipelineSettings:
    """The stages of ``method``: "admm", "one_shot" or "joint"; all skip pretraining."""
    a, r = cfg.admm_epochs, cfg.retrain_epochs
    if method == "one_shot":
        return PipelineSettings(
            pretrain=None,
            admm_prune=None,
            retrain=train(cfg, a + r, keep_best=True),
            admm_quantize=None,
            quant_retrain=None,
            seed=cfg.seed,
        )
    joint = method == "joint"
    quant = admm_settings(cfg, cfg.quant_admm_epochs) if joint else None
    retrain_q = QuantRetrainSettings(train(cfg, 1, cfg.lr / 2, keep_best=True)) if joint else None
    return PipelineSettings(
        pretrain=None,
        admm_prune=admm_settings(cfg, a),
        retrain=train(cfg, r, keep_best=True),
        admm_quantize=quant,
        quant_retrain=retrain_q,
        seed=cfg.seed,
    )


def make_plan(targets: str, bits: dict[str, int] | None = None) -> Plan:
    layers = {
        n: {"keep": k, **({"bits": bits[n]} if bits else {})} for n, k in TARGETS[targets].items()
    }
    return Plan.from_dict({"layers": layers})


def target_counts(model: nn.Module, plan: Plan) -> dict[str, int]:
    """Weights each layer must keep: the count the Sparsity constraint rounds the ratio to."""
    layers = compressible_layers(model)
    return {n: Sparsity(lp.keep).count(layers[n].weight.numel()) for n, lp in plan.layers.items()}


def run_method(
    cfg: BenchConfig, data: DataSplits, dense: nn.Module, plan: Plan, method: str
) -> tuple[PipelineResult, nn.Module, float]:
    """Run one method on a deep copy of the dense model; returns result, model and wall time."""
    seed_everything(cfg.seed)
    model = copy.deepcopy(dense)
    start = time.perf_counter()
    result = run_pipeline(
        model,
        data,
        plan,
        pipeline_settings(cfg, data, method),
        layer_patterns=list(LAYERS),
        device=cfg.device,
        hooks=PipelineHooks(on_stage=lambda r: log(f"{method} {r.name}", r.test_accuracy)),
    )
    return result, model, time.perf_counter() - start


def log(what: str, accuracy: float | None = None) -> None:
    """Progress on stderr (:func:`common.log`), with a test accuracy where one is given."""
    common.log(what + ("" if accuracy is None else f" test {100 * accuracy:.2f} %"))


def method_figures(result: PipelineResult, wall: float) -> dict[str, Any]:
    """Accuracy, drop, per-layer nonzeros, weight compression and time of one pipeline run."""
    dense, final, storage = result.dense, result.final, result.storage
    return {
        "test_accuracy": final.test_accuracy,
        "val_accuracy": final.val_accuracy,
        "dense_test_accuracy": dense.test_accuracy,
        "accuracy_drop": dense.test_accuracy - final.test_accuracy,
        "nonzeros": {layer.name: layer.nonzeros for layer in storage.layers},
        "weight_ratio_no_index": storage.weight_ratio_no_index,
        "weight_ratio_with_index": storage.weight_ratio_with_index,
        "wall_seconds": wall,
        "stages": [
            {
                "name": s.name,
                "test_accuracy": s.test_accuracy,
                "val_accuracy": s.val_accuracy,
                "seconds": s.seconds,
            }
            for s in result.stages
        ],
    }


def compare(cfg: BenchConfig, data: DataSplits, dense: nn.Module, targets: str) -> dict[str, Any]:
    """ADMM and one-shot pruning at the same targets and the same epochs after the dense model."""
    plan = make_plan(targets)
    methods = {}
    for method in ("admm", "one_shot"):
        log(f"comparison {targets}: {method}")
        result, _, wall = run_method(cfg, data, dense, plan, method)
        methods[method] = method_figures(result, wall)
    return {
        "targets": targets,
        "keep": dict(TARGETS[targets]),
        "target_nonzeros": target_counts(dense, plan),
        "epochs": {
            "admm": [cfg.admm_epochs, cfg.retrain_epochs],
            "one_shot": [0, cfg.admm_epochs + cfg.retrain_epochs],
        },
        "methods": methods,
    }


def run_joint(cfg: BenchConfig, data: DataSplits, dense: nn.Module) -> dict[str, Any]:
    """Joint prune + quantize from the dense model, accounted and packed to a real file."""
    plan = make_plan(JOINT_TARGETS, JOINT_BITS)
    result, model, wall = run_method(cfg, data, dense, plan, "joint")
    figures = method_figures(result, wall)
    with tempfile.TemporaryDirectory() as folder:
        info = pack_model(model.cpu(), list(LAYERS), Path(folder) / "lenet5.admm")
    storage = result.storage
    layers = [
        {
            "name": s.name,
            "keep": TARGETS[JOINT_TARGETS][s.name],
            "bits": JOINT_BITS[s.name],
            "nonzeros": s.nonzeros,
            "distinct": result.final.layers[s.name]["distinct"],
            "codebook_size": s.codebook_size,
            "encoding": s.encoding,
            "data_bits": s.data_bits,
            "stored_bits": s.stored_bits,
            "ratio_no_index": s.ratio_no_index,
            "ratio_with_index": s.ratio_with_index,
        }
        for s in storage.layers
    ]
    return {
        **figures,
        "targets": JOINT_TARGETS,
        "target_nonzeros": target_counts(dense, plan),
        "bits": dict(JOINT_BITS),
        "layers": layers,
        "storage": storage.summary(),
        "packed": {
            "file_bytes": info.file_bytes,
            "header_bytes": info.header_bytes,
            "payload_bytes": info.payload_bytes,
            "accounted_bytes": storage.model_stored_bits / 8,
            "weight_streams": len(storage.layers),
        },
    }


def time_epochs(cfg: BenchConfig, data: DataSplits, dense: nn.Module) -> dict[str, Any]:
    """Alternate plain and ADMM epochs (penalty + one Z/U update) on copies of the dense model."""
    plan = make_plan(cfg.targets[0])
    runs: dict[str, list[float]] = {"plain": [], "admm": []}
    models = {kind: copy.deepcopy(dense) for kind in runs}
    layers = compressible_layers(models["admm"], list(LAYERS))
    state = AdmmState(
        layers,
        plan.prune_constraints({n: m.weight for n, m in layers.items()}),
        RhoSchedule(RHO_START),
    )
    optimizers = {
        k: torch.optim.SGD(m.parameters(), lr=cfg.lr, momentum=0.9) for k, m in models.items()
    }
    warm = dataclasses.replace(data, x_train=data.x_train[:1024], y_train=data.y_train[:1024])
    load_start = load_average()
    for repeat in range(-1, cfg.timing_repeats):  # repeat -1 warms up on a slice, untimed
        order = ("plain", "admm") if repeat % 2 == 0 else ("admm", "plain")
        for kind in order:
            seconds = _timed_epoch(
                cfg,
                warm if repeat < 0 else data,
                models[kind],
                optimizers[kind],
                state if kind == "admm" else None,
                repeat,
            )
            if repeat >= 0:
                runs[kind].append(seconds)
                log(f"timed {kind} epoch {seconds:.2f} s")
    plain, admm = statistics.median(runs["plain"]), statistics.median(runs["admm"])
    return {
        "plain_seconds": runs["plain"],
        "admm_seconds": runs["admm"],
        "plain_median": plain,
        "admm_median": admm,
        "ratio": admm / plain,
        "target_ratio": TIMING_TARGET,
        "within_target": admm / plain <= TIMING_TARGET,
        "train_samples": len(data.y_train),
        "batch_size": cfg.batch_size,
        "targets": cfg.targets[0],
        "load_start": load_start,
        "load_end": load_average(),
    }


def _timed_epoch(
    cfg: BenchConfig,
    data: DataSplits,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: AdmmState | None,
    repeat: int,
) -> float:
    generator = torch.Generator().manual_seed(cfg.seed + repeat + 1)
    _sync(cfg.device)
    start = time.perf_counter()
    hooks = StepHooks() if state is None else StepHooks(state.autograd_penalty, state.add_gradient)
    train_epoch(model, data, optimizer, Epoch(cfg.batch_size, generator, hooks))
    if state is not None:
        state.update()
    _sync(cfg.device)
    return time.perf_counter() - start


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_seed(cfg: BenchConfig) -> tuple[DataSplits, nn.Module, dict[str, Any]]:
    """The dense model of ``cfg.seed`` and the comparison at every target."""
    seed_everything(cfg.seed)
    data = load_data(cfg)
    dense, dense_figures = train_dense(cfg, data)
    record = {
        "seed": cfg.seed,
        "dense": dense_figures,
        "comparison": [compare(cfg, data, dense, t) for t in cfg.targets],
    }
    return data, dense, record


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target: each method's figures as mean and std over the seeds, and the ADMM minus
    one-shot test accuracy difference paired by seed."""
    out = []
    for i, first in enumerate(runs[0]["comparison"]):
        per_seed = [r["comparison"][i] for r in runs]
        methods = {
            method: {
                key: _spread([c["methods"][method][key] for c in per_seed])
                for key in ("test_accuracy", "accuracy_drop", "val_accuracy", "wall_seconds")
            }
            for method in first["methods"]
        }
        diff = [
            c["methods"]["admm"]["test_accuracy"] - c["methods"]["one_shot"]["test_accuracy"]
            for c in per_seed
        ]
        out.append(
            {
                **{k: first[k] for k in ("targets", "keep", "epochs")},
                "methods": methods,
                "admm_minus_one_shot": _spread(diff),
            }
        )
    return out


def _spread(values: list[float]) -> dict[str, Any]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": std, "values": list(values)}


def run_benchmark(cfg: BenchConfig, command: str) -> dict[str, Any]:
    """Every section of the benchmark, as one JSON-ready dict."""
    torch.set_num_threads(cfg.threads)
    clock = Clock(command, cfg.device)
    runs, first = [], None
    for seed in cfg.seeds:
        seeded = dataclasses.replace(cfg, seed=seed)
        data, dense, record = run_seed(seeded)
        runs.append(record)
        first = first or (seeded, data, dense)
    seeded, data, dense = first
    sections = {
        "config": {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()
        },
        "data": {"train": len(data.y_train), "val": len(data.y_val), "test": len(data.y_test)},
        "dense": runs[0]["dense"],
        "seeds": runs,
        "comparison": aggregate(runs),
        "joint": run_joint(seeded, data, dense),
        "epoch_timing": time_epochs(seeded, data, dense),
    }
    return {**clock.finish(), **sections}


# ---------------------------------------------------------------------------------- markdown


def _ms(figure: dict[str, Any], scale: float = 100.0, unit: str = " %") -> str:
    return f"{scale * figure['mean']:.2f}{unit} ± {scale * figure['std']:.2f}{unit}"


def _comparison_md(c: dict[str, Any], runs: list[dict[str, Any]], index: int) -> list[str]:
    keep = ", ".join(f"{n} {k:g}" for n, k in c["keep"].items())
    first = runs[0]["comparison"][index]
    counts = " / ".join(str(first["target_nonzeros"][n]) for n in LAYERS)
    ratio = {m: f["weight_ratio_with_index"] for m, f in first["methods"].items()}
    rows = []
    for method, m in c["methods"].items():
        a, r = c["epochs"][method]
        rows.append(
            [
                method,
                f"{a} + {r}",
                _ms(m["test_accuracy"]),
                _ms(m["accuracy_drop"], unit=" pt"),
                ", ".join(pct(v) for v in m["test_accuracy"]["values"]),
                f"{ratio[method]:.1f}x",
                f"{m['wall_seconds']['mean']:.0f}",
                _ms(m["val_accuracy"]),
            ]
        )
    d = c["admm_minus_one_shot"]
    seeds = ", ".join(str(r["seed"]) for r in runs)
    head = [f"### Targets `{c['targets']}`: keep {keep} (nonzeros {counts})", ""]
    return [
        *head,
        *table(
            [
                "method",
                "ADMM + retrain epochs",
                "test acc",
                "drop",
                f"test acc, seeds {seeds}",
                "ratio with idx",
                "wall s",
                "val acc",
            ],
            rows,
        ),
        "",
        f"ADMM − one-shot test accuracy, paired by seed: {100 * d['mean']:+.2f} ± "
        f"{100 * d['std']:.2f} pt.",
    ]


def _joint_md(j: dict[str, Any]) -> list[str]:
    summary = (
        f"Test accuracy {pct(j['test_accuracy'])} (dense {pct(j['dense_test_accuracy'])}, "
        f"drop {100 * j['accuracy_drop']:+.2f} pt); weights {j['weight_ratio_no_index']:.1f}x "
        f"without indices, {j['weight_ratio_with_index']:.1f}x with; whole model "
        f"{j['storage']['model_ratio']:.1f}x; wall {j['wall_seconds']:.0f} s."
    )
    return [summary, "", *_joint_stages_md(j), "", *_joint_layers_md(j), "", _packed_md(j)]


def _joint_stages_md(j: dict[str, Any]) -> list[str]:
    return table(
        ["stage", "test acc", "val acc", "s"],
        [
            [s["name"], pct(s["test_accuracy"]), pct(s["val_accuracy"]), f"{s['seconds']:.0f}"]
            for s in j["stages"]
        ],
    )


_LAYER_COLUMNS = {
    "layer": "name",
    "keep": "keep",
    "bits": "bits",
    "nonzeros": "nonzeros",
    "distinct": "distinct",
    "encoding": "encoding",
    "bits no idx": "data_bits",
    "bits with idx": "stored_bits",
}


def _joint_layers_md(j: dict[str, Any]) -> list[str]:
    rows = [
        [
            *(x[key] for key in _LAYER_COLUMNS.values()),
            f"{x['ratio_no_index']:.1f}x",
            f"{x['ratio_with_index']:.1f}x",
        ]
        for x in j["layers"]
    ]
    return table([*_LAYER_COLUMNS, "ratio no idx", "ratio with idx"], rows)


def _packed_md(j: dict[str, Any]) -> str:
    p = j["packed"]
    return (
        f"Packed file: {p['file_bytes']} bytes = {p['header_bytes']} header + "
        f"{p['payload_bytes']} payload; accounted {p['accounted_bytes']:.1f} bytes "
        f"(bits / 8); payload - accounted = {p['payload_bytes'] - p['accounted_bytes']:.1f}"
        f" bytes of padding over {p['weight_streams']} weight streams."
    )


def _timing_md(t: dict[str, Any]) -> list[str]:
    rows = [
        [kind, f"{t[kind + '_median']:.2f}", ", ".join(f"{x:.2f}" for x in t[kind + "_seconds"])]
        for kind in ("plain", "admm")
    ]
    verdict = "within" if t["within_target"] else "OVER"
    return [
        *table(["epoch", "median s", "runs s"], rows),
        "",
        f"ADMM / plain = **{t['ratio']:.3f}x** ({verdict} the {t['target_ratio']}x target); "
        f"{t['train_samples']} samples, batch {t['batch_size']}, penalty over "
        f"{', '.join(LAYERS)} (targets `{t['targets']}`), one Z/U update per epoch included; "
        f"load average {t['load_start']} before, {t['load_end']} after.",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    d = report["dense"]
    lines = [
        "# Engine benchmark: LeNet-5",
        "",
        report_header(report),
        "",
        f"Data: {report['config']['dataset']}, {report['data']['train']} train / "
        f"{report['data']['val']} val / {report['data']['test']} test. Dense models (one per "
        f"seed, {d['epochs']} epochs): test "
        + ", ".join(
            f"{pct(r['dense']['test_accuracy'])} (seed {r['seed']})" for r in report["seeds"]
        )
        + f"; the first took {d['seconds']:.0f} s. Figures are mean ± standard deviation over "
        "the seeds; both methods' retraining keeps its best validation epoch.",
        "",
        "## ADMM vs one-shot magnitude pruning (same targets, same epochs after dense)",
    ]
    for i, c in enumerate(report["comparison"]):
        lines += ["", *_comparison_md(c, report["seeds"], i)]
    first = report["seeds"][0]["seed"]
    lines += [
        "",
        f"## Joint prune + quantize (targets `{report['joint']['targets']}`, seed {first})",
        "",
    ]
    lines += _joint_md(report["joint"])
    lines += ["", "## Epoch time", "", *_timing_md(report["epoch_timing"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return common.main(
        argv, script="bench_engine.py", parse=parse_args, run=run_benchmark, render=render_markdown
    )


if __name__ == "__main__":
    sys.exit(main())
