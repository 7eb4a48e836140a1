"""Speed: trials per hour with 1 and 2 worker processes, and what the two caches save.

For each study (by default ``studies/digits-quick.yaml`` and ``studies/lenet5-fashion.yaml``,
the latter on fewer training images so that the whole run fits in well under an hour on 2
cores; the override is printed), with fresh Optuna and MLflow stores:

* **dense-model cache**: ``prepare`` on an empty work folder (trains the dense model and caches
  it) against ``prepare`` again (loads it);
* **1 worker**: ``run_study`` for N trials of the study's own sampler and first trial;
* **2 workers**: ``run_parallel`` with 2 processes (1 torch thread each on 2 cores) replaying
  exactly the 1-worker trials' params (enqueued), from a fresh stage cache, so both measure
  the same work; worker start-up is included. Trials per hour = finished trials / wall time;
* **stage cache**: two enqueued trials with the same keep ratios and different bits (or
  clusters): the second reuses the first one's pruned model (user attr ``pruning_cache_hit``);
* **where a trial's time goes**: each trial's training stages against everything else in it,
  split by :mod:`admmsearch.timing` (evaluation, codebooks, accounting, packing, tracking,
  stage cache, suggestions); the goal is at most 15 % outside the training steps;
* **trials at once on one device** (``--per-device 1,2,4,8,16``; by default on a GPU only):
  for each N, a fresh study of ``max(trials, 2 N)`` trials with N worker processes on the
  device (``run_parallel`` with ``admmsearch.runtime.worker_devices``), trials drawn by the
  random sampler (a trial's params depend only on the seed and its number, so every N draws
  the same sequence), wall time including the workers' start; on a GPU also its mean
  utilisation and peak memory, sampled by ``nvidia-smi`` every half second.

The cost of an ADMM epoch against a plain one is measured by ``bench_engine.py``; its result
is quoted from ``--engine-json``. Usage::

    python benchmarks/bench_speed.py                       # the full run (about 20 min, 2 cores)
    python benchmarks/bench_speed.py --device cuda --out benchmarks/results/cuda  # one GPU
    python benchmarks/bench_speed.py --smoke --out /tmp/bench

Writes ``OUT/speed.md``, ``OUT/speed.json`` and ``OUT/speed.png`` and prints the markdown.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
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
    Clock,
    argument_parser,
    figure,
    log,
    read_study,
    report_header,
    save_figure,
    stores,
    table,
    trial_seconds,
    write_study,
)

from admmsearch.config import Choices, knob_specs
from admmsearch.record import TrialAttr
from admmsearch.runtime._devices import worker_devices
from admmsearch.search.context import StudyContext
from admmsearch.search.study import prepare, run_parallel, run_study
from admmsearch.timing import PARTS

ROOT = Path(__file__).resolve().parents[1]
STUDIES = {
    "digits-quick": (ROOT / "studies" / "digits-quick.yaml", {}),
    "lenet5-fashion": (ROOT / "studies" / "lenet5-fashion.yaml", {"dataset.limit_train": 10000}),
}
SMOKE_STUDIES = {
    "digits-quick": {
        "dataset.limit_train": 300,
        "dense.train.epochs": 2,
        "pipeline.admm_prune.train.epochs": 1,
        "pipeline.retrain.epochs": 1,
        "pipeline.admm_quantize.train.epochs": 1,
    },
    "lenet5-fashion": {
        "dataset.name": "common:fashion_mnist_small",
        "dataset.limit_train": 256,
        "dense.train.epochs": 1,
        "search.admm_epochs": 1,
        "pipeline.retrain.epochs": 1,
        "pipeline.quant_retrain.shares": [1.0],
    },
}
FULL = {"trials": {"digits-quick": 10, "lenet5-fashion": 4}}
SMOKE = {"trials": {"digits-quick": 2, "lenet5-fashion": 1}}
#: Studies that also get a 2-worker run whose trials the sampler proposes (no replay): do the
#: workers, each seeding its sampler with the study seed, propose the same params?
SAMPLED = ("digits-quick",)
ENGINE_JSON = ROOT / "benchmarks" / "results" / "engine.json"
_DONE = (optuna.trial.TrialState.COMPLETE,)
_MODES = {
    "study": "the study's sampler",
    "replay": "replay of the 1-worker params",
    "sampler": "the study's sampler",
}


@dataclasses.dataclass(frozen=True)
class Options:
    studies: tuple[str, ...]
    trials: dict[str, int]
    limit_train: int | None
    device: str
    engine_json: Path
    out: Path
    smoke: bool
    per_device: tuple[int, ...] = ()


def parse_args(argv: list[str]) -> Options:
    """Command line -> Options; ``--smoke`` changes the defaults, explicit flags still win."""
    p = argument_parser(__doc__, device=True)
    p.add_argument("--studies", default=",".join(STUDIES), help="from %(default)s")
    p.add_argument(
        "--trials",
        type=int,
        help="trials per mode and study (default: "
        + ", ".join(f"{k} {v}" for k, v in FULL["trials"].items())
        + ")",
    )
    p.add_argument(
        "--limit-train", type=int, help="training images of lenet5-fashion (default 10000)"
    )
    p.add_argument("--engine-json", type=Path, default=ENGINE_JSON)
    p.add_argument(
        "--per-device",
        help="trials at once on the device to measure, e.g. 1,2,4,8,16 (default: those on a "
        "GPU, none on the CPU)",
    )
    a = p.parse_args(argv)
    studies = tuple(s for s in a.studies.split(",") if s)
    if not studies or any(s not in STUDIES for s in studies):
        p.error(f"--studies: choose from {', '.join(STUDIES)}; got {a.studies!r}")
    sizes = (SMOKE if a.smoke else FULL)["trials"]
    trials = {s: a.trials or sizes[s] for s in studies}
    default = "1,2" if a.smoke else "1,2,4,8,16"
    levels = a.per_device or (default if a.device.startswith("cuda") else "")
    try:
        per_device = tuple(int(n) for n in levels.split(",") if n)
    except ValueError:
        p.error(f"--per-device: a list of integers like 1,2,4; got {levels!r}")
    if any(n < 1 for n in per_device):
        p.error(f"--per-device: every level must be >= 1; got {levels!r}")
    return Options(
        studies, trials, a.limit_train, a.device, a.engine_json, a.out, a.smoke, per_device
    )


def study_data(opts: Options, name: str, suffix: str, **changes: Any) -> dict[str, Any]:
    path, overrides = STUDIES[name]
    overrides = {**overrides, **(SMOKE_STUDIES[name] if opts.smoke else {})}
    if opts.limit_train is not None and name == "lenet5-fashion":
        overrides["dataset.limit_train"] = opts.limit_train
    overrides["device"] = opts.device
    overrides["search.seed_from_sensitivity"] = False  # throughput of the trials themselves
    return read_study(path, {**overrides, "name": f"{name}-{suffix}", **changes})


def open_context(
    data: Mapping[str, Any], tmp: Path, workdir: Path, dense_from: Path | None = None
) -> tuple[StudyContext, Path, float]:
    """Write the study file, seed the work folder's dense cache, ``prepare``; time the last.

    Every study shares the Optuna and MLflow stores one folder above ``tmp``.
    """
    config, layers = write_study(data, tmp / f"{data['name']}.yaml")
    cache = workdir / "cache"
    if dense_from is not None:
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copy2(dense_from, cache / dense_from.name)
    start = time.perf_counter()
    ctx = prepare(config, layers, **stores(tmp.parent), workdir=workdir, cache_dir=cache)
    return ctx, tmp / f"{data['name']}.yaml", time.perf_counter() - start


def trial_figures(study: optuna.Study) -> dict[str, Any]:
    done = study.get_trials(deepcopy=False, states=_DONE)
    seconds = [trial_seconds(t) for t in done]
    return {
        "finished": len(done),
        "trial_seconds": seconds,
        "mean_trial_seconds": statistics.fmean(seconds) if seconds else None,
        "split": time_split(done),
        "cache_hits": sum(bool(t.user_attrs.get(TrialAttr.PRUNING_CACHE_HIT)) for t in done),
        "distinct_params": len({json.dumps(t.params, sort_keys=True) for t in done}),
    }


def time_split(done: list[optuna.trial.FrozenTrial]) -> dict[str, Any] | None:
    """Mean trial time and mean training time per stage, over the trials that ran every stage.

    A stage-cache hit carries the pruning stages' times of the trial it reuses, so hits are
    left out.
    """
    ran = [t for t in done if not t.user_attrs.get(TrialAttr.PRUNING_CACHE_HIT)]
    if not ran:
        return None
    stages: dict[str, list[float]] = {}
    for t in ran:
        for key, value in t.user_attrs[TrialAttr.METRICS].items():
            if key.startswith("seconds."):
                stages.setdefault(key.split(".", 1)[1], []).append(value)
    seconds = [trial_seconds(t) for t in ran]
    parts = {
        name: statistics.fmean(t.user_attrs.get(TrialAttr.TIMINGS, {}).get(name, 0.0) for t in ran)
        for name in PARTS
    }
    return {
        "trials": len(ran),
        "trial_seconds": statistics.fmean(seconds),
        "stage_seconds": {k: statistics.fmean(v) for k, v in stages.items()},
        "part_seconds": parts,
    }


def throughput(
    label: str, jobs: int, study: optuna.Study, wall: float, mode: str
) -> dict[str, Any]:
    figures = trial_figures(study)
    per_hour = 3600 * figures["finished"] / wall
    log(
        f"{label}: {jobs} worker(s), {figures['finished']} trials in {wall:.0f} s, "
        f"{per_hour:.0f} trials/h"
    )
    return {
        "jobs": jobs,
        "mode": mode,
        "wall_seconds": wall,
        "trials_per_hour": per_hour,
        **figures,
    }


def quant_variant(ctx: StudyContext, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every searched bits / clusters value changed to another non-null one."""
    specs = knob_specs(ctx.config, ctx.layers)
    out = dict(params)
    for name, value in params.items():
        spec = specs.get(name)
        if name.split(".")[0] in ("bits", "clusters") and isinstance(spec, Choices):
            others = [c for c in spec.choices if c is not None and c != value]
            if others:
                out[name] = others[0]
    return out


def bench_study(opts: Options, name: str, tmp: Path) -> dict[str, Any]:
    n = opts.trials[name]
    tmp = tmp / name
    log(f"{name}: cold prepare (trains the dense model)")
    cold, _, cold_s = open_context(study_data(opts, name, "cold"), tmp, tmp / "work-1")
    warm, _, warm_s = open_context(study_data(opts, name, "jobs1"), tmp, tmp / "work-1")
    dense = {
        "cold_prepare_seconds": cold_s,
        "warm_prepare_seconds": warm_s,
        "saved_seconds": cold_s - warm_s,
        "trained_cold": cold.dense.trained,
        "trained_warm": warm.dense.trained,
        "dense_epochs": cold.config.dense.train.epochs,
    }

    start = time.perf_counter()
    study1 = run_study(warm, trials=n)
    one = throughput(name, 1, study1, time.perf_counter() - start, "study")

    replay = [t.params for t in study1.get_trials(deepcopy=False, states=_DONE)][:n]
    ctx2, path2, _ = open_context(
        study_data(opts, name, "jobs2", enqueue=replay),
        tmp,
        tmp / "work-2",
        dense_from=cold.dense.path,
    )
    start = time.perf_counter()
    study2 = run_parallel(path2, ctx2, 2, trials=n)
    two = throughput(name, 2, study2, time.perf_counter() - start, "replay")

    runs = [one, two]
    if name in SAMPLED:
        ctx4, path4, _ = open_context(
            study_data(opts, name, "sampled", enqueue=[]),
            tmp,
            tmp / "work-4",
            dense_from=cold.dense.path,
        )
        start = time.perf_counter()
        study4 = run_parallel(path4, ctx4, 2, trials=n)
        runs.append(throughput(name, 2, study4, time.perf_counter() - start, "sampler"))

    first = replay[0]
    pair = [first, quant_variant(warm, first)]
    ctx3, _, _ = open_context(
        study_data(opts, name, "cache", enqueue=pair),
        tmp,
        tmp / "work-3",
        dense_from=cold.dense.path,
    )
    study3 = run_study(ctx3, trials=2)
    return {
        "study": name,
        "config": ctx3.config.resolved_dict(),
        "trials": n,
        "train_images": len(warm.data.y_train),
        "dense_cache": dense,
        "throughput": runs,
        "stage_cache": stage_cache(study3),
        "per_device": [
            per_device(opts, name, tmp, cold.dense.path, level) for level in opts.per_device
        ],
    }


def per_device(opts: Options, name: str, tmp: Path, dense: Path, level: int) -> dict[str, Any]:
    """``level`` trials at once on the device: trials per hour, and the device's load."""
    trials = max(opts.trials[name], 2 * level)
    data = study_data(opts, name, f"at-once-{level}", enqueue=[], sampler={"name": "random"})
    ctx, path, _ = open_context(data, tmp, tmp / f"work-at-once-{level}", dense_from=dense)
    devices = worker_devices(opts.device, level)
    with GpuLoad(opts.device) as load:
        start = time.perf_counter()
        study = run_parallel(path, ctx, len(devices), trials=trials, devices=devices)
        wall = time.perf_counter() - start
    run = throughput(f"{name}, {level} at once", level, study, wall, "sampler")
    return {**run, "per_device": level, "gpu": load.summary()}


class GpuLoad:
    """Samples a GPU's utilisation (%) and memory (MiB) with ``nvidia-smi`` while it runs;
    nothing on the CPU or where ``nvidia-smi`` is missing."""

    def __init__(self, device: str, every_ms: int = 500) -> None:
        index = device.partition(":")[2] or "0"
        self.command = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
            f"--id={index}",
            f"--loop-ms={every_ms}",
        ]
        self.active = device.startswith("cuda") and shutil.which("nvidia-smi") is not None
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> GpuLoad:
        if self.active:
            self.process = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.samples: list[tuple[float, float]] = []
        if self.process is None:
            return
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        for line in out.splitlines():
            try:
                util, memory = (float(v) for v in line.split(","))
            except ValueError:
                continue
            self.samples.append((util, memory))

    def summary(self) -> dict[str, Any] | None:
        if not getattr(self, "samples", None):
            return None
        utils, memory = zip(*self.samples, strict=True)
        return {
            "samples": len(utils),
            "mean_utilisation_pct": statistics.fmean(utils),
            "peak_memory_mib": max(memory),
        }


def stage_cache(study: optuna.Study) -> dict[str, Any]:
    """Trial times of a cache miss and the hit that follows it, and the stages it skipped."""
    miss, hit = sorted(study.get_trials(deepcopy=False, states=_DONE), key=lambda t: t.number)
    seconds = [trial_seconds(t) for t in (miss, hit)]
    skipped = {
        k.split(".", 1)[1]: v
        for k, v in miss.user_attrs[TrialAttr.METRICS].items()
        if k.startswith("seconds.") and k.split(".", 1)[1] in ("admm_prune", "retrain")
    }
    return {
        "miss_trial_seconds": seconds[0],
        "hit_trial_seconds": seconds[1],
        "saved_seconds": seconds[0] - seconds[1],
        "skipped_stage_seconds": skipped,
        "hit_flags": [t.user_attrs[TrialAttr.PRUNING_CACHE_HIT] for t in (miss, hit)],
        "params": [miss.params, hit.params],
    }


def engine_epochs(path: Path) -> dict[str, Any] | None:
    """The ADMM-vs-plain epoch timing of bench_engine.py, with the machine it ran on."""
    if not path.exists():
        return None
    engine = json.loads(path.read_text())
    return {
        "source": str(path),
        "command": engine["command"],
        "date": engine["date"],
        "machine": engine["machine"],
        **engine["epoch_timing"],
    }


def run_benchmark(opts: Options, command: str) -> dict[str, Any]:
    clock = Clock(command, opts.device)
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        studies = [bench_study(opts, name, Path(tmp)) for name in opts.studies]
    report = clock.finish()
    report.update(
        {
            "options": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(opts).items()
            },
            "studies": studies,
            "engine": engine_epochs(opts.engine_json),
        }
    )
    return report


def _s(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def _engine_md(e: Mapping[str, Any] | None) -> list[str]:
    if e is None:
        return ["Not measured here: run `python benchmarks/bench_engine.py` first."]
    m = e["machine"]
    return [
        f"From `{e['command']}` ({e['date']}, {m['cpu']}, {m['cores']} cores, load "
        f"{e['load_start']} to {e['load_end']}): plain epoch {e['plain_median']:.2f} s, "
        f"ADMM epoch {e['admm_median']:.2f} s (medians of {len(e['plain_seconds'])}), "
        f"**ADMM / plain = {e['ratio']:.3f}x** on {e['train_samples']} images, batch "
        f"{e['batch_size']}."
    ]


def render_markdown(report: Mapping[str, Any]) -> str:
    studies = report["studies"]
    lines = [
        "# Speed: workers, caches and the ADMM epoch",
        "",
        report_header(report),
        "",
        "## Trials per hour",
        "",
        *_throughput_md(studies),
        "",
        "## Dense-model cache",
        "",
        *_dense_cache_md(studies),
        "",
        "## Stage cache (pruned model reused)",
        "",
        *_stage_cache_md(studies),
        "",
        "## Where a trial's time goes",
        "",
        *_split_md(studies),
        "",
        "## Trials at once on one device",
        "",
        *_per_device_md(studies),
        "",
        "## ADMM epoch against a plain epoch",
        "",
        *_engine_md(report["engine"]),
        "",
    ]
    return "\n".join(lines)


_THROUGHPUT_HEAD = [
    "study",
    "train images",
    "workers",
    "trials from",
    "trials",
    "distinct params",
    "stage-cache hits",
    "wall s",
    "mean trial s",
    "trials / hour",
]


def _throughput_md(studies: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [
        [
            s["study"],
            s["train_images"],
            t["jobs"],
            _MODES[t["mode"]],
            t["finished"],
            t["distinct_params"],
            t["cache_hits"],
            f"{t['wall_seconds']:.0f}",
            _s(t["mean_trial_seconds"]),
            f"**{t['trials_per_hour']:.0f}**",
        ]
        for s in studies
        for t in s["throughput"]
    ]
    return [
        *table(_THROUGHPUT_HEAD, rows),
        "",
        "Each study's first 2-worker run replays the params of its 1-worker trials (same "
        "work, fresh stage cache); each worker has 1 torch thread, the single worker 2. "
        "Wall time of a 2-worker run includes starting both processes. A trial's own "
        "time (mean trial s) excludes the front update after it. Where a study has a "
        "second 2-worker run, its trials come from the sampler of each worker (no "
        "enqueued trial): fewer distinct params than trials means the workers proposed "
        "the same settings twice.",
        "",
        "![trials per hour](speed.png)",
    ]


def _dense_cache_md(studies: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [
        [
            s["study"],
            s["dense_cache"]["dense_epochs"],
            f"{s['dense_cache']['cold_prepare_seconds']:.1f}",
            f"{s['dense_cache']['warm_prepare_seconds']:.1f}",
            f"**{s['dense_cache']['saved_seconds']:.1f}**",
        ]
        for s in studies
    ]
    return [
        *table(["study", "dense epochs", "prepare, cold s", "prepare, cached s", "saved s"], rows),
        "",
        "Saved once per study, and again by every extra worker and resumed run.",
    ]


def _stage_cache_md(studies: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = []
    for s in studies:
        c = s["stage_cache"]
        skipped = " + ".join(f"{k} {v:.1f}" for k, v in c["skipped_stage_seconds"].items())
        rows.append(
            [
                s["study"],
                f"{c['miss_trial_seconds']:.1f}",
                f"{c['hit_trial_seconds']:.1f}",
                f"**{c['saved_seconds']:.1f}**",
                skipped or "–",
            ]
        )
    head = ["study", "trial, miss s", "trial, hit s", "saved s", "pruning stages of the miss s"]
    return [
        *table(head, rows),
        "",
        "The two trials share their keep ratios and differ in bits (or clusters); "
        "the hit also evaluates and quantizes, so its saving is the pruning stages' time.",
    ]


def _split_md(studies: Sequence[Mapping[str, Any]]) -> list[str]:
    """Mean seconds per training stage of the 1-worker trials, each part of the rest, and the
    share of a trial outside the training steps."""
    rows = []
    for s in studies:
        split = s["throughput"][0].get("split")
        if not split:
            continue
        stages = {k: v for k, v in split["stage_seconds"].items() if round(v, 1) > 0}
        trained = sum(stages.values())
        parts = split.get("part_seconds") or {}
        outside = split["trial_seconds"] - trained
        other = outside - sum(parts.values())
        rows.append(
            [
                s["study"],
                split["trials"],
                " + ".join(f"{k} {v:.1f}" for k, v in stages.items()),
                f"{trained:.1f}",
                *(f"{parts.get(name, 0.0):.2f}" for name in PARTS),
                f"{other:.2f}",
                f"{split['trial_seconds']:.1f}",
                f"**{100 * outside / split['trial_seconds']:.1f} %**",
            ]
        )
    if not rows:
        return ["Not recorded in this run."]
    header = [
        "study",
        "trials",
        "training stages, mean s",
        "training s",
        *(f"{name} s" for name in PARTS),
        "other s",
        "trial s",
        "outside training",
    ]
    return [
        *table(header, rows),
        "",
        "Means over the 1-worker trials that ran every stage (stage-cache hits left out). "
        "Stage times count their training steps alone; the parts are what "
        "`admmsearch.timing` counts around them: evaluation (validation after every stage "
        "and every epoch of a best-epoch retraining, right after each hard projection, test "
        "after the last stage), fitting the codebooks the quantization stages use, the "
        "storage accounting, packing the model file, tracking (MLflow and the trial's Optuna "
        "records), the stage cache and the sampler; other is the rest of the trial (building "
        "the model, the hard projections themselves, finalizing). Goal: at most 15 % outside "
        "training.",
    ]


def _per_device_md(studies: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = []
    for s in studies:
        for r in s.get("per_device") or ():
            gpu = r.get("gpu") or {}
            rows.append(
                [
                    s["study"],
                    r["per_device"],
                    r["finished"],
                    f"{r['wall_seconds']:.0f}",
                    _s(r["mean_trial_seconds"]),
                    f"**{r['trials_per_hour']:.0f}**",
                    f"{gpu['mean_utilisation_pct']:.0f} %" if gpu else "–",
                    f"{gpu['peak_memory_mib']:.0f}" if gpu else "–",
                ]
            )
    if not rows:
        return ["Not measured in this run (`--per-device 1,2,4,8,16`; by default on a GPU)."]
    head = [
        "study",
        "trials at once",
        "trials",
        "wall s",
        "mean trial s",
        "trials / hour",
        "GPU utilisation",
        "GPU memory MiB",
    ]
    return [
        *table(head, rows),
        "",
        "Each level is a fresh study drawing the same sequence of trials (random sampler, same "
        "seed; a level of N runs at least 2 N of them), run by that many worker processes on "
        "the device, each capped at its share of the GPU's memory; wall time includes starting "
        "them. Utilisation is nvidia-smi's, sampled every "
        "half second over the run.",
    ]


def _bar_label(run: Mapping[str, Any]) -> str:
    """'1 worker', or '2 workers' with where their trials came from (replay or sampler)."""
    if run["jobs"] == 1:
        return "1 worker"
    return f"{run['jobs']} workers\n({'replay' if run['mode'] == 'replay' else 'sampled'})"


def plot(report: Mapping[str, Any], png: Path) -> None:
    fig, axes = figure(4 * len(report["studies"]), 3.5, 1, len(report["studies"]), squeeze=False)
    for ax, s in zip(axes[0], report["studies"], strict=True):
        t = s["throughput"]
        ax.bar(
            [_bar_label(x) for x in t],
            [x["trials_per_hour"] for x in t],
            color=["tab:blue", "tab:orange", "tab:green"][: len(t)],
        )
        ax.set_title(s["study"])
        ax.set_ylabel("trials / hour")
    save_figure(fig, png)


def main(argv: list[str] | None = None) -> int:
    torch.set_num_threads(os.cpu_count() or 1)
    return common.main(
        argv,
        script="bench_speed.py",
        parse=parse_args,
        run=run_benchmark,
        render=render_markdown,
        plot=plot,
    )


if __name__ == "__main__":
    sys.exit(main())
