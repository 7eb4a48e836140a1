"""Joint pruning + quantization on LeNet-5 / Fashion-MNIST, through the command line only.

The user's path, end to end, each step a real ``python -m admmsearch`` subprocess on fresh
Optuna and MLflow stores:

1. ``run`` the study ``benchmarks/studies/joint-fashion.yaml`` (per-layer keep and bits searched,
   feasible within 1 point of validation accuracy);
2. ``export --policy max-compression --max-drop 0.01``: the smallest storage with indices
   within 1 point; and ``export --trial N`` for the trial with the highest weight compression
   without indices within the same drop (when it is another trial);
3. ``compress SETTINGS --format json`` on each exported file: the settings applied once from
   the cached dense model, packed to a real file, compared with the figures the trial logged;
4. ``export-model`` on each packed file: ONNX (float32 and ``--int8``) and C, with their sizes.

Reported: the best storage reduction with and without indices at <= 1 point of validation
accuracy, the per-layer settings that reach it, the test accuracy (never used to choose), and
how closely ``compress`` reproduces the trial. Usage::

    python benchmarks/bench_joint.py                       # the full run (about 30 min, 2 cores)
    python benchmarks/bench_joint.py --smoke --out /tmp/bench

Writes ``OUT/joint.md``, ``OUT/joint.json`` and ``OUT/joint.png`` and prints the markdown.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import common
import optuna
import yaml
from common import (
    Clock,
    argument_parser,
    figure,
    log,
    pct,
    read_study,
    report_header,
    save_figure,
    stores,
    table,
    write_study,
)
from matplotlib.ticker import FuncFormatter

from admmsearch.record import Metric, StudyAttr, TrialAttr, kib  # noqa: E402

HERE = Path(__file__).resolve().parent
STUDY = HERE / "studies" / "joint-fashion.yaml"
SMOKE_STUDY = {
    "dataset.name": "common:fashion_mnist_small",
    "dataset.limit_train": 512,
    "dense.train.epochs": 1,
    "pipeline.admm_prune.train.epochs": 1,
    "pipeline.admm_prune.rho.updates": 4,
    "pipeline.retrain.epochs": 1,
    "pipeline.admm_quantize.train.epochs": 1,
    "pipeline.admm_quantize.rho.updates": 4,
    "pipeline.quant_retrain.shares": [1.0],
    "constraints.max_accuracy_drop": 1.0,
    "budget.trials": 3,
    "sampler.population_size": 2,
}
#: Variables that would send the commands to other stores or caches than the benchmark's own.
_STORE_VARIABLES = ("ADMMSEARCH_STORAGE", "MLFLOW_TRACKING_URI", "ADMMSEARCH_CACHE_DIR")
#: Figures compared between the trial (as exported) and its reproduction by ``compress``.
COMPARED = (
    Metric.VAL_ACCURACY,
    Metric.TEST_ACCURACY,
    Metric.STORAGE_BITS,
    Metric.DATA_BITS,
    Metric.WEIGHT_RATIO_NO_INDEX,
    Metric.WEIGHT_RATIO_WITH_INDEX,
    Metric.COMPRESSION_RATIO,
)


@dataclasses.dataclass(frozen=True)
class Options:
    study: Path
    trials: int | None
    max_drop: float
    device: str
    out: Path
    smoke: bool


def parse_args(argv: list[str]) -> Options:
    p = argument_parser(__doc__, device=True)
    p.add_argument("--study", type=Path, default=STUDY, help="study file (default: %(default)s)")
    p.add_argument("--trials", type=int, help="study trials (default: the study's budget)")
    p.add_argument(
        "--max-drop", type=float, help="validation accuracy drop allowed (default 0.01)"
    )
    a = p.parse_args(argv)
    max_drop = a.max_drop if a.max_drop is not None else (1.0 if a.smoke else 0.01)
    return Options(a.study, a.trials, max_drop, a.device, a.out, a.smoke)


class Cli:
    """Runs ``python -m admmsearch`` in ``folder`` and keeps each command line, with ``$TMP``
    for the temporary folder, for the report."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.calls: list[dict[str, Any]] = []
        env = {k: v for k, v in os.environ.items() if k not in _STORE_VARIABLES}
        path = [str(HERE), *filter(None, [env.get("PYTHONPATH")])]
        self.env = {**env, "PYTHONPATH": os.pathsep.join(path)}

    def __call__(self, *args: str) -> str:
        shown = shlex.join(["admmsearch", *args]).replace(str(self.folder), "$TMP")
        log(shown)
        start = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "admmsearch", *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        self.calls.append({"command": shown, "seconds": seconds, "returncode": run.returncode})
        if run.returncode != 0:
            raise SystemExit(f"`{shown}` failed ({run.returncode}):\n{run.stderr[-3000:]}")
        return run.stdout


def study_file(opts: Options, tmp: Path) -> tuple[Path, str, str]:
    """The study with its stores written in, so every command needs only the file."""
    changes = {**(SMOKE_STUDY if opts.smoke else {}), "device": opts.device}
    if opts.trials is not None:
        changes["budget.trials"] = opts.trials
    urls = stores(tmp)
    data = read_study(opts.study, {**changes, **urls})
    path = tmp / "study.yaml"
    config, _ = write_study(data, path)
    return path, config.name, urls["storage"]


def completed(name: str, storage: str) -> tuple[list[dict[str, Any]], dict[str, float]]:
    study = optuna.load_study(study_name=name, storage=storage)
    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        m = t.user_attrs[TrialAttr.METRICS]
        rows.append({"trial": t.number, "params": dict(t.params), "metrics": m})
    return rows, study.user_attrs[StudyAttr.DENSE]


def best_without_index(rows: Sequence[Mapping[str, Any]], max_drop: float) -> int | None:
    """The trial with the highest weight compression without indices within ``max_drop``."""
    ok = [r for r in rows if r["metrics"][Metric.ACCURACY_DROP] <= max_drop + 1e-12]
    best = max(ok, key=lambda r: r["metrics"][Metric.WEIGHT_RATIO_NO_INDEX], default=None)
    return None if best is None else best["trial"]


def export_and_compress(cli: Cli, study: Path, tag: str, choice: Sequence[str]) -> dict:
    settings = cli.folder / f"{tag}.yaml"
    cli("export", str(study), *choice, "--out", str(settings))
    doc = yaml.safe_load(settings.read_text())
    packed = cli.folder / f"{tag}.admm"
    cache = cli.folder / ".admmsearch" / "cache"
    out = json.loads(
        cli(
            "compress",
            str(settings),
            "--out",
            str(packed),
            "--format",
            "json",
            "--cache-dir",
            str(cache),
        )
    )
    exported, reproduced = out["exported"], out["metrics"]
    deployed = deploy(cli, packed)
    return {
        "trial": doc["trial"],
        "chosen_by": doc["chosen_by"],
        "layers": doc["layers"],
        "exported": exported,
        "reproduced": {k: reproduced[k] for k in sorted(reproduced)},
        "difference": {
            k: reproduced[k] - exported[k] for k in COMPARED if k in exported and k in reproduced
        },
        "file_bytes": out["file_bytes"],
        "header_bytes": out["header_bytes"],
        "settings_file": f"$TMP/{settings.name}",
        "deployed": deployed,
    }


def deploy(cli: Cli, packed: Path) -> dict[str, int]:
    """The packed model exported as a user deploys it (``export-model``): sizes in bytes of
    the ONNX file (float32 and ``--int8``) and of the C export's flash arrays."""
    onnx, int8, c_folder = (packed.with_suffix(s) for s in (".onnx", ".int8.onnx", ""))
    cli("export-model", str(packed), "--target", "onnx", "--out", str(onnx))
    cli("export-model", str(packed), "--target", "onnx", "--int8", "--out", str(int8))
    line = cli("export-model", str(packed), "--target", "c", "--out", str(c_folder))
    flash = re.search(r"flash arrays (\d+) bytes", line)
    if flash is None:
        raise SystemExit(f"export-model --target c printed no flash size: {line!r}")
    return {
        "onnx_bytes": onnx.stat().st_size,
        "onnx_int8_bytes": int8.stat().st_size,
        "c_flash_bytes": int(flash.group(1)),
        "c_source_bytes": (c_folder / "admm_model.c").stat().st_size,
    }


def run_benchmark(opts: Options, command: str) -> dict[str, Any]:
    clock = Clock(command, opts.device)
    with tempfile.TemporaryDirectory(prefix="bench-joint-") as tmp:
        tmp = Path(tmp)
        study, name, storage = study_file(opts, tmp)
        cli = Cli(tmp)
        start = time.perf_counter()
        cli("run", str(study))
        study_seconds = time.perf_counter() - start
        rows, dense = completed(name, storage)
        drop = str(opts.max_drop)
        chosen = {
            "with_index": export_and_compress(
                cli, study, "with-index", ["--policy", "max-compression", "--max-drop", drop]
            )
        }
        no_index = best_without_index(rows, opts.max_drop)
        if no_index is not None and no_index != chosen["with_index"]["trial"]:
            chosen["no_index"] = export_and_compress(
                cli, study, "no-index", ["--trial", str(no_index)]
            )
        else:
            chosen["no_index"] = chosen["with_index"]
        config = yaml.safe_load(study.read_text())
    report = clock.finish()
    report.update(
        {
            "options": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(opts).items()
            },
            "study": {k: v for k, v in config.items() if k not in ("storage", "tracking_uri")},
            "study_seconds": study_seconds,
            "cli": cli.calls,
            "dense": dense,
            "trials": rows,
            "chosen": chosen,
        }
    )
    return report


# -------------------------------------------------------------------------------- the report


def _layers_md(c: Mapping[str, Any]) -> list[str]:
    r = c["reproduced"]
    rows = []
    for layer, s in c["layers"].items():
        sparsity = r.get(f"sparsity.{layer}")
        bits = r.get(f"bits_per_nonzero.{layer}")
        rows.append(
            [
                layer,
                f"{s['keep']:.4g}",
                s.get("bits", s.get("clusters")) or "float32",
                "–" if sparsity is None else f"{1 - sparsity:.4f}",
                "–" if bits is None else f"{bits:.2f}",
            ]
        )
    return table(
        [
            "layer",
            "keep (setting)",
            "bits",
            "kept (reproduced)",
            "value bits per nonzero (codebook incl.)",
        ],
        rows,
    )


def _chosen_md(title: str, c: Mapping[str, Any], dense: Mapping[str, float]) -> list[str]:
    e, r = c["exported"], c["reproduced"]
    rows = [
        [k, f"{e[k]:.6g}", f"{r[k]:.6g}", f"{c['difference'][k]:+.3g}"]
        for k in COMPARED
        if k in c["difference"]
    ]
    return [
        f"### {title}: trial {c['trial']}",
        "",
        f"Chosen by: {c['chosen_by']}. Validation {pct(e['val_accuracy'])} (drop "
        f"{100 * e['accuracy_drop']:+.2f} pt), test {pct(e['test_accuracy'])} (drop "
        f"{100 * (dense['test_accuracy'] - e['test_accuracy']):+.2f} pt). Weights "
        f"**{e['weight_ratio_no_index']:.1f}x** smaller without indices, "
        f"**{e['weight_ratio_with_index']:.1f}x** with; whole model "
        f"{e['compression_ratio_with_index']:.1f}x ({kib(e[Metric.STORAGE_BITS]):.2f} "
        f"KiB). Packed file {c['file_bytes']} bytes ({c['header_bytes']} header).",
        "",
        *_layers_md(c),
        "",
        *_deployed_md(c),
        "",
        "Reproduced by `compress` against the trial's own figures:",
        "",
        *table(["figure", "trial", "compress", "difference"], rows),
        "",
    ]


def _deployed_md(c: Mapping[str, Any]) -> list[str]:
    """The sizes of the deployed forms (``export-model``) of one exported trial."""
    d = c["deployed"]
    rows = [
        [".admm file", f"{c['file_bytes']:,}", f"{c['header_bytes']} header + payload"],
        ["C flash arrays", f"{d['c_flash_bytes']:,}", "the .admm payload"],
        ["ONNX, float32", f"{d['onnx_bytes']:,}", "every weight dense, zeros included"],
        ["ONNX, --int8", f"{d['onnx_int8_bytes']:,}", "int8 levels where they fit (QDQ)"],
    ]
    return ["Deployed (`export-model`), in bytes:", "", *table(["form", "bytes", ""], rows)]


def render_markdown(report: Mapping[str, Any]) -> str:
    dense, chosen = report["dense"], report["chosen"]
    lines = [
        "# Joint pruning + quantization: LeNet-5 / Fashion-MNIST",
        "",
        report_header(report),
        "",
        *_setup_md(report),
        "",
        "## Best storage reduction",
        "",
        *_best_md(chosen),
        "",
        "![trials](joint.png)",
        "",
        "## The chosen settings, exported and reproduced",
        "",
    ]
    lines += _chosen_md("Smallest storage with indices", chosen["with_index"], dense)
    if chosen["no_index"]["trial"] != chosen["with_index"]["trial"]:
        lines += _chosen_md("Most compression without indices", chosen["no_index"], dense)
    else:
        lines += ["The same trial also has the most compression without indices.", ""]
    return "\n".join(lines)


def _setup_md(report: Mapping[str, Any]) -> list[str]:
    """The study, the dense model and the commands that were run."""
    dense, study = report["dense"], report["study"]
    return [
        f"Study `{Path(report['options']['study']).name}`: {len(report['trials'])} completed "
        f"trials of {study['budget']['trials']} ({study['sampler']['name']}, "
        f"{report['study_seconds']:.0f} s), {study['dataset']['limit_train']} training images. "
        f"Dense model: validation {pct(dense['val_accuracy'])}, test "
        f"{pct(dense['test_accuracy'])}, {kib(dense['storage_bits']):.1f} KiB. Trials are "
        f"chosen on validation accuracy (drop <= {100 * report['options']['max_drop']:g} pt); "
        "the test accuracy is only reported.",
        "",
        "Commands (in a temporary folder `$TMP` holding the study file with its stores):",
        "",
        *(f"    {c['command']}    # {c['seconds']:.0f} s" for c in report["cli"]),
    ]


def _best_md(chosen: Mapping[str, Any]) -> list[str]:
    head = [
        "within the drop",
        "trial",
        "weights, no index",
        "weights, with index",
        "whole model, with index",
        "val acc",
        "test acc",
    ]
    rows = [
        [
            label,
            c["trial"],
            f"{c['exported']['weight_ratio_no_index']:.1f}x",
            f"{c['exported']['weight_ratio_with_index']:.1f}x",
            f"{c['exported']['compression_ratio_with_index']:.1f}x",
            pct(c["exported"]["val_accuracy"]),
            pct(c["exported"]["test_accuracy"]),
        ]
        for label, c in (
            ("smallest storage with indices", chosen["with_index"]),
            ("most compression without indices", chosen["no_index"]),
        )
    ]
    return table(head, rows)


def plot(report: Mapping[str, Any], png: Path) -> None:
    """Validation accuracy against weight compression, without and with indices."""
    dense, rows = report["dense"], report["trials"]
    fig, ax = figure(7, 4.5)
    for key, color, label in (
        ("weight_ratio_no_index", "tab:orange", "without indices"),
        ("weight_ratio_with_index", "tab:blue", "with indices"),
    ):
        ax.scatter(
            [r["metrics"][key] for r in rows],
            [100 * r["metrics"]["val_accuracy"] for r in rows],
            s=18,
            color=color,
            alpha=0.6,
            label=f"trials, weights {label}",
        )
    for c in {c["trial"]: c for c in report["chosen"].values()}.values():
        e = c["exported"]
        ax.plot(
            [e["weight_ratio_with_index"], e["weight_ratio_no_index"]],
            [100 * e["val_accuracy"]] * 2,
            "k-",
            lw=1,
        )
        ax.annotate(
            f"trial {c['trial']}",
            (e["weight_ratio_no_index"], 100 * e["val_accuracy"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.axhline(
        100 * (dense["val_accuracy"] - report["options"]["max_drop"]),
        color="0.4",
        linestyle="--",
        lw=1,
        label="dense - allowed drop",
    )
    ax.set_xscale("log")
    # Plain numbers on the log axis; of the minor ticks only 2x and 5x a decade get a label.
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else "")
    )
    ax.set_xlabel("weight compression (x, log scale)")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, png)


def main(argv: list[str] | None = None) -> int:
    return common.main(
        argv,
        script="bench_joint.py",
        parse=parse_args,
        run=run_benchmark,
        render=render_markdown,
        plot=plot,
    )


if __name__ == "__main__":
    sys.exit(main())
