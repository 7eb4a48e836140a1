"""Names to factories and user code by name (admmsearch.registry): ``module:function`` and
``path/file.py:function``, looked for on sys.path, in the study file's folder and the current
folder; every failure is one line naming what, where and why."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from admmsearch import registry
from admmsearch.errors import RegistryError
from admmsearch.registry import Registry, add_search_dir, import_object, one_line, search_dirs


@pytest.fixture()
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder searched for user code, forgotten again after the test."""
    monkeypatch.setattr(registry, "_SEARCH_DIRS", [])
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "studies"
    folder.mkdir()
    add_search_dir(folder)
    return folder


def test_a_registry_maps_names_and_lists_them_when_one_is_unknown() -> None:
    shapes: Registry[str] = Registry("shape")
    shapes.register("square")(lambda: "square")
    assert "square" in shapes and list(shapes) == shapes.names() == ["square"]
    assert shapes.get("square")() == "square"
    with pytest.raises(RegistryError, match="unknown shape 'circle'; known: square"):
        shapes.get("circle")
    with pytest.raises(ValueError, match="registered twice"):
        shapes.register("square")(lambda: "again")


def test_search_dirs_are_the_study_folders_then_the_current_one(user_dir: Path) -> None:
    add_search_dir(user_dir)  # once only
    assert search_dirs() == [user_dir.resolve(), Path.cwd().resolve()]


def test_a_module_in_the_study_folder_is_found_without_pythonpath(user_dir: Path) -> None:
    (user_dir / "mynets_a1.py").write_text("def build():\n    return 'net'\n")
    try:
        assert import_object("mynets_a1:build", "model")() == "net"
    finally:
        sys.modules.pop("mynets_a1", None)


def test_a_file_path_is_read_relative_to_the_search_folders(user_dir: Path) -> None:
    (user_dir / "hooks").mkdir()
    (user_dir / "hooks" / "aug.py").write_text("class Box:\n    def flip(self): return 1\n")
    assert import_object("hooks/aug.py:Box.flip", "transform")(None) == 1
    again = import_object(str(user_dir / "hooks" / "aug.py") + ":Box", "transform")
    assert again is import_object("hooks/aug.py:Box", "transform")  # loaded once


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("nocolon", "must look like 'package.module:function'"),
        ("no_such_module_x9:f", "no module named 'no_such_module_x9' on the Python path"),
        ("missing.py:f", "no file 'missing.py' in"),
        ("broken.py:f", "importing it failed: ZeroDivisionError: division by zero"),
        ("fine.py:absent", "'fine.py' has no 'absent'"),
    ],
)
def test_failures_are_one_line_naming_what_and_why(
    user_dir: Path, path: str, message: str
) -> None:
    (user_dir / "broken.py").write_text("x = 1 / 0\n")
    (user_dir / "fine.py").write_text("y = 1\n")
    with pytest.raises(RegistryError, match=message) as err:
        import_object(path, "dataset")
    assert str(err.value).startswith(f"dataset {path!r}") and "\n" not in str(err.value)


def test_one_line_is_the_type_and_first_line() -> None:
    assert one_line(ValueError("bad\nmore")) == "ValueError: bad"
    assert one_line(KeyError()) == "KeyError"
