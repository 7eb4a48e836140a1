"""The installed ``admmsearch`` command on a real quick study, as a user drives it: run, list,
show, pareto, export (by trial and by policy) and compress with the exported settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ADMMSEARCH = Path(sys.executable).parent / "admmsearch"
pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 600):
    return subprocess.run(
        [str(ADMMSEARCH), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A quick study of 3 trials, run with the installed command into its own stores."""
    work = tmp_path_factory.mktemp("cli-study")
    study = yaml.safe_load((ROOT / "studies" / "digits-quick.yaml").read_text())
    study.update(name="quick", budget={"trials": 3})
    study["dataset"] = {"name": "digits", "limit_train": 500}
    study["dense"]["train"]["epochs"] = 6
    (work / "quick.yaml").write_text(yaml.safe_dump(study))
    env = {
        **os.environ,
        "ADMMSEARCH_STORAGE": f"sqlite:///{work / 'optuna.db'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
    }
    run = _run(["run", "quick.yaml"], work, env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "val_accuracy" in run.stdout
    assert " INFO mlflow" not in run.stderr  # MLflow's chatter on a new store stays quiet
    return work, env


def test_list_shows_the_study_with_its_counts(finished) -> None:
    work, env = finished
    run = _run(["list", "--format", "json"], work, env)
    assert run.returncode == 0, run.stderr
    (row,) = json.loads(run.stdout)
    assert row["study"] == "quick" and row["state"] == "finished"
    assert row["finished"] == 3 and row["complete"] + row["fail"] + row["pruned"] == 3
    assert row["front"] >= 1 and 0 < row["best_val_accuracy"] <= 1


def test_show_by_name_and_by_file(finished) -> None:
    work, env = finished
    by_name, by_file = _run(["show", "quick"], work, env), _run(["show", "quick.yaml"], work, env)
    assert by_name.returncode == 0 and by_file.returncode == 0, by_name.stderr + by_file.stderr
    assert by_name.stdout == by_file.stdout
    assert "3 of 3 trials" in by_name.stdout and "Pareto front:" in by_name.stdout
    assert "digits-cnn / digits" in by_name.stdout


def test_pareto_as_table_csv_and_plot(finished) -> None:
    import pandas as pd

    work, env = finished
    table = _run(["pareto", "quick"], work, env)
    assert table.returncode == 0 and "storage_kib" in table.stdout
    csv = _run(["pareto", "quick", "--out", "front.csv"], work, env)
    assert csv.returncode == 0, csv.stderr
    front = pd.read_csv(work / "front.csv")
    assert len(front) >= 1 and front["feasible"].all()
    # a front: no row is at least as good on both axes and better on one than another row
    for _, a in front.iterrows():
        for _, b in front.iterrows():
            assert not (
                b.val_accuracy >= a.val_accuracy
                and b.storage_kib <= a.storage_kib
                and (b.val_accuracy > a.val_accuracy or b.storage_kib < a.storage_kib)
            )
    plot = _run(["pareto", "quick", "--out", "front.png"], work, env)
    assert plot.returncode == 0, plot.stderr
    assert (work / "front.png").read_bytes()[:4] == b"\x89PNG"
    assert not (work / "front.html").exists()  # the 4.8 MB page only when asked for
    page = _run(["pareto", "quick", "--out", "front.html"], work, env)
    assert page.returncode == 0 and (work / "front.html").stat().st_size > 10_000
    records = json.loads(_run(["pareto", "quick", "--format", "json"], work, env).stdout)
    for record in records:  # each trial's per-layer settings, as data and as text
        assert set(record["settings"]) == {"conv1", "conv2", "fc1", "fc2"}
        assert record["layers"].startswith("conv1 ") and record["origin"]


def test_export_by_trial_then_compress_reproduces_it(finished) -> None:
    work, env = finished
    front = json.loads(_run(["pareto", "quick", "--format", "json"], work, env).stdout)
    number = front[0]["trial"]
    export = _run(["export", "quick", "--trial", str(number), "--out", "best.yaml"], work, env)
    assert export.returncode == 0, export.stderr
    assert f"wrote best.yaml: trial {number} (as asked): val accuracy" in export.stdout
    settings = yaml.safe_load((work / "best.yaml").read_text())
    assert settings["trial"] == number
    assert set(settings["layers"]) == {"conv1", "conv2", "fc1", "fc2"}
    assert "start" in settings["pipeline"]["admm_prune"]["rho"]
    exported = settings["metrics"]

    run = _run(["compress", "best.yaml", "--out", "best.admm", "--format", "json"], work, env)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    assert got["trial"] == number
    m = got["metrics"]
    # same seeds, same machine: the figures come back within run-to-run noise
    assert abs(m["val_accuracy"] - exported["val_accuracy"]) <= 0.02
    assert abs(m["test_accuracy"] - exported["test_accuracy"]) <= 0.02
    assert abs(m["storage_bits_with_index"] / exported["storage_bits_with_index"] - 1) <= 0.02
    assert got["file_bytes"] == (work / "best.admm").stat().st_size
    payload = got["file_bytes"] - got["header_bytes"]
    assert m["storage_bits_with_index"] == 8 * got["file_bytes"]  # storage is the whole file
    assert m["payload_bits"] / 8 <= payload < m["payload_bits"] / 8 + 8


def test_export_by_policy_picks_the_smallest_within_the_drop(finished) -> None:
    work, env = finished
    run = _run(
        [
            "export",
            "quick",
            "--policy",
            "max-compression",
            "--max-drop",
            "0.05",
            "--out",
            "policy.json",
        ],
        work,
        env,
    )
    assert run.returncode == 0, run.stderr
    chosen = json.loads((work / "policy.json").read_text())
    trials = json.loads(_run(["pareto", "quick", "--format", "json"], work, env).stdout)
    within = [t for t in trials if t["accuracy_drop"] <= 0.05]
    assert chosen["trial"] == min(within, key=lambda t: t["storage_kib"])["trial"]
    assert chosen["metrics"]["accuracy_drop"] <= 0.05

    run = _run(
        ["export", "quick", "--policy", "max-accuracy", "--max-storage-kib", "1000"], work, env
    )
    assert run.returncode == 0, run.stderr
    best = yaml.safe_load(run.stdout)
    assert best["metrics"]["val_accuracy"] == pytest.approx(
        max(t["val_accuracy"] for t in trials), abs=1e-4
    )


def test_export_by_default_takes_the_smallest_trial_within_the_studys_drop(finished) -> None:
    work, env = finished
    export = _run(["export", "quick", "--out", "default.yaml"], work, env)
    assert export.returncode == 0, export.stderr
    assert "accuracy drop <= 0.05, the study's max_accuracy_drop" in export.stdout
    chosen = yaml.safe_load((work / "default.yaml").read_text())["trial"]
    front = json.loads(_run(["pareto", "quick", "--format", "json"], work, env).stdout)
    within = [r for r in front if r["accuracy_drop"] <= 0.05]
    assert chosen == min(within, key=lambda r: r["storage_kib"])["trial"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nosuch"], "no study named 'nosuch'"),
        (["export", "nosuch", "--trial", "0"], "no study named 'nosuch'"),
        (["run", "missing.yaml"], "missing.yaml: study file not found"),
        (
            ["export", "quick", "--policy", "max-accuracy", "--max-storage-kib", "0.01"],
            "no completed trial of study 'quick' has storage <= 0.01 KiB",
        ),
        (["export", "quick", "--trial", "99"], "has no trial 99"),
        (["export", "quick", "--trial", "0", "--policy", "max-accuracy"], "not both"),
        (["pareto", "quick", "--format", "xml"], "Invalid value for '--format'"),
        (["compress", "quick.yaml"], "not an admmsearch settings file"),
    ],
)
def test_errors_are_one_line_without_traceback(finished, args, message) -> None:
    work, env = finished
    run = _run(args, work, env)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], run.stderr
    assert "Traceback" not in run.stderr
