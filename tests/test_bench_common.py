"""The benchmark harness (benchmarks/common.py), in-process: the command line, the run, the
figures, and the one hypervolume, checked against Optuna's; and the start-up benchmark's smoke
run, which checks that no ``--help`` loads torch or MLflow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import create_trial

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402


def _optuna_hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Optuna's own figure: the last point of its public hypervolume history plot."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "maximize"])
    for x, y in points:
        study.add_trial(create_trial(values=[x, y]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fig = optuna.visualization.plot_hypervolume_history(study, reference_point=np.array(ref))
    return float(fig.data[0].y[-1])


@pytest.mark.parametrize("seed", range(5))
def test_hypervolume_matches_optunas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = [(float(x), float(y)) for x, y in rng.uniform(-1, 1, size=(25, 2))]
    points += points[:3]  # repeated points add nothing
    ref = (0.5, -0.5)
    assert common.hypervolume_2d(points, ref) == pytest.approx(_optuna_hypervolume(points, ref))


def test_pareto_indices_are_optunas_front() -> None:
    rng = np.random.default_rng(7)
    points = [(float(x), float(y)) for x, y in rng.integers(0, 6, size=(30, 2))]
    study = optuna.create_study(directions=["minimize", "maximize"])
    for x, y in points:
        study.add_trial(create_trial(values=[x, y]))
    front = {tuple(t.values) for t in study.best_trials}
    mine = common.pareto_indices(points)
    assert {points[i] for i in mine} == front and len(mine) == len(front)
    assert [points[i][0] for i in mine] == sorted(points[i][0] for i in mine)


def test_argument_parser_and_sized_resolve_smoke_and_full() -> None:
    p = common.argument_parser("Title.\n\nMore.", threads=True)
    p.add_argument("--trials", type=int)
    a = p.parse_args(["--smoke", "--out", "/tmp/x"])
    assert p.description == "Title." and a.out == Path("/tmp/x") and a.threads >= 1
    assert common.sized(a, {"trials": 2}, {"trials": 50}) == {"trials": 2}
    a = p.parse_args(["--trials", "7"])
    assert a.out == common.RESULTS and not a.smoke
    assert common.sized(a, {"trials": 2}, {"trials": 50}) == {"trials": 7}


def test_main_writes_the_report_and_the_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = common.argument_parser("A benchmark.")

    def run(opts, command: str) -> dict:
        report = common.Clock(command, "cpu").finish()
        return {**report, "value": 3}

    def plot(report: dict, png: Path) -> None:
        fig, ax = common.figure(3, 2)
        ax.plot([0, 1], [0, report["value"]], color=common.COLORS[0])
        common.save_figure(fig, png)

    code = common.main(
        ["--out", str(tmp_path)],
        script="bench_toy.py",
        parse=parser.parse_args,
        run=run,
        render=lambda r: f"# toy {r['value']}\n",
        plot=plot,
    )
    assert code == 0
    report = json.loads((tmp_path / "toy.json").read_text())
    assert report["command"] == f"python benchmarks/bench_toy.py --out {tmp_path}"
    assert report["value"] == 3 and report["total_seconds"] >= 0
    assert (tmp_path / "toy.md").read_text() == "# toy 3\n" == capsys.readouterr().out[:8]
    assert (tmp_path / "toy.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_startup_smoke_times_every_help_and_loads_nothing_heavy(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_startup.py"), "--smoke"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "startup.json").read_text())
    from admmsearch.cli import main

    commands = [r["command"] for r in report["commands"]]
    assert commands == [
        "admmsearch --help",
        *(f"admmsearch {c} --help" for c in sorted(main.commands)),
    ]
    for row in report["commands"]:
        assert row["heavy_modules"] == [], row  # neither torch nor MLflow, nor the others
        assert len(row["seconds"]) == 1 and row["median"] > 0
    assert "# Start-up" in (tmp_path / "startup.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir()
    or shutil.which("arm-none-eabi-gcc") is None,
    reason="needs Fashion-MNIST and arm-none-eabi-gcc (apt-get install dataset-fashion-mnist "
    "gcc-arm-none-eabi; .ci/run does)",
)
def test_c_inference_smoke_measures_three_networks_both_ways(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_c_inference.py"), "--smoke"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "c_inference.json").read_text())
    assert [r["network"] for r in report["networks"]] == [
        "digits CNN",
        "LeNet-5",
        "separable ResNet",
    ]
    for row in report["networks"]:
        streaming, decoded = row["sizes"]["cortex-m4 streaming"], row["sizes"]["cortex-m4 decoded"]
        assert streaming["ram_bytes"] == 4 * row["arena_floats"] < decoded["ram_bytes"]
        assert streaming["const_bytes"] >= row["payload_bytes"]
        accuracy = f"accuracy {row['torch_accuracy']:.4f}"
        assert accuracy in row["c_accuracy_line_streaming"]
        assert accuracy in row["c_accuracy_line_decoded"]
        assert row["microseconds_streaming"] > 0 and row["microseconds_decoded"] > 0
    assert "# C inference" in (tmp_path / "c_inference.md").read_text()
