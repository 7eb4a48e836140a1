"""C inference: flash, RAM and time per inference of the generated ``admm_predict`` for three
compressed networks, for a Cortex-M4 and for this computer, reading the compressed streams or
decoding each layer whole.

Three networks are trained briefly and compressed with a fixed plan, one pipeline run each (the
accuracy is not the point; no search): the digits CNN on sklearn digits, and LeNet-5 and a
depthwise-separable network with BatchNorm (folded by the pipeline) and a residual block on
Fashion-MNIST. Each packed file is exported to C (``export_c``) and

* compiled for a Cortex-M4F (``arm-none-eabi-gcc -std=c99 -Os -mcpu=cortex-m4 -mthumb
  -mfloat-abi=hard -mfpu=fpv4-sp-d16``) and for this computer (``gcc -std=c99 -Os``), both
  paths: code, constant data, RAM and the stack bound (``admmsearch.deploy._c_sizes``);
* built for this computer (``gcc -std=c99 -O2``) with a timing loop over the test samples, both
  paths: the best of ``--repeats`` passes, per inference;
* run with its ``main.c`` on the test samples, whose accuracy must be the torch model's.

Usage::

    python benchmarks/bench_c_inference.py                  # about 5 minutes on 2 cores
    python benchmarks/bench_c_inference.py --smoke --out /tmp/bench

Writes ``OUT/c_inference.md`` and ``OUT/c_inference.json`` and prints the markdown. Needs gcc,
arm-none-eabi-gcc (``apt-get install gcc-arm-none-eabi``) and Fashion-MNIST
(``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch
from common import Clock, argument_parser, log, report_header, sized, table
from torch import nn

from admmsearch.data import DataSplits, load_dataset
from admmsearch.deploy._c import export_c
from admmsearch.deploy._c_sizes import measure
from admmsearch.models import create_model
from admmsearch.packed._format import ModelMeta, pack_model
from admmsearch.pipeline import PipelineSettings, QuantRetrainSettings, run_pipeline
from admmsearch.plan import Plan
from admmsearch.train import TrainSettings

FULL = {"epochs": 3, "limit_train": 12000, "samples": 1000, "repeats": 5}
SMOKE = {"epochs": 1, "limit_train": 500, "samples": 50, "repeats": 1}
TIMER = r"""#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "admm_model.h"

/* Seconds per admm_predict over the samples file, the best of argv[2] passes. */
int main(int argc, char **argv)
{
    FILE *f = argc > 2 ? fopen(argv[1], "rb") : 0;
    long record = ADMM_INPUT_SIZE + 1, n, i, pass;
    float *x, logits[ADMM_NUM_CLASSES];
    double best = 1e30;
    if (!f || fseek(f, 0, SEEK_END))
        return 2;
    n = ftell(f) / (long)(record * sizeof(float));
    rewind(f);
    x = malloc((size_t)(n * record) * sizeof(float));
    if (!x || fread(x, sizeof(float), (size_t)(n * record), f) != (size_t)(n * record))
        return 2;
    for (pass = 0; pass < atol(argv[2]); ++pass) {
        struct timespec t0, t1;
        double seconds;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (i = 0; i < n; ++i)
            if (admm_predict(x + i * record, logits) < 0)
                return 1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        best = seconds < best ? seconds : best;
    }
    printf("%.9f\n", best / (double)n);
    return 0;
}
"""


@dataclasses.dataclass(frozen=True)
class Options:
    epochs: int
    limit_train: int
    samples: int
    repeats: int
    out: Path
    smoke: bool


def parse_args(argv: list[str]) -> Options:
    """Command line -> Options; ``--smoke`` changes the defaults, explicit flags still win."""
    p = argument_parser(__doc__, smoke="about 1 minute")
    p.add_argument("--epochs", type=int, help=f"epochs per stage (default {FULL['epochs']})")
    p.add_argument("--limit-train", type=int, help="training images (default 12000)")
    p.add_argument("--samples", type=int, help="test samples timed and checked (default 1000)")
    p.add_argument("--repeats", type=int, help="timed passes, the best kept (default 5)")
    a = p.parse_args(argv)
    s = sized(a, SMOKE, FULL)
    return Options(s["epochs"], s["limit_train"], s["samples"], s["repeats"], a.out, a.smoke)


def _separable(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
        nn.ReLU6(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(),
    ]  # fmt: skip


class SeparableResNet(nn.Module):
    """A strided stem, two depthwise-separable blocks and a depthwise-separable residual block,
    BatchNorm and ReLU6 throughout, global average pooling: about 17,000 weights."""

    def __init__(self, num_classes: int = 10, width: int = 24) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU6(),
            *_separable(w, 2 * w, 1), *_separable(2 * w, 4 * w, 2),
        )  # fmt: skip
        self.residual = nn.Sequential(*_separable(4 * w, 4 * w, 1)[:-1])
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.head(nn.functional.relu6(x + self.residual(x)))


def _every(model: nn.Module, keep: float, bits: int) -> dict[str, dict[str, Any]]:
    kinds = (nn.Conv2d, nn.Linear)
    return {
        n: {"keep": keep, "bits": bits} for n, m in model.named_modules() if isinstance(m, kinds)
    }


#: name -> (dataset, how to build the network, its plan)
NETWORKS: dict[str, tuple[str, Callable[[DataSplits], nn.Module], Callable[[nn.Module], dict]]] = {
    "digits CNN": (
        "digits",
        lambda d: create_model("digits-cnn", num_classes=10, input_shape=d.input_shape),
        lambda m: {"conv1": {"keep": 0.6, "bits": 4}, "conv2": {"keep": 0.3, "bits": 4},
                   "fc1": {"keep": 0.05, "bits": 3}, "fc2": {"keep": 0.5, "bits": 4}},
    ),
    "LeNet-5": (
        "fashion-mnist",
        lambda d: create_model("lenet5", num_classes=10, input_shape=d.input_shape),
        lambda m: {"conv1": {"keep": 0.5, "bits": 5}, "conv2": {"keep": 0.12, "bits": 5},
                   "fc1": {"keep": 0.015, "bits": 3}, "fc2": {"keep": 0.12, "bits": 5}},
    ),
    "separable ResNet": ("fashion-mnist", lambda d: SeparableResNet(), lambda m: _every(m, .5, 5)),
}  # fmt: skip


def compress(name: str, opts: Options) -> tuple[nn.Module, DataSplits, Any]:
    """Train the network briefly and compress it to its plan (one pipeline run)."""
    dataset, build, plan = NETWORKS[name]
    options = {} if dataset == "digits" else {"download": False}
    data = load_dataset(dataset, seed=0, limit_train=opts.limit_train, **options)
    torch.manual_seed(0)
    model = build(data)
    rates = [TrainSettings(epochs=opts.epochs, lr=lr, batch_size=64) for lr in (0.05, 0.02, 0.01)]
    settings = PipelineSettings(
        pretrain=rates[0], admm_prune=None, retrain=rates[1], admm_quantize=None,
        quant_retrain=QuantRetrainSettings(rates[2], shares=(1.0,)),
    )  # fmt: skip
    result = run_pipeline(model, data, Plan.from_dict({"layers": plan(model)}), settings)
    return model.cpu().eval(), data, result


def deploy(name: str, opts: Options, folder: Path) -> dict[str, Any]:
    """Compress, pack, export, measure, time and check one network."""
    log(f"{name}: training and compressing")
    model, data, result = compress(name, opts)
    path = folder / "model.admm"
    meta = ModelMeta(
        name,
        {},
        data.num_classes,
        data.input_shape,
        bool(result.folding.pairs),
        data.normalisation,
    )
    info = pack_model(model, [s.name for s in result.storage.layers], path, meta=meta)
    export = export_c(path, folder / "c", samples=_samples(data, opts.samples, folder))
    log(f"{name}: measuring")
    sizes = {
        f"{target} {mode}": dataclasses.asdict(measure(export.source, target, define))
        for target in ("cortex-m4", "host")
        for mode, define in (("streaming", ()), ("decoded", ("-DADMM_DECODE_LAYERS=1",)))
    }
    return {
        "network": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "operations": export.operations,
        "payload_bytes": info.payload_bytes,
        "file_bytes": info.file_bytes,
        "arena_floats": export.arena_floats,
        "sizes": sizes,
        "torch_accuracy": _torch_accuracy(model, data, opts.samples),
        **_run_c(folder / "c", opts.repeats),
    }


def _samples(data: DataSplits, count: int, folder: Path) -> Path:
    """The first ``count`` test samples as raw inputs (the normalisation undone)."""
    x = data.x_test[:count].numpy()
    norm = data.normalisation
    shape = (1, -1, *[1] * (x.ndim - 2))
    raw = x * np.float32(norm.std).reshape(shape) + np.float32(norm.mean).reshape(shape)
    np.savez(folder / "test.npz", x_test=raw, y_test=data.y_test[:count].numpy())
    return folder / "test.npz"


def _torch_accuracy(model: nn.Module, data: DataSplits, count: int) -> float:
    with torch.no_grad():
        predicted = model(data.x_test[:count]).argmax(1)
    return float((predicted == data.y_test[:count]).float().mean())


def _run_c(folder: Path, repeats: int) -> dict[str, Any]:
    """main.c's accuracy line and the time per inference of both paths (gcc -O2)."""
    (folder / "timer.c").write_text(TIMER)
    out: dict[str, Any] = {}
    for mode, define in (("streaming", "0"), ("decoded", "1")):
        flags = ["-std=c99", "-O2", f"-DADMM_DECODE_LAYERS={define}", "admm_model.c", "-lm"]
        _call(["gcc", *flags[:3], "-o", f"main_{mode}", "main.c", *flags[3:]], folder)
        _call(["gcc", *flags[:3], "-o", f"timer_{mode}", "timer.c", *flags[3:]], folder)
        out[f"c_accuracy_line_{mode}"] = _call([f"./main_{mode}", "samples.bin"], folder).strip()
        seconds = float(_call([f"./timer_{mode}", "samples.bin", str(repeats)], folder))
        out[f"microseconds_{mode}"] = 1e6 * seconds
    return out


def _call(args: list[str], folder: Path) -> str:
    done = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"`{' '.join(args)}` failed: {done.stderr[-2000:]}")
    return done.stdout


def run_benchmark(opts: Options, command: str) -> dict[str, Any]:
    for tool in ("gcc", "arm-none-eabi-gcc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (see the script's docstring)")
    clock = Clock(command, "cpu")
    rows = []
    for name in NETWORKS:
        with tempfile.TemporaryDirectory() as folder:
            rows.append(deploy(name, opts, Path(folder)))
    return {
        **clock.finish(),
        "options": {k: str(v) for k, v in vars(opts).items()},
        "networks": rows,
    }


def _kib(n: float) -> str:
    return f"{n:,.0f} ({n / 1024:.1f} KiB)"


def _size_rows(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for r in report["networks"]:
        for target, device in (("cortex-m4", "Cortex-M4F"), ("host", "x86-64 (gcc)")):
            s, d = r["sizes"][f"{target} streaming"], r["sizes"][f"{target} decoded"]
            time = f"{r['microseconds_streaming']:,.0f} / {r['microseconds_decoded']:,.0f}"
            rows.append([
                r["network"], device, f"{r['payload_bytes']:,}", f"{s['code_bytes']:,}",
                f"{s['const_bytes']:,}", _kib(s["ram_bytes"]), _kib(d["ram_bytes"]),
                f"{s['stack_bytes']} / {d['stack_bytes']}", time if target == "host" else "",
            ])  # fmt: skip
    return rows


CHECK_HEADER = ["network", "weights", "dense float32 bytes", "operations", ".admm bytes",
                "torch accuracy", "C, streaming", "C, decoded"]  # fmt: skip


def render_markdown(report: Mapping[str, Any]) -> str:
    header = ["network", "compiled for", "flash: arrays (payload)", "flash: code",
              "flash: all constant data", "RAM streaming", "RAM decoded",
              "stack bound streaming / decoded", "µs/inference streaming / decoded"]  # fmt: skip
    accuracy = [
        [r["network"], f"{r['parameters']:,}", f"{4 * r['parameters']:,}", str(r["operations"]),
         f"{r['file_bytes']:,}", f"{r['torch_accuracy']:.4f}", r["c_accuracy_line_streaming"],
         r["c_accuracy_line_decoded"]]
        for r in report["networks"]
    ]  # fmt: skip
    lines = [
        "# C inference: flash, RAM and time of `admm_predict`",
        "",
        report_header(report),
        "",
        "Bytes of the object file `admm_model.c` compiled with `-Os` (code: `.text`; constant "
        "data: `.rodata`, the payload's arrays and the small tables beside them; RAM: `.bss`, "
        "the activation arena, plus on the decoded path the buffer of the largest layer); the "
        "stack bound is the deepest call path from `admm_predict` (GCC's `-fstack-usage` and "
        "`-fcallgraph-info`). Time: this computer, `gcc -std=c99 -O2`, the best of "
        f"{report['options']['repeats']} passes over {report['options']['samples']} test "
        "samples.",
        "",
        *table(header, _size_rows(report)),
        "",
        "The C harness (`main.c`) on the same samples, both paths, against the torch model:",
        "",
        *table(CHECK_HEADER, accuracy),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return common.main(
        argv,
        script="bench_c_inference.py",
        parse=parse_args,
        run=run_benchmark,
        render=render_markdown,
    )


if __name__ == "__main__":
    sys.exit(main())
