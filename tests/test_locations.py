"""Where a study writes: folders that take files, and stores that are not one database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from admmsearch.errors import StoreError
from admmsearch.locations import check_clash, database_file, writable_folder


def test_a_folder_to_make_is_judged_by_the_nearest_one_that_exists(tmp_path: Path) -> None:
    assert writable_folder(tmp_path / "a" / "b") is None
    assert not (tmp_path / "a").exists()  # nothing made, the probe removed
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    assert (
        writable_folder(tmp_path / "file" / "cache")
        == f"{tmp_path / 'file'} is a file, not a folder"
    )


def _tables(path: Path, *names: str) -> None:
    with sqlite3.connect(path) as db:
        for name in names:
            db.execute(f"CREATE TABLE {name} (x)")


def test_stores_that_are_one_database_or_the_others_are_refused(tmp_path: Path) -> None:
    optuna_db, mlflow_db = tmp_path / "optuna.db", tmp_path / "mlflow.db"
    _tables(optuna_db, "studies", "trials", "version_info")
    _tables(mlflow_db, "experiments", "runs", "metrics")
    check_clash(f"sqlite:///{optuna_db}", f"sqlite:///{mlflow_db}")  # as it should be
    check_clash(f"sqlite:///{optuna_db}", "http://tracking.lan:5000")
    refusals = {
        (optuna_db, optuna_db): "is the study storage",
        (tmp_path / "new.db", optuna_db): "is an Optuna database",
        (mlflow_db, tmp_path / "new.db"): "is an MLflow tracking database",
    }
    for (storage, tracking), why in refusals.items():
        with pytest.raises(StoreError, match=why):
            check_clash(f"sqlite:///{storage}", f"sqlite:///{tracking}")
    same = "postgresql+psycopg://u:pw@db.lan:5432/optuna"
    with pytest.raises(StoreError, match=r"postgresql\+psycopg://u:\*\*\*@db.lan:5432/optuna"):
        check_clash(same, "postgresql+psycopg://u@db.lan:5432/optuna")
    check_clash(same, "postgresql+psycopg://u@db.lan:5432/mlflow")


def test_database_file_resolves_sqlite_urls_only(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert database_file("sqlite:///a.db") == tmp_path / "a.db"
    assert database_file("sqlite:///:memory:") is None
    assert database_file("postgresql://h/db") is None
