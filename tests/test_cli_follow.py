"""A study you can follow (issue 22): progress on stderr from the first second, plain lines when
stderr is not a terminal, one line per finished trial whatever the number of workers, a closing
summary that says why the run stopped, and `check` before any training, as fast as reading the
file when the file is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ADMMSEARCH = Path(sys.executable).parent / "admmsearch"

TINY = {
    "name": "tiny",
    "model": "digits-cnn",
    "dataset": {"name": "digits", "limit_train": 400},
    "dense": {"train": {"epochs": 2, "lr": 0.05, "batch_size": 64}},
    "pipeline": {
        "admm_prune": {"train": {"epochs": 1, "batch_size": 64}, "rho": {"updates": 2}},
        "retrain": {"epochs": 1, "batch_size": 64},
        "admm_quantize": None,
        "quant_retrain": None,
    },
    "search": {
        "keep": {"low": 0.1, "high": 1.0, "log": True},
        "bits": None,
        "seed_from_sensitivity": False,
    },
    "sampler": {"name": "random"},
    "budget": {"trials": 4},
}


def _study(folder: Path, **changes) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    env["ADMMSEARCH_STORAGE"] = f"sqlite:///{folder / 'optuna.db'}"
    return {**env, "OMP_NUM_THREADS": "1"}


def _admmsearch(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed command run to its end in ``folder``, its output captured."""
    return subprocess.run(
        [str(ADMMSEARCH), *args],
        cwd=folder,
        env=_env(folder),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _timed_lines(args: list[str], folder: Path) -> tuple[int, list[tuple[float, str]], str]:
    """Run the command; each stderr line with the seconds after the start it came."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [str(ADMMSEARCH), *args],
        cwd=folder,
        env=_env(folder),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines = [(time.monotonic() - start, line.rstrip("\n")) for line in proc.stderr]
    out = proc.stdout.read()
    return proc.wait(timeout=600), lines, out


@pytest.mark.slow
def test_two_workers_show_every_phase_as_it_happens_in_plain_lines(tmp_path) -> None:
    """cases/45: `--jobs 2` printed nothing for a whole study. Now the dense training by epoch,
    then a line per finished trial from either worker, then the closing summary."""
    _study(tmp_path)
    code, lines, out = _timed_lines(["run", "tiny.yaml", "--jobs", "2"], tmp_path)
    assert code == 0, "\n".join(text for _, text in lines)
    texts = [text for _, text in lines]
    dense = [t for t in texts if t.startswith("dense model: epoch ")]
    assert dense[0].startswith("dense model: epoch 1/2, loss ") and len(dense) == 2
    trial_lines = [t for t in texts if t.startswith("trial ")]
    assert sorted(int(t.split()[1]) for t in trial_lines) == [0, 1, 2, 3]
    assert all("[" in t and "trials]" in t for t in trial_lines)
    assert not any("\r" in t or "%|" in t for t in texts)  # no bar drawn into a pipe
    assert any("stopped: budget spent (4 of 4 trials)" in t for t in texts)
    first = next(s for s, t in lines if t.startswith("dense model: epoch 1/"))
    assert first < 60  # the first phase shows from its first epoch, not at the end
    assert "Pareto front of tiny" in out


@pytest.mark.slow
def test_the_summary_says_why_a_run_stopped(tmp_path) -> None:
    _study(tmp_path, budget={"trials": 2})
    code, lines, _ = _timed_lines(["run", "tiny.yaml"], tmp_path)
    assert code == 0 and any("stopped: budget spent (2 of 2 trials)" in t for _, t in lines)
    code, lines, out = _timed_lines(["run", "tiny.yaml"], tmp_path)  # a spent study again
    texts = [t for _, t in lines]
    assert code == 0 and "tiny: budget spent (2 of 2 trials), nothing to run" in texts
    assert not any(t.startswith("trial ") for t in texts) and "Pareto front of tiny" in out
    code, lines, _ = _timed_lines(
        ["run", "tiny.yaml", "--trials", "50", "--timeout", "1"], tmp_path
    )
    assert code == 0, lines
    assert any("stopped: --timeout (1 s) with budget left" in t for _, t in lines), lines


def test_check_says_what_a_study_will_do_and_creates_nothing(tmp_path) -> None:
    _study(tmp_path)
    run = _admmsearch(tmp_path, "check", "tiny.yaml", "--format", "json")
    assert run.returncode == 0, run.stderr
    done = json.loads(run.stdout)
    assert [u["unit"] for u in done["units"]] == ["conv1", "conv2", "fc1", "fc2"]
    assert [u["weights"] for u in done["units"]] == [144, 4608, 32768, 640]
    assert done["samples"]["train"] == 400 and done["samples"]["test"] == 360
    assert done["budget"] == {"trials": 4} and done["epochs"] == 4 * 2 + 2
    assert done["seconds"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # nothing created


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bogus": 1}, "error: tiny.yaml: bogus: unknown field"),
        ({"budget": {"trials": 0}}, "error: tiny.yaml: budget.trials: must be >= 1, got 0"),
        ({"layers": ["nosuch*"]}, "error: tiny.yaml: layers: layer pattern(s) 'nosuch*' match no"),
        ({"dataset": "nosuch.npz"}, "error: tiny.yaml: dataset"),
    ],
    ids=["unknown-field", "bad-value", "no-layer", "missing-data"],
)
def test_check_refuses_what_run_refuses_with_the_same_line(tmp_path, change, message) -> None:
    _study(tmp_path, **change)
    said = {}
    for command in ("check", "run"):
        done = _admmsearch(tmp_path, command, "tiny.yaml")
        assert done.returncode == 2, done.stderr
        said[command] = done.stderr.strip().splitlines()[-1]
    assert said["check"] == said["run"] and said["check"].startswith(message), said


def test_a_wrong_study_file_is_refused_without_loading_torch_optuna_or_mlflow(tmp_path) -> None:
    _study(tmp_path, bogus=1)
    probe = (
        "import sys\nfrom admmsearch.cli import main\n"
        "try:\n    main(['check', 'tiny.yaml'])\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = [m for m in ('torch', 'optuna', 'mlflow') if m in sys.modules]\n"
        "print(code, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "2 []", done.stdout + done.stderr


def test_a_trials_line_reads_its_constraints_from_optunas_dict() -> None:
    """Optuna keeps a trial's constraint values by name; the line says feasible or not (it
    raised TypeError comparing the names with 0, stopping every run after its first trial)."""
    from optuna.trial import create_trial

    from admmsearch.console import trial_line

    metrics = {"val_accuracy": 0.9653, "storage_bits_with_index": 29640}
    lines = [
        trial_line(
            create_trial(
                values=[0.9653, 29640], user_attrs={"metrics": metrics}, constraints=constraints
            )
        )
        for constraints in ({"accuracy_drop": -0.03}, {"accuracy_drop": 0.01})
    ]
    assert lines == [
        "trial -1 (sampled): val 0.9653, 3.62 KiB, feasible",
        "trial -1 (sampled): val 0.9653, 3.62 KiB, infeasible",
    ]
