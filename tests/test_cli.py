"""The command line: in-process with click's runner, and once as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from admmsearch.cli import main


def test_compress_writes_packed_model_and_reports_json(tmp_path) -> None:
    out = tmp_path / "m.admm"
    result = CliRunner().invoke(
        main, ["compress", "--keep", "0.2", "--bits", "4", "--out", str(out), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["file_bytes"] == out.stat().st_size
    assert report["stages"][0]["stage"] == "dense"
    assert report["stages"][-1]["test_accuracy"] > 0.8
    accounted = report["storage"]["model_stored_bits"] / 8
    assert accounted <= report["file_bytes"] - report["header_bytes"] < accounted + 8


def test_compress_with_plan_file(tmp_path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("layers:\n  fc1: {keep: 0.05, bits: 3}\n  conv2: {keep: 0.5, clusters: 4}\n")
    result = CliRunner().invoke(
        main, ["compress", "--plan", str(plan), "--out", str(tmp_path / "m.admm")]
    )
    assert result.exit_code == 0, result.output
    assert "smaller without indices" in result.stdout


def test_bad_plan_is_one_line_error(tmp_path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("layers:\n  fc1: {keep: 1.5}\n")
    result = CliRunner().invoke(main, ["compress", "--plan", str(plan)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {plan}: layers.fc1.keep: must be in (0, 1], got 1.5"


@pytest.mark.slow
def test_unknown_layer_and_dataset_name_the_fault_as_subprocess(tmp_path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("layers:\n  fc9: {keep: 0.5}\n")
    run = subprocess.run(
        [sys.executable, "-m", "admmsearch", "compress", "--plan", str(plan)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 2
    assert "fc9" in run.stderr and "valid: conv1, conv2, fc1, fc2" in run.stderr
    assert "Traceback" not in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "admmsearch", "compress", "--dataset", "nosuch"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 2 and "unknown dataset 'nosuch'" in run.stderr


@pytest.mark.slow
def test_run_study_as_subprocess_prints_the_front(tmp_path) -> None:
    import yaml

    study = yaml.safe_load(open("studies/digits-quick.yaml"))
    study.update(name="cli-run", enqueue=[], budget={"trials": 2})
    study["dataset"] = {"name": "digits", "limit_train": 500}
    study["dense"]["train"]["epochs"] = 6
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    env = {**os.environ, "ADMMSEARCH_STORAGE": f"sqlite:///{tmp_path / 'o.db'}"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "admmsearch",
            "run",
            str(path),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Pareto front of cli-run" in run.stdout and "storage_kib" in run.stdout
    assert (tmp_path / "o.db").exists()
