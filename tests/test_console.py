"""The command line's one formatter (admmsearch/console.py): table, CSV and JSON of rows."""

from __future__ import annotations

import json
import math

from admmsearch.console import render

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
