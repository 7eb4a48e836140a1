"""The front of a study: its trials, its table and its figure (search.front), in-process on
a study built from finished trials."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from admmsearch.errors import AdmmSearchError, ConfigError, NoTrialError
from admmsearch.search.front import (
    FRONT_SUFFIXES,
    feasible,
    front_figure,
    front_frame,
    front_table,
    front_trials,
    trials_frame,
    write_front,
)

OBJECTIVES = ["val_accuracy", "storage_bits_with_index"]
DENSE = {"storage_bits": 819200, "val_accuracy": 0.97, "test_accuracy": 0.96}
# (validation accuracy, packed bits, constraint): 0 and 1 are the front, 2 is dominated by 0,
# 3 would dominate all but breaks its constraint.
TRIALS = [(0.95, 81920, 0.0), (0.90, 40960, 0.0), (0.85, 90112, 0.0), (0.99, 8192, 1.0)]


def _metrics(accuracy: float, bits: int) -> dict[str, float]:
    return {
        "val_accuracy": accuracy,
        "test_accuracy": accuracy - 0.01,
        "accuracy_drop": DENSE["val_accuracy"] - accuracy,
        "storage_bits_with_index": bits,
        "payload_bits": bits - 1024,
        "compression_ratio_with_index": DENSE["storage_bits"] / bits,
        "data_bits": bits - 2048,
        "weight_ratio_no_index": 30.0,
        "weight_ratio_with_index": 20.0,
    }


def _study(trials=TRIALS, dense: dict | None = DENSE) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="front", directions=["maximize", "minimize"])
    for accuracy, bits, violation in trials:
        study.add_trial(
            create_trial(
                values=[accuracy, bits],
                params={"keep.fc1": 0.5},
                distributions={"keep.fc1": FloatDistribution(0.01, 1.0)},
                user_attrs={"metrics": _metrics(accuracy, bits)},
                constraints={"max_accuracy_drop": violation},
            )
        )
    if dense is not None:
        study.set_user_attr("dense", dense)
    return study


def test_the_front_is_the_feasible_non_dominated_trials() -> None:
    study = _study()
    assert [t.number for t in front_trials(study)] == [0, 1]
    assert [feasible(t) for t in study.trials] == [True, True, True, False]
    frame = trials_frame(study, OBJECTIVES)
    assert frame["front"].tolist() == [True, True, False, False]
    assert front_frame(study, OBJECTIVES)["trial"].tolist() == [1, 0]  # by storage


def test_the_table_gives_kib_and_rounded_figures() -> None:
    table = front_table(_study(), OBJECTIVES)
    assert table["trial"].tolist() == [1, 0]
    assert table["storage_kib"].tolist() == [5.0, 10.0]
    assert table["payload_kib"].tolist() == [4.875, 9.875]
    assert table["ratio_with_index"].tolist() == [20.0, 10.0]


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_write_front_writes_the_table(tmp_path: Path, suffix: str) -> None:
    study = _study()
    written = write_front(study, tmp_path / f"front{suffix}", OBJECTIVES)
    assert written.paths == (tmp_path / f"front{suffix}",) and written.trials == 2
    text = written.paths[0].read_text()
    read = pd.DataFrame(json.loads(text)) if suffix == ".json" else pd.read_csv(written.paths[0])
    pd.testing.assert_frame_equal(read, front_table(study, OBJECTIVES), check_dtype=False)


@pytest.mark.parametrize("name", ["front.png", "front.html"])
def test_write_front_writes_the_figure_as_png_and_html(tmp_path: Path, name: str) -> None:
    style = dict(matplotlib.rcParams)
    written = write_front(_study(), tmp_path / name, OBJECTIVES)
    assert written.paths == (tmp_path / "front.png", tmp_path / "front.html")
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"
    html = (tmp_path / "front.html").read_text()
    assert "dense fp32" in html and len(html) > 10_000
    assert dict(matplotlib.rcParams) == style  # Optuna's ggplot style did not leak out


def test_the_figure_is_optunas_front_with_the_dense_model_on_a_log_axis() -> None:
    fig = front_figure(_study())
    assert fig.layout.xaxis.type == "log"
    points = {
        (round(x, 3), y) for trace in fig.data for x, y in zip(trace.x, trace.y, strict=True)
    }
    kib = {(bits / 8192, accuracy) for accuracy, bits, _ in TRIALS}
    assert points == kib | {(DENSE["storage_bits"] / 8192, DENSE["val_accuracy"])}
    assert fig.data[-1].name == "dense fp32"


def test_write_front_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"front\.xlsx: writes only \.csv"):
        write_front(_study(), tmp_path / "front.xlsx", OBJECTIVES)
    assert FRONT_SUFFIXES == (".csv", ".json", ".png", ".html")
    with pytest.raises(NoTrialError, match="no feasible completed trial"):
        write_front(_study(trials=TRIALS[3:]), tmp_path / "front.csv", OBJECTIVES)
    with pytest.raises(AdmmSearchError, match="no dense model recorded"):
        write_front(_study(dense=None), tmp_path / "front.png", OBJECTIVES)
    assert not list(tmp_path.iterdir())


def test_the_figure_of_a_study_without_a_feasible_trial_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study = _study(trials=TRIALS[3:])  # one trial, infeasible
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            write_front(study, tmp_path / "front.png", OBJECTIVES)
    finally:
        optuna.logging.disable_propagation()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("optuna")] == []
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    assert (tmp_path / "front.png").exists() and (tmp_path / "front.html").exists()
