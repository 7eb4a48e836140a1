"""The engine benchmark script, run as a real subprocess in its smoke mode (no timing checks)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from admmsearch.data import load_dataset
from admmsearch.errors import DatasetError

pytestmark = pytest.mark.slow  # subprocesses or real studies, every test

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_engine.py"
LAYERS = ("conv1", "conv2", "fc1", "fc2")


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory) -> tuple[Path, dict]:
    try:
        load_dataset("fashion-mnist", download=False, limit_train=200)
    except DatasetError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")
    out = tmp_path_factory.mktemp("bench")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--threads", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "# Engine benchmark" in run.stdout
    return out, json.loads((out / "engine.json").read_text())


def _accuracies(figures: dict) -> list[float]:
    """Every accuracy a run reports; the test split is measured for the first and last stage."""
    stages = figures["stages"]
    tested = [s["test_accuracy"] for s in stages]
    assert None not in (tested[0], tested[-1])
    assert tested[1:-1] == [None] * (len(stages) - 2)
    assert tested[-1] == figures["test_accuracy"]
    validated = [s["val_accuracy"] for s in stages]
    return [figures["test_accuracy"], figures["val_accuracy"], tested[0], *validated]


def test_writes_markdown_and_json_with_every_section(smoke_report) -> None:
    out, report = smoke_report
    markdown = (out / "engine.md").read_text()
    for heading in ("ADMM vs one-shot", "Joint prune + quantize", "Epoch time", "--smoke"):
        assert heading in markdown
    for key in (
        "command",
        "date",
        "machine",
        "config",
        "dense",
        "seeds",
        "comparison",
        "joint",
        "epoch_timing",
    ):
        assert key in report
    assert report["machine"]["torch_threads"] == 2 and report["machine"]["device"] == "cpu"
    assert {c["targets"] for c in report["comparison"]} == {"paper", "harsh"}
    assert [r["seed"] for r in report["seeds"]] == report["config"]["seeds"]
    assert len(report["seeds"]) >= 2


def test_comparison_hits_the_targets_with_sane_figures(smoke_report) -> None:
    _, report = smoke_report
    for run in report["seeds"]:
        assert 0 <= run["dense"]["test_accuracy"] <= 1
        for c in run["comparison"]:
            assert set(c["methods"]) == {"admm", "one_shot"}
            assert sum(c["epochs"]["admm"]) == sum(c["epochs"]["one_shot"])
            for m in c["methods"].values():
                assert all(0 <= a <= 1 for a in _accuracies(m))
                assert m["nonzeros"] == c["target_nonzeros"]
                assert m["dense_test_accuracy"] == run["dense"]["test_accuracy"]
                assert m["accuracy_drop"] == pytest.approx(
                    m["dense_test_accuracy"] - m["test_accuracy"]
                )
                assert m["weight_ratio_no_index"] >= m["weight_ratio_with_index"] > 1
                assert m["wall_seconds"] > 0


def test_comparison_means_recompute_over_seeds(smoke_report) -> None:
    _, report = smoke_report
    for i, c in enumerate(report["comparison"]):
        per_seed = [run["comparison"][i] for run in report["seeds"]]
        for method, figures in c["methods"].items():
            values = [p["methods"][method]["test_accuracy"] for p in per_seed]
            assert figures["test_accuracy"]["values"] == values
            assert figures["test_accuracy"]["mean"] == pytest.approx(statistics.mean(values))
            assert figures["test_accuracy"]["std"] == pytest.approx(statistics.stdev(values))
        diff = [
            p["methods"]["admm"]["test_accuracy"] - p["methods"]["one_shot"]["test_accuracy"]
            for p in per_seed
        ]
        assert c["admm_minus_one_shot"]["mean"] == pytest.approx(statistics.mean(diff))


def test_joint_pipeline_is_quantized_and_its_file_matches_the_accounting(smoke_report) -> None:
    _, report = smoke_report
    j = report["joint"]
    assert all(0 <= a <= 1 for a in _accuracies(j))
    assert [s["name"] for s in j["stages"]] == [
        "dense",
        "admm_prune",
        "retrain",
        "admm_quantize",
        "quant_retrain",
    ]
    assert j["nonzeros"] == j["target_nonzeros"]
    for layer in j["layers"]:
        assert layer["nonzeros"] == j["target_nonzeros"][layer["name"]]
        assert 1 <= layer["distinct"] <= 2 ** layer["bits"]
    assert j["weight_ratio_no_index"] > j["weight_ratio_with_index"] > 1
    p = j["packed"]
    assert p["file_bytes"] == p["header_bytes"] + p["payload_bytes"]
    padding = p["payload_bytes"] - p["accounted_bytes"]
    assert 0 <= padding < p["weight_streams"]  # each weight stream pads to a whole byte


def test_epoch_timing_reports_medians_and_ratio(smoke_report) -> None:
    _, report = smoke_report
    t = report["epoch_timing"]
    assert len(t["plain_seconds"]) == len(t["admm_seconds"]) >= 2
    assert t["plain_median"] > 0 and t["admm_median"] > 0
    assert t["ratio"] == pytest.approx(t["admm_median"] / t["plain_median"])
