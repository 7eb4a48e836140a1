"""The README's results section, generated from the benchmarks' JSON files.

Every figure in it is read from ``RESULTS/<name>.json`` as written by ``bench_<name>.py``, and
stated with the command that reproduces it and the machine it ran on. A benchmark whose JSON is
missing is listed with its command only. Usage::

    python benchmarks/summary.py                  # reads and writes benchmarks/results/
    python benchmarks/summary.py --results /tmp/bench

Writes ``RESULTS/summary.md`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common import pct, table

SCRIPTS = {
    "engine": "python benchmarks/bench_engine.py",
    "front-digits": "python benchmarks/bench_front.py --dataset digits",
    "front-fashion": "python benchmarks/bench_front.py --dataset fashion",
    "joint": "python benchmarks/bench_joint.py",
    "speed": "python benchmarks/bench_speed.py",
    "search": "python benchmarks/bench_search.py",
}


def machine(report: Mapping[str, Any]) -> str:
    m = report["machine"]
    load = f"load {m.get('load_start')} to {m.get('load_end')}"
    total = report.get("total_seconds")
    took = "" if total is None else f", {total / 60:.0f} min"
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, {m['device']}, "
        f"torch {m['torch']}; {report['date'][:10]}{took}, {load}"
    )


def _ms(figure: Mapping[str, float], digits: int, suffix: str = "") -> str:
    return f"{figure['mean']:.{digits}f}{suffix} ± {figure['std']:.{digits}f}{suffix}"


def front(r: Mapping[str, Any]) -> list[str]:
    if "aggregate" not in r:  # written by the single-seed script of before issue 12
        return ["Measured by an older `bench_front.py` (one seed); run it again."]
    rows = [
        [
            r["titles"][name],
            f"{a['epochs']['mean']:.0f}",
            _ms(a["test_hypervolume"], 2),
            *(_ms(a[f"test_ratio_{d}"], 1, "x") for d in r["drops"]),
        ]
        for name, a in r["aggregate"].items()
    ]
    first = r["seeds"][0]
    hv = 100 * r["options"]["hv_drop"]
    seeds = ", ".join(str(s["seed"]) for s in r["seeds"])
    return [
        f"{r['dataset_title']} ({first['data']['train']} training images), pruning only, "
        f"every method at the study's total training epochs; test accuracy, mean ± std over "
        f"seeds {seeds}. Hypervolume in (log10 storage with indices / dense, accuracy "
        f"points), reference dense - {hv:g} pt.",
        "",
        *table(
            [
                "method",
                "epochs",
                "hypervolume",
                "compression at <= 0.5 pt",
                "compression at <= 1 pt",
            ],
            rows,
        ),
    ]


def joint(r: Mapping[str, Any]) -> list[str]:
    rows = []
    for label, key in (
        ("smallest storage with indices", "with_index"),
        ("most compression without indices", "no_index"),
    ):
        c = r["chosen"][key]
        e = c["exported"]
        layers = ", ".join(
            f"{n} {s['keep']:.3g}/{s.get('bits') or s.get('clusters') or 'fp32'}"
            for n, s in c["layers"].items()
        )
        rows.append(
            [
                label,
                c["trial"],
                f"{e['weight_ratio_no_index']:.1f}x",
                f"{e['weight_ratio_with_index']:.1f}x",
                pct(e["val_accuracy"]),
                pct(e["test_accuracy"]),
                layers,
            ]
        )
    drop = 100 * r["options"]["max_drop"]
    return [
        f"Within {drop:g} pt of validation accuracy (dense {pct(r['dense']['val_accuracy'])}), "
        "exported with `admmsearch export` and reproduced by `admmsearch compress`.",
        "",
        *table(
            [
                "best",
                "trial",
                "weights, no index",
                "weights, with index",
                "val acc",
                "test acc",
                "keep/bits per layer",
            ],
            rows,
        ),
    ]


def speed(r: Mapping[str, Any]) -> list[str]:
    rows = []
    for s in r["studies"]:
        one, two = s["throughput"][:2]
        rows.append(
            [
                s["study"],
                s["train_images"],
                f"{one['trials_per_hour']:.0f}",
                f"{two['trials_per_hour']:.0f}",
                f"{s['dense_cache']['saved_seconds']:.0f} s",
                f"{s['stage_cache']['saved_seconds']:.0f} s",
            ]
        )
    return table(
        [
            "study",
            "train images",
            "trials/h, 1 worker",
            "trials/h, 2 workers",
            "dense cache saves",
            "stage cache saves (per hit)",
        ],
        rows,
    )


def search(r: Mapping[str, Any]) -> list[str]:
    checkpoints = r["options"]["checkpoints"]
    rows = [
        [name, *(f"{v['at'][str(n)]['mean']:.2f}" for n in checkpoints)]
        for name, v in r["samplers"].items()
    ]
    return [
        f"`{Path(r['options']['study']).name}`, mean hypervolume over seeds "
        f"{', '.join(map(str, r['options']['seeds']))}; recommended default: "
        f"**{r['recommended']}**.",
        "",
        *table(["sampler", *(f"n = {n}" for n in checkpoints)], rows),
    ]


def engine(r: Mapping[str, Any]) -> list[str]:
    t = r["epoch_timing"]
    return [
        f"ADMM epoch / plain epoch = **{t['ratio']:.3f}x** ({t['admm_median']:.2f} s vs "
        f"{t['plain_median']:.2f} s, {t['train_samples']} images)."
    ]


SECTIONS: dict[str, tuple[str, Callable[[Mapping[str, Any]], list[str]]]] = {
    "front-digits": ("Front quality against magnitude pruning: digits", front),
    "front-fashion": ("Front quality against magnitude pruning: Fashion-MNIST", front),
    "joint": ("Joint pruning + quantization", joint),
    "speed": ("Speed: workers and caches", speed),
    "engine": ("Speed: ADMM epoch against a plain epoch", engine),
    "search": ("Search efficiency by sampler", search),
}


def render(results: Path) -> str:
    lines = [
        "## Results",
        "",
        "Generated by `python benchmarks/summary.py` from `benchmarks/results/*.json`; "
        "details, every point and the plots are in `benchmarks/results/<name>.md`.",
        "",
    ]
    for name, (title, section) in SECTIONS.items():
        path = results / f"{name}.json"
        lines += [f"### {title}", ""]
        if not path.exists():
            lines += [f"Not run yet: `{SCRIPTS[name]}`.", ""]
            continue
        report = json.loads(path.read_text())
        lines += [
            *section(report),
            "",
            f"Reproduce: `{report['command']}`; ran on {machine(report)}."
            f" Details: [`{name}.md`](benchmarks/results/{name}.md).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    text = render(a.results)
    (a.results / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
