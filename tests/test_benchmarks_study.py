"""The study benchmarks (front, search, speed), each run as a real subprocess in its smoke mode.

No timing is asserted: the checks are that every section is written and that the figures agree
with each other (hypervolumes recomputed here by a different algorithm from the JSON's points,
fronts non-dominated, ratios and rates consistent).
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from admmsearch.data import load_dataset
from admmsearch.errors import DatasetError

pytestmark = pytest.mark.slow  # subprocesses or real studies, every test

ROOT = Path(__file__).resolve().parents[1]


def run_smoke(script: str, out: Path, *args: str) -> str:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--out", str(out), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return run.stdout


def needs_fashion() -> None:
    try:
        load_dataset("fashion-mnist", download=False, limit_train=200)
    except DatasetError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")


def hypervolume_by_levels(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated (x minimised, y maximised), integrated over y level by level."""
    inside = [(x, y) for x, y in points if x < ref[0] and y > ref[1]]
    levels = sorted({y for _, y in inside}, reverse=True)
    area = 0.0
    for i, level in enumerate(levels):
        below = levels[i + 1] if i + 1 < len(levels) else ref[1]
        best_x = min(x for x, y in inside if y >= level)
        area += (level - below) * (ref[0] - best_x)
    return area


def test_hypervolume_by_levels_on_a_hand_example() -> None:
    assert hypervolume_by_levels([(-2, 1), (-1, 3), (0.5, 9)], (0, 0)) == pytest.approx(4.0)


def dominated(p: tuple[float, float], q: tuple[float, float]) -> bool:
    """q dominates p: storage no larger, accuracy no smaller, one strictly better."""
    return q[0] <= p[0] and q[1] >= p[1] and q != p


# ----------------------------------------------------------------------------------- front


@pytest.fixture(scope="module")
def front(tmp_path_factory) -> tuple[Path, str, dict]:
    out = tmp_path_factory.mktemp("front")  # the digits are embedded: no skip
    stdout = run_smoke("bench_front.py", out, "--dataset", "digits", "--threads", "1")
    return out, stdout, json.loads((out / "front-digits.json").read_text())


FRONT_VARIANTS = {"today", "priors", "rungs", "study"}
FRONT_BASELINES = {"hand", "imp", "global", "lamp", "erk", "uniform"}
FRONT_METHODS = FRONT_VARIANTS | FRONT_BASELINES | {"study_every_rung"}


def test_front_writes_every_section(front) -> None:
    out, stdout, report = front
    markdown = (out / "front-digits.md").read_text()
    assert stdout.strip() == markdown.strip()
    for heading in (
        "# Front quality: digits",
        "## On test accuracy",
        "above by more than one standard deviation",
        "Compression within 1 pt of test accuracy: the study",
        "## Ablation",
        "## On validation accuracy",
        "## Every seed",
        "--smoke",
        "front-digits.png",
    ):
        assert heading in markdown
    assert (out / "front-digits.png").stat().st_size > 0
    for key in ("command", "date", "machine", "total_seconds", "seeds", "aggregate", "margins"):
        assert key in report
    assert report["machine"]["load_start"] is not None and report["machine"]["cores"] >= 1
    assert [s["seed"] for s in report["seeds"]] == report["options"]["seeds"]
    assert len(report["seeds"]) >= 2
    for s in report["seeds"]:
        assert set(s["methods"]) == FRONT_METHODS
    assert set(report["aggregate"]) == FRONT_METHODS
    assert set(report["margins"]) == FRONT_BASELINES
    for title in (report["titles"][n] for n in FRONT_METHODS):
        assert title in markdown


def test_front_variants_switch_priors_and_rungs(front) -> None:
    _, _, report = front
    for s in report["seeds"]:
        m = s["methods"]
        origins = {v: m[v]["figures"]["origins"] for v in FRONT_VARIANTS}
        assert origins["today"]["prior"] == origins["rungs"]["prior"] == 0
        assert origins["priors"]["prior"] >= 1 and origins["study"]["prior"] >= 1
        assert origins["today"]["promoted"] == origins["priors"]["promoted"] == 0
        assert origins["study"]["promoted"] >= 1
        for v in FRONT_VARIANTS:  # only top-rung trials are scored
            f = m[v]["figures"]
            assert len(m[v]["points"]) == f["top_rung_trials"] <= f["trials"]
            assert sum(f["origins"].values()) == f["trials"]
        every = m["study_every_rung"]["points"]
        assert len(every) == m["study"]["figures"]["trials"] > len(m["study"]["points"])


def test_front_every_method_spends_at_most_the_studys_total(front) -> None:
    _, _, report = front
    rounds = report["options"]["imp_rounds"]
    for s in report["seeds"]:
        budget = s["study_config"]["budget"]["epochs"]
        total = s["total_epochs"]
        assert total == budget + s["sensitivity_epochs"]
        for name, m in s["methods"].items():
            assert 0 < m["epochs"] <= total, name
        for name in FRONT_VARIANTS:
            assert s["methods"][name]["figures"]["epochs"] <= budget
        for name in FRONT_BASELINES:
            m = s["methods"][name]
            points = len(m["points"])
            assert m["epochs"] == m["epochs_per_point"] * points
            step = rounds if name == "imp" else 1  # IMP's epochs split evenly into rounds
            assert total - step * points < m["epochs"]
        assert s["methods"]["imp"]["epochs_per_point"] % rounds == 0


def test_front_points_are_consistent(front) -> None:
    _, _, report = front
    for s in report["seeds"]:
        dense = s["dense"]
        for m in s["methods"].values():
            for p in m["points"]:
                assert 0 <= p["test_accuracy"] <= 1 and 0 <= p["val_accuracy"] <= 1
                assert p["ratio"] == pytest.approx(dense["storage_bits"] / p["storage_bits"])
                assert all(0 <= k <= 1 for k in p["keep"].values())
        for name in FRONT_BASELINES:
            assert s["methods"][name]["points"]
        hand = [p["keep"] for p in s["methods"]["hand"]["points"]]
        imp = [p["keep"] for p in s["methods"]["imp"]["points"]]
        for a, b in zip(hand, imp, strict=True):  # IMP reaches the same targets in rounds
            assert a == pytest.approx(b, abs=1e-3)
        bits = [p["storage_bits"] for p in s["methods"]["hand"]["points"]]
        for family in ("global", "lamp", "erk", "uniform"):
            targets = [p["target_bits"] for p in s["methods"][family]["points"]]
            assert min(targets) == min(bits) and max(targets) == max(bits)


@pytest.mark.parametrize("accuracy", ["test", "val"])
def test_front_hypervolumes_and_fronts_recompute(front, accuracy) -> None:
    _, _, report = front
    key = f"{accuracy}_accuracy"
    for seed in report["seeds"]:
        dense = seed["dense"]
        for m in seed["methods"].values():
            s, points = m["summary"][accuracy], m["points"]
            ref = (s["reference"]["log10_storage_ratio"], s["reference"]["accuracy_points"])
            assert ref[1] == pytest.approx(100 * (dense[key] - report["options"]["hv_drop"]))
            xy = [
                (math.log10(p["storage_bits"] / dense["storage_bits"]), 100 * p[key])
                for p in points
            ]
            assert s["hypervolume"] >= 0
            assert s["hypervolume"] == pytest.approx(hypervolume_by_levels(xy, ref), abs=1e-9)
            by_label = {p["label"]: (p["storage_bits"], p[key]) for p in points}
            front = [by_label[label] for label in s["front"]]
            assert all(not dominated(p, q) for p in front for q in by_label.values())
            for label, p in by_label.items():
                if label not in s["front"]:
                    assert any(dominated(p, q) or p == q for q in front)
            for drop, best in s["at_drop"].items():
                ok = [p for p in points if dense[key] - p[key] <= float(drop) + 1e-12]
                if not ok:
                    assert best is None
                    continue
                assert best["ratio"] == pytest.approx(max(p["ratio"] for p in ok))


def test_front_means_and_margins_recompute_over_seeds(front) -> None:
    _, _, report = front
    seeds = report["seeds"]
    for name, figures in report["aggregate"].items():
        values = [s["methods"][name]["summary"]["test"]["hypervolume"] for s in seeds]
        hv = figures["test_hypervolume"]
        assert hv["mean"] == pytest.approx(sum(values) / len(values))
        assert hv["std"] == pytest.approx(statistics.stdev(values))
        for drop in report["drops"]:
            best = [s["methods"][name]["summary"]["test"]["at_drop"][str(drop)] for s in seeds]
            ratios = [1.0 if b is None else b["ratio"] for b in best]
            assert figures[f"test_ratio_{drop}"]["mean"] == pytest.approx(statistics.mean(ratios))
    for name, margin in report["margins"].items():
        diffs = [
            s["methods"]["study"]["summary"]["test"]["hypervolume"]
            - s["methods"][name]["summary"]["test"]["hypervolume"]
            for s in seeds
        ]
        assert margin["values"] == pytest.approx(diffs)
        assert margin["mean"] == pytest.approx(statistics.mean(diffs))
        assert margin["std"] == pytest.approx(statistics.stdev(diffs))
        assert margin["above_by_one_std"] == (margin["mean"] - margin["std"] > 0)
    c = report["compression"]
    key = f"test_ratio_{c['drop']}"
    agg = report["aggregate"]
    assert c["best_baseline"] in FRONT_BASELINES
    assert agg[c["best_baseline"]][key]["mean"] == max(
        agg[n][key]["mean"] for n in FRONT_BASELINES
    )
    assert c["study"] == agg["study"][key]


# ---------------------------------------------------------------------------------- search


@pytest.fixture(scope="module")
def search(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("search")
    run_smoke("bench_search.py", out)
    return out, json.loads((out / "search.json").read_text())


def test_search_writes_every_section(search) -> None:
    out, report = search
    markdown = (out / "search.md").read_text()
    for heading in (
        "# Search efficiency",
        "Ranking",
        "Recommended default sampler",
        "## Every run",
        "search.png",
    ):
        assert heading in markdown
    assert (out / "search.png").stat().st_size > 0
    assert set(report["samplers"]) == {"nsga2", "tpe", "random"}
    assert report["recommended"] in report["samplers"]
    last = str(report["options"]["checkpoints"][-1])
    assert report["recommended"] == report["ranking"][last][0]
    assert report["verdict"].startswith(report["recommended"]) and report["verdict"] in markdown
    wins = report["seed_wins"]
    assert set(wins) == set(report["samplers"])
    assert sum(wins.values()) == pytest.approx(len(report["options"]["seeds"]))


def test_search_curves_recompute_from_the_points(search) -> None:
    _, report = search
    trials = report["options"]["trials"]
    for run in report["runs"]:
        curve = run["curve"]
        assert len(curve) == trials and curve[0] >= 0
        assert all(b >= a - 1e-12 for a, b in zip(curve, curve[1:], strict=False))
        dense = run["dense"]
        ref = (0.0, 100 * (dense["val_accuracy"] - run["max_accuracy_drop"]))
        xy = [
            (math.log10(p["storage_bits"] / dense["storage_bits"]), 100 * p["val_accuracy"])
            for p in run["points"]
        ]
        assert curve[-1] == pytest.approx(hypervolume_by_levels(xy, ref), abs=1e-9)
    for name, s in report["samplers"].items():
        curves = [r["curve"] for r in report["runs"] if r["sampler"] == name]
        for n, figures in s["at"].items():
            values = [c[int(n) - 1] for c in curves]
            assert figures["mean"] == pytest.approx(sum(values) / len(values))
            assert figures["min"] <= figures["mean"] <= figures["max"]


# ----------------------------------------------------------------------------------- speed


@pytest.fixture(scope="module")
def speed(tmp_path_factory) -> tuple[Path, dict]:
    needs_fashion()
    out = tmp_path_factory.mktemp("speed")
    run_smoke("bench_speed.py", out, "--per-device", "2")
    return out, json.loads((out / "speed.json").read_text())


def test_speed_writes_every_section(speed) -> None:
    out, report = speed
    markdown = (out / "speed.md").read_text()
    for heading in (
        "## Trials per hour",
        "## Dense-model cache",
        "## Stage cache",
        "## Where a trial's time goes",
        "## Trials at once on one device",
        "## ADMM epoch against a plain epoch",
        "speed.png",
    ):
        assert heading in markdown
    assert (out / "speed.png").stat().st_size > 0
    assert [s["study"] for s in report["studies"]] == ["digits-quick", "lenet5-fashion"]


def test_speed_figures_are_consistent(speed) -> None:
    _, report = speed
    for s in report["studies"]:
        assert [t["jobs"] for t in s["throughput"]][:2] == [1, 2]
        assert [t["mode"] for t in s["throughput"]][:2] == ["study", "replay"]
        for t in s["throughput"]:
            assert t["finished"] >= s["trials"] and t["wall_seconds"] > 0
            assert t["trials_per_hour"] == pytest.approx(3600 * t["finished"] / t["wall_seconds"])
            split = t["split"]
            assert 1 <= split["trials"] <= t["finished"]
            assert {"admm_prune", "retrain"} <= set(split["stage_seconds"])
            assert all(v >= 0 for v in split["stage_seconds"].values())
            assert sum(split["stage_seconds"].values()) <= split["trial_seconds"]
            parts = split["part_seconds"]
            assert {"evaluate", "tracking", "pack", "accounting"} <= set(parts)
            assert sum(parts.values()) <= split["trial_seconds"] - sum(
                split["stage_seconds"].values()
            )
        (at_once,) = s["per_device"]
        assert at_once["per_device"] == 2 and at_once["finished"] >= 4
        assert at_once["gpu"] is None  # on the CPU: no GPU to sample
        d = s["dense_cache"]
        assert d["trained_cold"] and not d["trained_warm"]
        assert d["saved_seconds"] == pytest.approx(
            d["cold_prepare_seconds"] - d["warm_prepare_seconds"]
        )
        c = s["stage_cache"]
        assert c["hit_flags"] == [False, True]
        miss, hit = c["params"]
        keeps = [k for k in miss if k.startswith("keep.")]
        assert keeps and all(miss[k] == hit[k] for k in keeps)
        assert any(miss[k] != hit[k] for k in miss if k.startswith(("bits.", "clusters.")))


# ----------------------------------------------------------------------------------- joint


@pytest.fixture(scope="module")
def joint(tmp_path_factory) -> tuple[Path, dict]:
    needs_fashion()
    out = tmp_path_factory.mktemp("joint")
    run_smoke("bench_joint.py", out)
    return out, json.loads((out / "joint.json").read_text())


def test_joint_writes_every_section(joint) -> None:
    out, report = joint
    markdown = (out / "joint.md").read_text()
    for heading in (
        "# Joint pruning + quantization",
        "## Best storage reduction",
        "## The chosen settings",
        "admmsearch run",
        "admmsearch export",
        "admmsearch compress",
        "joint.png",
    ):
        assert heading in markdown
    assert (out / "joint.png").stat().st_size > 0
    assert [c["command"].split()[1] for c in report["cli"]][:4] == [
        "run",
        "export",
        "compress",
        "export-model",
    ]
    assert "Deployed (`export-model`)" in markdown


def test_joint_choices_follow_the_trials_and_compress_reproduces_them(joint) -> None:
    _, report = joint
    rows, max_drop = report["trials"], report["options"]["max_drop"]
    ok = [r for r in rows if r["metrics"]["accuracy_drop"] <= max_drop + 1e-12]
    with_index, no_index = report["chosen"]["with_index"], report["chosen"]["no_index"]
    smallest = min(r["metrics"]["storage_bits_with_index"] for r in ok)
    most = max(r["metrics"]["weight_ratio_no_index"] for r in ok)
    assert with_index["exported"]["storage_bits_with_index"] == smallest
    assert no_index["exported"]["weight_ratio_no_index"] == pytest.approx(most)
    for c in (with_index, no_index):
        e, r = c["exported"], c["reproduced"]
        assert e["weight_ratio_no_index"] >= e["weight_ratio_with_index"] > 1
        assert abs(r["val_accuracy"] - e["val_accuracy"]) <= 0.02
        assert r["storage_bits_with_index"] == pytest.approx(
            e["storage_bits_with_index"], rel=0.01
        )
        for key, diff in c["difference"].items():
            assert diff == pytest.approx(r[key] - e[key])
        assert r["storage_bits_with_index"] == 8 * c["file_bytes"]  # storage is the file
        padding = c["file_bytes"] - c["header_bytes"] - r["payload_bits"] / 8
        assert 0 <= padding < 8  # each stream pads to a whole byte
        assert set(c["layers"]) == {"conv1", "conv2", "fc1", "fc2"}
        d = c["deployed"]  # export-model's forms of the packed file
        assert d["c_flash_bytes"] == c["file_bytes"] - c["header_bytes"]
        assert d["onnx_bytes"] > 0 and d["onnx_int8_bytes"] > 0


# --------------------------------------------------------------------------------- summary


def test_summary_states_every_figure_with_its_command(tmp_path, front, search, speed, joint):
    for out, stem in (
        (front[0], "front-digits"),
        (search[0], "search"),
        (speed[0], "speed"),
        (joint[0], "joint"),
    ):
        (tmp_path / f"{stem}.json").write_text((out / f"{stem}.json").read_text())
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "summary.py"), "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    text = (tmp_path / "summary.md").read_text()
    for stem in ("front", "search", "speed", "joint"):
        assert f"python benchmarks/bench_{stem}.py --smoke" in text
    assert text.count("ran on ") == 4
    assert "Not run yet: `python benchmarks/bench_engine.py`" in text
    assert "Not run yet: `python benchmarks/bench_front.py --dataset fashion`" in text
    assert f"**{search[1]['recommended']}**" in text
