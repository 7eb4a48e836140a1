"""A battery of malformed inputs, as users make them, against the command line.

Every one must be refused with exit code 2 and one ``error:`` line naming the field or file at
fault, without a traceback, before any training, and without changing anything already stored:
the existing study's Optuna and MLflow stores stay byte for byte the same and no folder appears.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from admmsearch.cli import main
from admmsearch.models import create_model

ADMMSEARCH = Path(sys.executable).parent / "admmsearch"

BASE = {
    "name": "bad",
    "seed": 0,
    "model": "digits-cnn",
    "dataset": {"name": "digits", "limit_train": 200},
    "dense": {"train": {"epochs": 2, "lr": 0.05, "batch_size": 32}},
    "pipeline": {
        "admm_prune": {"train": {"epochs": 1, "batch_size": 64}},
        "retrain": {"epochs": 1, "batch_size": 64},
        "admm_quantize": {"train": {"epochs": 1, "batch_size": 64}},
        "quant_retrain": {"train": {"epochs": 1, "batch_size": 64}, "shares": [1.0]},
    },
    "search": {"keep": {"low": 0.2, "high": 1.0}, "bits": {"choices": [2, 4, 8]}},
    "budget": {"trials": 1},
}

USER_CODE = """
import math
from torch import nn

CONSTANT = 3

def boom(num_classes):
    raise RuntimeError("my net needs a GPU")

def not_a_module(num_classes):
    return {"layers": num_classes}

def no_weights(num_classes):
    return nn.Sequential(nn.Flatten(), nn.ReLU())

def wrong_width(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))

def no_data():
    raise ValueError("the data server is down")

def a_string():
    return "x_train.npy"
"""


def study_yaml(**changes: object) -> str:
    return yaml.safe_dump({**BASE, **changes})


def npz(**over: np.ndarray) -> Callable[[Path], None]:
    """A small valid .npz of 3 classes, with some arrays replaced."""

    def write(path: Path) -> None:
        rng = np.random.default_rng(0)
        arrays = {
            "x_train": rng.normal(size=(60, 1, 8, 8)).astype(np.float32),
            "y_train": np.arange(60) % 3,
            "x_test": rng.normal(size=(20, 1, 8, 8)).astype(np.float32),
            "y_test": np.arange(20) % 3,
        }
        arrays.update(over)
        np.savez(path, **arrays)

    return write


def nan_images() -> np.ndarray:
    x = np.zeros((60, 1, 8, 8), np.float32)
    x[3, 0, 2, 2] = np.nan
    return x


def stray_label() -> np.ndarray:
    y = np.arange(60) % 3
    y[7] = 1_000_000
    return y


def pickled_module(path: Path) -> None:
    torch.save(create_model("digits-cnn", num_classes=10, input_shape=(1, 8, 8)), path)


def garbage(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 this is not a zip archive at all" * 3)


def alias_bomb(path: Path) -> None:
    """cases/30: 9 ** 8 strings in ``layers`` from a few lines of YAML anchors and aliases."""
    lines = ["name: bomb", "model: digits-cnn", "dataset: digits", "anchors:"]
    lines.append("  x0: &a0 [" + ",".join(['"lol"'] * 9) + "]")
    for i in range(1, 9):
        lines.append(f"  x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    path.write_text("\n".join([*lines, "layers: *a8", ""]))


def binary(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")


def digits_npz(**over: object) -> dict[str, object]:
    return {"dataset": {"name": "data.npz", **over}}


# id: (files to write, command line, text the error line must contain)
CASES: dict[str, tuple[dict[str, str | Callable[[Path], None]], list[str], str]] = {
    # --- data, checked when loaded ---
    "data-nan": (
        {"data.npz": npz(x_train=nan_images()), "s.yaml": study_yaml(**digits_npz())},
        ["run", "s.yaml"],
        "data.npz: x_train has 1 NaN or infinite value",
    ),
    "data-stray-label": (
        {"data.npz": npz(y_train=stray_label()), "s.yaml": study_yaml(**digits_npz())},
        ["run", "s.yaml"],
        "labels go up to 1000000",
    ),
    "data-label-over-num-classes": (
        {"data.npz": npz(), "s.yaml": study_yaml(**digits_npz(num_classes=2))},
        ["run", "s.yaml"],
        "label 2 is outside 0..1",
    ),
    "data-one-sample": (
        {
            "data.npz": npz(x_train=np.zeros((1, 1, 8, 8), np.float32), y_train=np.array([0])),
            "s.yaml": study_yaml(**digits_npz()),
        },
        ["run", "s.yaml"],
        "1 training sample(s) are too few for val_fraction 0.1",
    ),
    "data-one-class": (  # cases/33: refused only after the dense model trained
        {
            "data.npz": npz(y_train=np.zeros(60, np.int64), y_test=np.zeros(20, np.int64)),
            "s.yaml": study_yaml(**digits_npz()),
        },
        ["run", "s.yaml"],
        "dataset 'data.npz': y_train holds a single class (0); a classifier needs at least 2",
    ),
    "data-channels-last": (
        {
            "data.npz": npz(
                x_train=np.zeros((60, 8, 8, 3), np.float32),
                x_test=np.zeros((20, 8, 8, 3), np.float32),
            ),
            "s.yaml": study_yaml(**digits_npz()),
        },
        ["run", "s.yaml"],
        "looks channels-last (N, H, W, C)",
    ),
    "data-loader-raises": (
        {"badcode.py": USER_CODE, "s.yaml": study_yaml(dataset="badcode:no_data")},
        ["run", "s.yaml"],
        "dataset 'badcode:no_data' raised ValueError: the data server is down",
    ),
    "data-loader-not-callable": (
        {"badcode.py": USER_CODE, "s.yaml": study_yaml(dataset="badcode:CONSTANT")},
        ["run", "s.yaml"],
        "dataset 'badcode:CONSTANT' is a int, not a function",
    ),
    "data-loader-wrong-type": (
        {"badcode.py": USER_CODE, "s.yaml": study_yaml(dataset="badcode:a_string")},
        ["run", "s.yaml"],
        "dataset 'badcode:a_string' must return a DataSplits",
    ),
    # --- user code for the model ---
    "model-raises": (
        {"badcode.py": USER_CODE, "s.yaml": study_yaml(model="badcode:boom")},
        ["run", "s.yaml"],
        "model 'badcode:boom' raised RuntimeError: my net needs a GPU",
    ),
    "model-not-callable": (
        {"badcode.py": USER_CODE, "s.yaml": study_yaml(model="badcode:CONSTANT")},
        ["run", "s.yaml"],
        "model 'badcode:CONSTANT' is a int, not a function or class",
    ),
    "model-wrong-type": (
        {"badcode.py": USER_CODE, "s.yaml": study_yaml(model="badcode:not_a_module")},
        ["run", "s.yaml"],
        "model 'badcode:not_a_module' returned dict, not a torch.nn.Module",
    ),
    "model-no-compressible-layer": (
        {"badcode.py": USER_CODE, "s.yaml": study_yaml(model="badcode:no_weights")},
        ["run", "s.yaml"],
        "model 'badcode:no_weights' has no layer admmsearch can compress",
    ),
    "model-fails-on-data": (
        {"badcode.py": USER_CODE, "s.yaml": study_yaml(model="badcode:wrong_width")},
        ["run", "s.yaml"],
        "model 'badcode:wrong_width' fails on a batch of shape (2, 1, 8, 8)",
    ),
    "model-module-missing": (
        {"s.yaml": study_yaml(model="nosuchmodule:build")},
        ["run", "s.yaml"],
        "no module named 'nosuchmodule'",
    ),
    "model-module-syntax-error": (
        {"broken.py": "def build(:\n", "s.yaml": study_yaml(model="broken:build")},
        ["run", "s.yaml"],
        "model 'broken:build': importing it failed: SyntaxError",
    ),
    "model-file-missing": (
        {"s.yaml": study_yaml(model="nets/none.py:build")},
        ["run", "s.yaml"],
        "no file 'nets/none.py'",
    ),
    # --- settings checked before work starts ---
    "enqueue-not-a-choice": (
        {"s.yaml": study_yaml(enqueue=[{"bits.fc1": 4.5}])},
        ["run", "s.yaml"],
        "enqueue[0].bits.fc1: 4.5 is outside choices [2, 4, 8]",
    ),
    "enqueue-off-the-step": (
        {
            "s.yaml": study_yaml(
                search={"keep": {"low": 0.2, "high": 1.0, "step": 0.2}, "bits": 4},
                enqueue=[{"keep.fc1": 0.3}],
            )
        },
        ["run", "s.yaml"],
        "enqueue[0].keep.fc1: 0.3 is outside range [0.2, 1.0] (in steps of 0.2)",
    ),
    "dense-diverges": (
        {"s.yaml": study_yaml(dense={"train": {"epochs": 1, "lr": 1e12, "batch_size": 32}})},
        ["run", "s.yaml"],
        "dense model: training diverged",
    ),
    # --- files admmsearch reads ---
    "study-not-text": ({"s.yaml": binary}, ["run", "s.yaml"], "s.yaml: not a UTF-8 text file"),
    "plan-not-text": (
        {"plan.yaml": binary},
        ["compress", "--plan", "plan.yaml"],
        "plan.yaml: not a UTF-8 text file",
    ),
    "plan-repeated-key": (
        {"plan.yaml": "layers:\n  fc1: {keep: 0.5}\n  fc1: {keep: 0.2}\n"},
        ["compress", "--plan", "plan.yaml"],
        "plan.yaml: not valid YAML: line 3, column 3: key 'fc1' appears twice",
    ),
    "plan-structured-keep-keeps-no-filter": (  # cases/34: refused after 15 dense epochs
        {"plan-struct.yaml": "layers: {conv1: {keep: 0.01, structured: true}}\n"},
        ["compress", "--plan", "plan-struct.yaml"],
        "plan-struct.yaml: layers.conv1.keep: keep=0.01 of 16 output channels keeps nothing; "
        "at least one must survive (raise keep to at least 0.0625)",
    ),
    "plan-bad-field": (
        {"plan.yaml": "layers:\n  fc1: {keep: 2}\n"},
        ["compress", "--plan", "plan.yaml"],
        "plan.yaml: layers.fc1.keep: must be in (0, 1]",
    ),
    "settings-not-text": (
        {"best.yaml": binary},
        ["compress", "best.yaml"],
        "best.yaml: not a UTF-8 text file",
    ),
    "checkpoint-pickled-module": (
        {"ckpt.pt": pickled_module, "s.yaml": study_yaml(dense={"checkpoint": "ckpt.pt"})},
        ["run", "s.yaml"],
        "dense.checkpoint ckpt.pt: it holds pickled Python objects",
    ),
    "checkpoint-garbage": (
        {"ckpt.pt": garbage, "s.yaml": study_yaml(dense={"checkpoint": "ckpt.pt"})},
        ["run", "s.yaml"],
        "dense.checkpoint ckpt.pt: not a file written by torch.save",
    ),
    "checkpoint-empty": (
        {"ckpt.pt": "", "s.yaml": study_yaml(dense={"checkpoint": "ckpt.pt"})},
        ["run", "s.yaml"],
        "dense.checkpoint ckpt.pt: the file is empty",
    ),
    "checkpoint-missing": (
        {"s.yaml": study_yaml(dense={"checkpoint": "nope.pt"})},
        ["run", "s.yaml"],
        "dense.checkpoint nope.pt: no such file",
    ),
    # --- stores and names ---
    "storage-folder-missing": (
        {"s.yaml": study_yaml()},
        ["run", "s.yaml", "--storage", "sqlite:///nofolder/optuna.db"],
        "storage sqlite:///nofolder/optuna.db: folder nofolder does not exist",
    ),
    "tracking-folder-missing": (
        {"s.yaml": study_yaml()},
        ["run", "s.yaml", "--tracking-uri", "sqlite:///nofolder/mlflow.db"],
        "tracking URI sqlite:///nofolder/mlflow.db: folder nofolder does not exist",
    ),
    "name-dotdot": ({"s.yaml": study_yaml(name="..")}, ["run", "s.yaml"], "name: must be"),
    "pareto-out-extension": ({}, ["pareto", "good", "--out", "front.xlsx"], "'--out'"),
    "pareto-out-folder-missing": (
        {},
        ["pareto", "good", "--out", "nofolder/front.csv"],
        "folder nofolder does not exist",
    ),
    "compress-out-folder-missing": (
        {},
        ["compress", "--out", "nofolder/model.admm"],
        "folder nofolder does not exist",
    ),
    "storage-is-a-text-file": (
        {"notes.db": "hello\n", "s.yaml": study_yaml()},
        ["list", "--storage", "sqlite:///notes.db"],
        "storage sqlite:///notes.db: cannot read it (file is not a database)",
    ),
    "export-out-folder-missing": (
        {},
        ["export", "good", "--trial", "0", "--out", "nofolder/best.yaml"],
        "folder nofolder does not exist",
    ),
    # --- cases/30, /39 and the smaller faults of issue 19 ---
    "yaml-alias-bomb": (
        {"s.yaml": alias_bomb},
        ["run", "s.yaml"],
        "s.yaml: its aliases (*name) expand it to more than 100,000 values",
    ),
    "step-does-not-divide-the-range": (
        {"s.yaml": study_yaml(search={"keep": {"low": 0.02, "high": 1.0, "step": 0.05}})},
        ["run", "s.yaml"],
        "search.keep: high 1.0 is not low + k * step (0.02 + k * 0.05); use high 0.97 or low 0.05",
    ),
    "objective-unknown": (
        {"s.yaml": study_yaml(objectives=["accuracy"])},
        ["run", "s.yaml"],
        "s.yaml: objectives[0]: must be one of val_accuracy, ",
    ),
    "enqueue-two-wrong-names": (
        {"s.yaml": study_yaml(enqueue=[{"keep.conv9": 0.5, "bits.fc9": 4}])},
        ["run", "s.yaml"],
        "enqueue[0].bits.fc9: is not a parameter; enqueue[0].keep.conv9: is not a parameter",
    ),
    # --- cases/31, /37: stores that clash, a constraint no trial can meet ---
    "tracking-uri-is-the-storage": (
        {"s.yaml": study_yaml()},
        [
            "run",
            "s.yaml",
            "--storage",
            "sqlite:///optuna.db",
            "--tracking-uri",
            "sqlite:///optuna.db",
        ],
        "tracking URI sqlite:///optuna.db is the study storage sqlite:///optuna.db: Optuna and "
        "MLflow each need a database of their own",
    ),
    "tracking-uri-is-an-optuna-database": (
        {"s.yaml": study_yaml()},
        [
            "run",
            "s.yaml",
            "--storage",
            "sqlite:///fresh.db",
            "--tracking-uri",
            "sqlite:///optuna.db",
        ],
        "tracking URI sqlite:///optuna.db is an Optuna database (it holds Optuna's tables)",
    ),
    "storage-is-an-mlflow-database": (
        {"s.yaml": study_yaml()},
        [
            "run",
            "s.yaml",
            "--storage",
            "sqlite:///mlruns/mlflow.db",
            "--tracking-uri",
            "sqlite:///fresh.db",
        ],
        "storage sqlite:///mlruns/mlflow.db is an MLflow tracking database",
    ),
    "storage-limit-below-any-file": (
        {"s.yaml": study_yaml(constraints={"max_storage_bits": 1000})},
        ["run", "s.yaml"],
        "constraints.max_storage_bits: 1000 is below the smallest packed file this study's model "
        "can have (",
    ),
    # 1-epoch stages at half length are 1 epoch too: promotions would repeat rung 0
    "rungs-that-add-nothing": (
        {"s.yaml": study_yaml(search={**BASE["search"], "rungs": {"eta": 2, "count": 2}})},
        ["run", "s.yaml"],
        "s.yaml: search.rungs: rung 1 would train exactly as rung 0 does (4 epochs: its "
        "retraining and quantization stages round to the same epochs), so its promotions would "
        "add nothing; give longer stages",
    ),
    # a trial of the pipeline as written trains 1 + 1 + 1 + 1 epochs
    "epoch-budget-below-one-trial": (
        {"s.yaml": study_yaml(budget={"epochs": 3})},
        ["run", "s.yaml"],
        "budget.epochs: 3 epochs pay for no trial: a trial trains 4",
    ),
    "epochs-option-below-one-trial": (
        {"s.yaml": study_yaml()},
        ["run", "s.yaml", "--epochs", "2"],
        "--epochs: 2 epochs pay for no trial",
    ),
    "check-epoch-budget-below-one-trial": (
        {"s.yaml": study_yaml(budget={"epochs": 3})},
        ["check", "s.yaml"],
        "budget.epochs: 3 epochs pay for no trial",
    ),
    "reused-name-other-objectives": (
        {"s.yaml": study_yaml(name="good", objectives=["val_accuracy"])},
        ["run", "s.yaml"],
        "study 'good' already exists in sqlite:///",
    ),
}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A folder with one finished study, ``good``, in its own Optuna and MLflow stores."""
    folder = tmp_path_factory.mktemp("bad-input")
    (folder / "mlruns").mkdir()
    env = {
        "ADMMSEARCH_STORAGE": f"sqlite:///{folder / 'optuna.db'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}",
    }
    (folder / "good.yaml").write_text(study_yaml(name="good"))
    result = _invoke(folder, env, ["run", "good.yaml"])
    assert result.exit_code == 0, result.stderr
    return folder, env


def _invoke(folder: Path, env: dict[str, str], args: list[str]):
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        return CliRunner().invoke(main, args, env=env)
    finally:
        os.chdir(cwd)


def _snapshot(folder: Path) -> tuple[dict[str, str], set[str]]:
    """Every stored file's hash (lock files aside) and every folder, under ``folder``."""
    files, folders = {}, set()
    for path in folder.rglob("*"):
        rel = str(path.relative_to(folder))
        if path.is_dir():
            folders.add(rel)
        elif not path.name.endswith(".lock"):
            files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files, folders


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_in_one_line_and_changes_nothing(work, case: str) -> None:
    folder, env = work
    files, args, expected = CASES[case]
    for name, content in files.items():
        path = folder / name
        if callable(content):
            content(path)
        else:
            path.write_text(content)
    before = _snapshot(folder)
    result = _invoke(folder, env, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.stdout)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert _snapshot(folder) == before
    assert not (folder / "nofolder").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_device_is_refused_before_anything(work) -> None:
    folder, env = work
    (folder / "gpu.yaml").write_text(study_yaml(name="gpu", device="cuda"))
    before = _snapshot(folder)
    result = _invoke(folder, env, ["run", "gpu.yaml"])
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == "error: device: cuda asked, but no CUDA device is available here"
    )
    assert _snapshot(folder) == before


def test_a_study_reused_with_other_settings_names_what_differs(work) -> None:
    folder, env = work
    (folder / "other.yaml").write_text(
        study_yaml(name="good", search={"keep": {"low": 0.1, "high": 1.0}, "bits": 4})
    )
    result = _invoke(folder, env, ["run", "other.yaml"])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "search.keep.low: stored 0.2, now 0.1" in line
    assert "change name: in this file" in line


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "code"),
    [("checkpoint-pickled-module", 2), ("data-stray-label", 2), ("model-raises", 2)],
)
def test_as_a_real_process(tmp_path: Path, case: str, code: int) -> None:
    """The same refusals from the installed command: one line, exit 2, no study left behind."""
    files, args, expected = CASES[case]
    for name, content in files.items():
        content(tmp_path / name) if callable(content) else (tmp_path / name).write_text(content)
    env = {**os.environ, "ADMMSEARCH_STORAGE": "", "MLFLOW_TRACKING_URI": ""}
    run = subprocess.run(
        [str(ADMMSEARCH), *args], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert run.returncode == code, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], run.stderr
    assert not (tmp_path / "admmsearch.db").exists() and not (tmp_path / "mlruns").exists()
    assert not (tmp_path / ".admmsearch").exists()


def test_user_code_resolves_from_the_study_folder_and_as_a_file(tmp_path: Path, monkeypatch):
    """``module:function`` from the study file's folder and ``path/file.py:function``, from
    wherever the command is run."""
    from admmsearch.config import validate_study

    project = tmp_path / "project"
    (project / "nets").mkdir(parents=True)
    code = textwrap.dedent(
        """
        from torch import nn

        def tiny(num_classes, input_shape):
            return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
        """
    )
    (project / "resolvemodels.py").write_text(code)
    (project / "nets" / "tiny_file.py").write_text(code)
    (project / "a.yaml").write_text(study_yaml(name="a", model="resolvemodels:tiny"))
    (project / "b.yaml").write_text(study_yaml(name="b", model="nets/tiny_file.py:tiny"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for name in ("a.yaml", "b.yaml"):
        _, layers = validate_study(project / name)
        assert layers == ["1"]


@pytest.mark.slow
def test_a_damaged_dense_cache_is_one_warning_line_and_the_study_goes_on(work) -> None:
    """Runs last: it adds a trial to ``good``. The cache file is garbage; the dense model is
    trained again, the CLI says so in one line, and the trial completes."""
    folder, env = work
    (cached,) = (folder / ".admmsearch" / "cache").glob("dense-*.pt")
    cached.write_bytes(b"\x00\x01 not a tensor file")
    result = _invoke(folder, env, ["run", "good.yaml", "--trials", "2"])
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1, result.stderr
    assert f"warning: dense cache {cached.relative_to(folder)}" in warnings[0]
    assert "training the dense model again" in warnings[0]
    assert "Traceback" not in result.stderr


def test_a_deleted_mlflow_experiment_is_refused_before_anything(work) -> None:
    """cases/38: the study's experiment deleted in MLflow; refused naming it, the store and
    the ways out, before the Optuna study is created."""
    from mlflow.tracking import MlflowClient

    folder, env = work
    uri = env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    number = client.create_experiment("gone")
    client.delete_experiment(number)
    (folder / "gone.yaml").write_text(study_yaml(name="gone"))
    before = _snapshot(folder)
    result = _invoke(folder, env, ["run", "gone.yaml"])
    assert result.exit_code == 2, result.stderr
    assert result.stderr == (
        f"error: tracking URI {uri}: this study's MLflow experiment 'gone' (id {number}) was "
        "deleted, and MLflow keeps a deleted experiment's name; restore it (mlflow experiments "
        f"restore --experiment-id {number}), remove it for good (mlflow gc --backend-store-uri "
        f"{uri} --experiment-ids {number}), or give the study another name: or tracking URI\n"
    )
    assert _snapshot(folder) == before


def _limited(fsize: int | None) -> Callable[[], None] | None:
    if fsize is None:
        return None

    def limit() -> None:  # a full disk, as far as writing files goes: EFBIG, "File too large"
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return limit


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setup", "args", "fsize", "expected"),
    [
        ("cache", ["--cache-dir", "cache"], None, "cache folder cache (--cache-dir): cannot "),
        ("mlruns", [], None, "(the default): cannot write in "),
        ("", [], 0, "storage sqlite:///"),
    ],
    ids=["cache-read-only", "mlruns-read-only", "disk-full"],
)
def test_folders_that_cannot_be_written_are_refused_before_any_work(
    tmp_path: Path, setup: str, args: list[str], fsize: int | None, expected: str
) -> None:
    """cases/32: without the power to override permissions (as an ordinary user), a cache or
    MLflow folder without write permission failed with a PermissionError after the dense model
    trained, leaving an empty study; a full disk drowned the right line in MLflow's traceback.
    """
    (tmp_path / "s.yaml").write_text(study_yaml())
    if setup:
        (tmp_path / setup).mkdir()
        (tmp_path / setup).chmod(0o555)
    nocap = "--inh-caps=-dac_override,-dac_read_search"
    bounding = "--bounding-set=-dac_override,-dac_read_search"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    run = subprocess.run(
        [
            "setpriv",
            nocap,
            bounding,
            str(ADMMSEARCH),
            "run",
            "s.yaml",
            "--storage",
            storage,
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "ADMMSEARCH_STORAGE": "", "MLFLOW_TRACKING_URI": ""},
        preexec_fn=_limited(fsize),
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    reason = "File too large" if fsize == 0 else "Permission denied"
    assert lines[0].endswith(f"({reason})"), lines[0]
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / ".admmsearch").exists()
