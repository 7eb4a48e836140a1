"""The command line's one formatter (admmsearch/console.py): table, CSV and JSON of rows."""

from __future__ import annotations

import json
import math

import optuna

from admmsearch.console import StudyProgress, render
from admmsearch.search.schedule import Spent

ROWS = [
    {"study": "a", "unmet": None, "epoch_budget": None, "best": 0.5},
    {"study": "b", "unmet": None, "epoch_budget": None, "best": math.nan},
]


def test_a_table_shows_a_missing_value_as_a_dash_not_none() -> None:
    table = render(ROWS, "table")
    assert "None" not in table and "NaN" not in table
    assert table.splitlines()[1].split() == ["a", "–", "–", "0.5"]
    assert table.splitlines()[2].split() == ["b", "–", "–", "–"]


def test_csv_leaves_the_cell_empty_and_json_writes_null() -> None:
    assert render(ROWS, "csv").splitlines()[1] == "a,,,0.5"
    assert json.loads(render(ROWS[:1], "json"))[0]["unmet"] is None


def test_a_column_of_integers_with_a_gap_stays_integers() -> None:
    # `list` with one study on a trial budget and one on epochs: pandas made it 6.0 and 40.0.
    rows = [
        {"study": "a", "budget": 6, "epoch_budget": None},
        {"study": "b", "budget": None, "epoch_budget": 40},
    ]
    table = render(rows, "table")
    assert table.splitlines()[1].split() == ["a", "6", "–"]
    assert table.splitlines()[2].split() == ["b", "–", "40"]
    assert render(rows, "csv").splitlines()[1:] == ["a,6,", "b,,40"]


def test_a_table_gives_every_accuracy_four_decimals() -> None:
    # show's front where every accuracy rounds to three decimals: pandas printed 0.993 beside
    # another study's 0.9861; kib and ratios keep pandas' own format
    rows = [
        {"trial": 1, "val_accuracy": 0.993, "accuracy_drop": 0.0, "storage_kib": 4.1},
        {"trial": 2, "val_accuracy": math.nan, "accuracy_drop": 0.01, "storage_kib": 5.228},
    ]
    table = render(rows, "table")
    assert table.splitlines()[1].split() == ["1", "0.9930", "0.0000", "4.100"]
    assert table.splitlines()[2].split() == ["2", "–", "0.0100", "5.228"]
    assert render(rows, "csv").splitlines()[1] == "1,0.993,0.0,4.1"


def test_a_resumed_run_counts_on_from_what_the_study_spent(capsys) -> None:
    # Three trials (12 epochs) ran before; the resumed run's first trial is the fourth.
    progress = StudyProgress("s", trials=5, tty=False)
    progress.resume_at(Spent(trials=3, epochs=12))
    failed = optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, user_attrs={"epochs": 4}
    )
    progress.trial_done(failed)
    assert capsys.readouterr().err.rstrip().endswith("[4/5 trials]")
    by_epochs = StudyProgress("s", epochs=40, tty=False)
    by_epochs.resume_at(Spent(trials=3, epochs=12))
    by_epochs.trial_done(failed)
    assert capsys.readouterr().err.rstrip().endswith("[16/40 epochs]")
