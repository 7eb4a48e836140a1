"""The report of ``bench_front.py``: markdown tables (mean +- std over seeds, the paired
margins, the ablation, every seed) and the plot of the first seed's test fronts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common import COLORS, figure, pct, report_header, save_figure, table

from admmsearch.record import kib

__all__ = ["plot", "render_markdown"]


def _ms(figure: Mapping[str, float], digits: int = 3, suffix: str = "") -> str:
    return f"{figure['mean']:.{digits}f}{suffix} ± {figure['std']:.{digits}f}{suffix}"


def _headline_rows(report: Mapping[str, Any], names: list[str], acc: str) -> list[list[Any]]:
    agg, titles = report["aggregate"], report["titles"]
    return [
        [
            titles[n],
            f"{agg[n]['points']['mean']:.1f}",
            f"{agg[n]['epochs']['mean']:.0f}",
            _ms(agg[n][f"{acc}_hypervolume"]),
            *(_ms(agg[n][f"{acc}_ratio_{d}"], 1, "x") for d in report["drops"]),
        ]
        for n in names
    ]


def _ablation_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for name in report["variants"]:
        runs = [s["methods"][name]["figures"] for s in report["seeds"]]
        a = report["aggregate"][name]
        n = len(runs)
        origins = {k: sum(r["origins"][k] for r in runs) / n for k in runs[0]["origins"]}
        made = ", ".join(f"{v:.1f} {k}" for k, v in origins.items() if v)
        rows.append(
            [
                report["titles"][name],
                f"{sum(r['trials'] for r in runs) / n:.1f} ({made})",
                f"{sum(r['top_rung_trials'] for r in runs) / n:.1f}",
                f"{sum(r['epochs'] for r in runs) / n:.0f}",
                _ms(a["test_hypervolume"]),
                *(_ms(a[f"test_ratio_{d}"], 1, "x") for d in report["drops"]),
                _ms(a["val_hypervolume"]),
                f"{sum(r['trial_seconds'] for r in runs) / n:.1f}",
            ]
        )
    return rows


def _seed_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for s in report["seeds"]:
        for name, m in s["methods"].items():
            t = m["summary"]["test"]
            best = [t["at_drop"][str(d)] for d in report["drops"]]
            rows.append(
                [
                    s["seed"],
                    report["titles"][name],
                    len(m["points"]),
                    m["epochs"],
                    f"{t['hypervolume']:.3f}",
                    *(
                        "1.0x (dense)" if b is None else f"{b['ratio']:.1f}x ({b['label']})"
                        for b in best
                    ),
                ]
            )
    return rows


def _margins(report: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, m in report["margins"].items():
        verdict = "yes" if m["above_by_one_std"] else "**no**"
        lines.append(
            f"* study − {report['titles'][name]}: {m['mean']:+.3f} ± {m['std']:.3f} "
            f"(paired by seed); above by more than one standard deviation: {verdict}"
        )
    c = report["compression"]
    lines += [
        "",
        f"Compression within {100 * c['drop']:g} pt of test accuracy: the study "
        f"{_ms(c['study'], 1, 'x')}, the best baseline there "
        f"({report['titles'][c['best_baseline']]}) {_ms(c['baseline'], 1, 'x')}; the study's "
        f"over the baseline's, by seed: {_ms(c['ratio'], 2, 'x')}.",
    ]
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    variants, baselines = report["variants"], report["baselines"]
    drops = [f"≤ {100 * x:g} pt drop" for x in report["drops"]]
    head = ["method", "points", "epochs", "hypervolume", *drops]
    lines = [
        f"# Front quality: {report['dataset_title']}, pruning only, at equal total training",
        "",
        report_header(report),
        "",
        *_setup_md(report),
        "",
        "## On test accuracy (headline)",
        "",
        *table(head, _headline_rows(report, ["study", *baselines], "test")),
        "",
        *_margins(report),
        "",
        "## Ablation: what priors and successive halving add (test accuracy)",
        "",
        *_ablation_md(report, drops),
        "",
        "## On validation accuracy (what the study optimised)",
        "",
        *table(head, _headline_rows(report, [*variants, *baselines], "val")),
        "",
        f"![fronts](front-{report['dataset']}.png)",
        "",
        "## Every seed (test accuracy)",
        "",
        *table(["seed", "method", "points", "epochs", "hypervolume", *drops], _seed_rows(report)),
        "",
    ]
    return "\n".join(lines)


def _setup_md(report: Mapping[str, Any]) -> list[str]:
    """What was run: seeds, data, the dense model, the study's budget, the hypervolume."""
    first = report["seeds"][0]
    study = first["study_config"]
    o, d, data = report["options"], first["dense"], first["data"]
    p, search = study["pipeline"], study["search"]
    totals = ", ".join(
        f"seed {s['seed']}: {s['total_epochs']} ({s['sensitivity_epochs']} for the "
        "sensitivity pass)"
        for s in report["seeds"]
    )
    return [
        f"Seeds {', '.join(str(s) for s in o['seeds'])} (each: dense model, data split, "
        f"sampler, stages). Data: {data['train']} training images, {data['val']} validation, "
        f"{data['test']} test. Dense model of seed {first['seed']}: {d['epochs']} epochs, test "
        f"{pct(d['test_accuracy'])}, validation {pct(d['val_accuracy'])}, "
        f"{kib(d['storage_bits']):.1f} KiB. Each study variant: a budget of "
        f"{study['budget']['epochs']} training epochs, the pipeline as written "
        f"{p['admm_prune']['train']['epochs']} ADMM + {p['retrain']['epochs']} retraining "
        f"epochs ({study['sampler']['name']} sampler); priors {search['priors']}; rungs "
        f"{search['rungs']}. The study's total, which every baseline sweep spends at most, "
        f"spread over its points: {totals}. Baselines: hand shape x{o['hand_scales']} "
        f"(IMP in {o['imp_rounds']} rounds); the prior families at {o['points']} storage "
        "targets over the hand sweep's storage.",
        *(["", report["cut"]] if report.get("cut") else []),
        "",
        "Storage is the whole model with indices; compression = dense storage / storage. "
        "Hypervolume: the area dominated in (log10 of storage / dense storage, accuracy in "
        f"points) above dense accuracy - {100 * o['hv_drop']:g} pt. Figures are mean ± "
        "standard deviation over the seeds; a method with no point within a drop counts 1x "
        "there (the dense model). With rungs only the top rung's trials (the study's front) "
        "are scored; the last ablation row adds the lower rungs' trials for comparison.",
    ]


def _ablation_md(report: Mapping[str, Any], drops: list[str]) -> list[str]:
    head = [
        "variant",
        "trials (origin)",
        "top-rung trials",
        "epochs",
        "hypervolume",
        *drops,
        "hypervolume (val)",
        "s / trial",
    ]
    rows = _ablation_rows(report)
    extra = _headline_rows(report, ["study_every_rung"], "test")[0]
    rows.append([extra[0], "–", extra[1], extra[2], *extra[3:], "–", "–"])
    return [
        *table(head, rows),
        "",
        "Trials and their origin (prior, sensitivity-seeded, sampled, promoted to a higher rung) "
        "are means per seed.",
    ]


def plot(report: Mapping[str, Any], png) -> None:
    """Test accuracy against storage (log) for every method of the first seed."""
    first = report["seeds"][0]
    d = first["dense"]
    fig, ax = figure(9, 5.5)
    names = ["study", *report["baselines"]]
    for name, color in zip(names, COLORS, strict=False):
        m = first["methods"][name]
        _plot_method(ax, m, color, report["titles"][name])
    ax.scatter(
        [kib(d["storage_bits"])],
        [100 * d["test_accuracy"]],
        marker="*",
        s=160,
        color="black",
        label="dense float32",
        zorder=5,
    )
    for drop, style in zip(report["drops"], (":", "--"), strict=True):
        ax.axhline(100 * (d["test_accuracy"] - drop), color="0.4", linestyle=style, lw=1)
    ax.set_xscale("log")
    low = 100 * (d["test_accuracy"] - 3 * report["options"]["hv_drop"])
    ax.set_ylim(bottom=max(low, ax.get_ylim()[0]))
    ax.set_xlabel("storage with indices (KiB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{report['dataset_title']}, seed {first['seed']}: fronts at equal total epochs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, png)


def _plot_method(ax: Any, m: Mapping[str, Any], color: str, title: str) -> None:
    pts = m["points"]
    ax.scatter(
        [kib(p["storage_bits"]) for p in pts],
        [100 * p["test_accuracy"] for p in pts],
        s=12,
        color=color,
        alpha=0.35,
    )
    labels = set(m["summary"]["test"]["front"])
    front = sorted((p for p in pts if p["label"] in labels), key=lambda p: p["storage_bits"])
    hv = m["summary"]["test"]["hypervolume"]
    ax.plot(
        [kib(p["storage_bits"]) for p in front],
        [100 * p["test_accuracy"] for p in front],
        "o-",
        color=color,
        drawstyle="steps-post",
        label=f"{title} (HV {hv:.2f})",
    )
