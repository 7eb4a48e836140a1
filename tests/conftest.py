"""Fixtures shared by test files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

QUICK = Path(__file__).resolve().parents[1] / "studies" / "digits-quick.yaml"


@pytest.fixture()
def tiny_study(tmp_path):
    """Write ``studies/digits-quick.yaml`` shrunk to about a second a trial, with ``changes``
    on top, as ``tmp_path/study.yaml``; returns its path."""

    def write(**changes) -> Path:
        data = yaml.safe_load(QUICK.read_text())
        data["dataset"] = {"name": "digits", "limit_train": 300}
        data["dense"]["train"]["epochs"] = 4
        for stage in ("admm_prune", "admm_quantize"):
            data["pipeline"][stage]["train"]["epochs"] = 1
        data["pipeline"]["retrain"]["epochs"] = 1
        data["budget"] = {"trials": 3}
        data["sensitivity"] = {"keep_points": 3}  # a quick sensitivity pass
        data.update(changes)
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write
