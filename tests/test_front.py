"""The front of a study: its trials, its table and its figure (search.front), in-process on
a study built from finished trials."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import create_trial

from admmsearch.config import StudyConfig
from admmsearch.errors import AdmmSearchError, ConfigError, NoTrialError
from admmsearch.record import StudyAttr
from admmsearch.search.front import (
    FRONT_SUFFIXES,
    all_trial_records,
    feasible,
    front_figure,
    front_frame,
    front_points,
    front_table,
    front_trials,
    table_records,
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


LAYERS = ["conv1", "conv2", "fc1", "fc2"]  # digits-cnn
SEARCH = {"keep": {"low": 0.01, "high": 1.0, "log": True}, "bits": {"choices": [2, 3, 4, None]}}
# each trial's per-layer (keep, bits), in LAYERS order
SETTINGS = [
    [(0.6, 2), (0.19, 3), (0.0612, 4), (0.327, 2)],
    [(1.0, None), (0.05, 2), (0.0123, 2), (0.5, 4)],
    [(0.7, 4), (0.3, 4), (0.1, 4), (0.7, 4)],
    [(0.4, 2), (0.1, 2), (0.02, 2), (0.2, 2)],
]
DISTRIBUTIONS = {
    **{f"keep.{layer}": FloatDistribution(0.01, 1.0, log=True) for layer in LAYERS},
    **{f"bits.{layer}": CategoricalDistribution([2, 3, 4, None]) for layer in LAYERS},
}


def _params(settings: list[tuple[float, int | None]]) -> dict[str, float | int | None]:
    params: dict[str, float | int | None] = {}
    for layer, (keep, bits) in zip(LAYERS, settings, strict=True):
        params.update({f"keep.{layer}": keep, f"bits.{layer}": bits})
    return params


def _study(
    trials=TRIALS, dense: dict | None = DENSE, attrs: list[dict] | None = None
) -> optuna.Study:
    """A study as admmsearch records one: its study file, layers and dense model, and each
    finished trial's params, metrics, constraint and user attributes ``attrs``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = StudyConfig.model_validate(
        {"name": "front", "model": "digits-cnn", "dataset": "digits", "search": SEARCH}
    )
    study = optuna.create_study(study_name="front", directions=["maximize", "minimize"])
    study.set_user_attr("config", config.resolved_dict())
    study.set_user_attr("layers", LAYERS)
    for i, (accuracy, bits, violation) in enumerate(trials):
        study.add_trial(
            create_trial(
                values=[accuracy, bits],
                params=_params(SETTINGS[i]),
                distributions={k: DISTRIBUTIONS[k] for k in _params(SETTINGS[i])},
                user_attrs={"metrics": _metrics(accuracy, bits), **(attrs or [{}] * 4)[i]},
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


def test_each_row_says_where_the_trial_came_from_and_its_per_layer_settings() -> None:
    attrs = [{"enqueued": 0}, {"seeded": {"budget_kib": 5.0}}, {}, {"prior": {"family": "g"}}]
    frame = trials_frame(_study(attrs=attrs), OBJECTIVES)
    assert frame["origin"].tolist() == ["enqueued", "seeded", "sampled", "prior"]
    assert frame["layers"].tolist()[:2] == [
        "conv1 .60/2b conv2 .19/3b fc1 .061/4b fc2 .33/2b",
        "conv1 1/fp conv2 .050/2b fc1 .012/2b fc2 .50/4b",
    ]
    table = front_table(_study(attrs=attrs), OBJECTIVES)
    assert table.columns.tolist()[:3] == ["trial", "origin", "epochs"]  # no rungs: no rung
    assert table.columns[-1] == "layers"
    assert table["origin"].tolist() == ["seeded", "enqueued"]


def test_a_promoted_row_names_the_trial_it_continues_its_total_epochs_and_its_prior() -> None:
    # Trial 0: a LAMP prior screened at rung 0 (5 epochs); trial 1 continues it at rung 1 (4
    # more); trial 2 continues trial 1 at rung 2 (8 more); trial 3: a sampled rung-0 setting.
    attrs = [
        {"prior": {"family": "lamp"}, "rung": 0, "epochs": 5},
        {"rung": 1, "continues": 0, "epochs": 4},
        {"rung": 2, "continues": 1, "epochs": 8},
        {"rung": 0, "epochs": 5},
    ]
    frame = trials_frame(_study(attrs=attrs), OBJECTIVES)
    assert frame["origin"].tolist() == ["prior", "promoted", "promoted", "sampled"]
    assert frame["continues"].tolist()[1:3] == [0, 1] and pd.isna(frame["continues"][0])
    assert frame["epochs"].tolist() == [5, 4, 8, 5]  # what each added to the budget
    assert frame["total_epochs"].tolist() == [5, 9, 17, 5]
    assert frame["family"].tolist()[:3] == ["lamp"] * 3 and pd.isna(frame["family"][3])
    study = _study(attrs=attrs)
    study.set_user_attr(StudyAttr.TOP_RUNG, 2)
    table = front_table(study, OBJECTIVES)
    assert table.columns.tolist()[:7] == [
        "trial",
        "origin",
        "family",
        "rung",
        "continues",
        "epochs",
        "total_epochs",
    ]
    assert table["trial"].tolist() == [2] and table["total_epochs"].tolist() == [17]
    records = all_trial_records(study)  # show --all
    assert [r["continues"] for r in records] == [None, 0, 1, None]
    assert [r["total_epochs"] for r in records] == [5, 9, 17, 5]
    assert [r["family"] for r in records] == ["lamp", "lamp", "lamp", None]


def test_json_records_carry_each_trials_settings_as_data() -> None:
    study = _study()
    records = table_records(study, front_table(study, OBJECTIVES))
    assert [r["trial"] for r in records] == [1, 0]
    assert records[1]["settings"] == {
        "conv1": {"keep": 0.6, "bits": 2},
        "conv2": {"keep": 0.19, "bits": 3},
        "fc1": {"keep": 0.0612, "bits": 4},
        "fc2": {"keep": 0.327, "bits": 2},
    }
    assert records[0]["settings"]["conv1"] == {"keep": 1.0, "bits": None}
    assert records[1]["layers"] == "conv1 .60/2b conv2 .19/3b fc1 .061/4b fc2 .33/2b"


def test_a_study_without_a_recorded_study_file_has_no_settings_to_show() -> None:
    study = _study()
    study.set_user_attr("config", None)
    assert trials_frame(study, OBJECTIVES)["layers"].isna().all()
    records = table_records(study, front_table(study, OBJECTIVES))
    assert [r["settings"] for r in records] == [None, None]


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_write_front_writes_the_table(tmp_path: Path, suffix: str) -> None:
    study = _study()
    written = write_front(study, tmp_path / f"front{suffix}", OBJECTIVES)
    assert written.paths == (tmp_path / f"front{suffix}",) and written.trials == 2
    text = written.paths[0].read_text()
    table = front_table(study, OBJECTIVES)
    if suffix == ".json":
        assert json.loads(text) == table_records(study, table)
    else:
        pd.testing.assert_frame_equal(pd.read_csv(written.paths[0]), table, check_dtype=False)


@pytest.mark.parametrize("name", ["front.png", "front.html"])
def test_write_front_writes_the_figure_asked_for_and_only_it(tmp_path: Path, name: str) -> None:
    style = dict(matplotlib.rcParams)
    written = write_front(_study(), tmp_path / name, OBJECTIVES)
    assert written.paths == (tmp_path / name,) and written.trials == 2
    assert [p.name for p in tmp_path.iterdir()] == [name]
    if name == "front.png":
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    else:
        html = (tmp_path / name).read_text()
        assert "dense fp32" in html and "fc1 .061" in html and len(html) > 10_000
    assert dict(matplotlib.rcParams) == style  # no style leaked out


def test_the_figure_draws_every_trial_by_kind_and_numbers_the_front() -> None:
    fig = front_figure(_study(attrs=[{"enqueued": 0}, {}, {}, {}]))
    points = {
        (round(x, 3), y) for trace in fig.data for x, y in zip(trace.x, trace.y, strict=True)
    }
    kib = {(bits / 8192, accuracy) for accuracy, bits, _ in TRIALS}
    assert points == kib | {(DENSE["storage_bits"] / 8192, DENSE["val_accuracy"])}
    names = [trace.name for trace in fig.data]
    assert names == [
        "Pareto front (full fidelity)",
        "dominated",
        "infeasible (breaks a constraint)",
        "dense fp32",
    ]
    front = fig.data[0]
    assert list(front.text) == ["1", "0"]  # numbered, by storage
    assert front.hovertext[1].startswith("trial 0 (enqueued)<br>10.00 KiB, val acc 0.9500<br>")
    assert "conv1 .60/2b conv2 .19/3b fc1 .061/4b fc2 .33/2b" in front.hovertext[1]
    assert "front" in fig.layout.title.text and fig.layout.title.text.startswith(
        "Pareto front of front: 2 of 4"
    )


def test_the_storage_axis_is_labelled_where_a_person_reads_it() -> None:
    fig = front_figure(_study())  # trials at 1 to 11 KiB, the dense model at 100 KiB
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis.tickvals) == [1, 2, 5, 10, 20, 50, 100]
    assert list(fig.layout.xaxis.ticktext) == ["1", "2", "5", "10", "20", "50", "100"]
    low, high = (10**x for x in fig.layout.xaxis.range)  # a labelled tick beyond each end
    assert low < 1 and 100 < high < 110


def test_lower_rung_trials_are_drawn_apart_and_never_as_the_front() -> None:
    """With successive halving only the top rung is at full fidelity: trial 3 (rung 0) would
    dominate every other point, yet it is a lower rung's, not the front's."""
    trials = [*TRIALS[:3], (0.99, 8192, 0.0)]
    study = _study(trials, attrs=[{"rung": 1}, {"rung": 1}, {"rung": 1}, {"rung": 0}])
    study.set_user_attr("top_rung", 1)
    assert [t.number for t in front_trials(study)] == [0, 1]
    points = front_points(study)
    assert points["group"].tolist() == ["front", "front", "dominated", "lower rung"]
    fig = front_figure(study)
    assert [t.name for t in fig.data][-2] == "lower rung (trained less, not on the front)"
    assert list(fig.data[-2].x) == [1.0] and fig.data[-2].marker.symbol == "circle-open"
    assert front_table(study, OBJECTIVES)["rung"].tolist() == [1, 1]


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
    assert [p.name for p in tmp_path.iterdir()] == ["front.png"]


def test_every_trials_records_leave_out_the_rung_of_a_study_without_rungs() -> None:
    from admmsearch.search.front import all_trial_records

    records = all_trial_records(_study(attrs=[{"enqueued": 0}, {}, {}, {}]))
    assert [r["origin"] for r in records] == ["enqueued", "sampled", "sampled", "sampled"]
    assert "rung" not in records[0] and records[0]["layers"].startswith("conv1 .60/2b")
    assert not {"continues", "total_epochs", "family"} & set(records[0])  # no rungs, no priors
