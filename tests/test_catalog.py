"""Reading existing studies back by name: what `list`, `show`, `pareto` and `export` open."""

from __future__ import annotations

import optuna
from click.testing import CliRunner

from admmsearch.cli import main


def test_a_study_recorded_by_another_version_is_one_line_naming_it(tmp_path) -> None:
    """A study whose recorded study file no longer validates (a setting renamed since) is refused
    in one line that says how to open it, not with pydantic's report and exit 1."""
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="older", storage=storage)
    recorded = {"name": "older", "model": "digits-cnn", "dataset": "digits", "bogus": 1}
    study.set_user_attr("config", recorded)
    result = CliRunner().invoke(main, ["show", "older", "--storage", storage])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: study 'older': its recorded study file")
    assert "bogus: unknown field" in line and "by its study file" in line
