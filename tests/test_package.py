"""The package's front door (``admmsearch/__init__.py``): the public API by name, loaded on
first use, its version, its type hints, and the rules its modules keep (every ``__all__`` name
exists, no private name is imported from another module, nothing heavy at import)."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import admmsearch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "admmsearch"
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages([str(PACKAGE)], prefix="admmsearch.")
    if m.name != "admmsearch.__main__"
)


def test_the_front_door_is_written_once_in_its_stub_and_loads_each_name() -> None:
    stub = ast.parse((PACKAGE / "__init__.pyi").read_text())
    listed = {
        a.asname or a.name for n in stub.body if isinstance(n, ast.ImportFrom) for a in n.names
    }
    assert admmsearch.__all__ == ["__version__", *sorted(listed)]
    assert 20 <= len(listed) <= 30, "the front door names the few things a user starts from"
    for node in stub.body:
        if isinstance(node, ast.ImportFrom):
            defined = importlib.import_module(f"admmsearch.{node.module}")
            for alias in node.names:
                assert getattr(admmsearch, alias.name) is getattr(defined, alias.name)
                assert alias.name in dir(admmsearch)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="plan_of"):
        admmsearch.plan_of  # noqa: B018 - the lookup is the test
    assert not hasattr(admmsearch, "_private")


def test_version_is_the_installed_metadata() -> None:
    assert admmsearch.__version__ == importlib.metadata.version("admmsearch")


def test_the_package_ships_its_type_hints() -> None:
    assert (PACKAGE / "py.typed").is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["admmsearch"]


@pytest.mark.parametrize("module", MODULES)
def test_every_name_in_a_modules_all_exists(module: str) -> None:
    loaded = importlib.import_module(module)
    names = getattr(loaded, "__all__", None)
    assert names is not None, f"{module} has no __all__"
    assert len(names) == len(set(names)), f"{module}: a name twice in __all__"
    missing = [n for n in names if not hasattr(loaded, n)]
    assert not missing, f"{module}.__all__ names what it lacks: {missing}"


def test_no_private_name_is_imported_from_another_module() -> None:
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                found += [
                    f"{path.relative_to(ROOT)}: {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not found


def _loaded_after(code: str) -> list[str]:
    """Which heavy modules a fresh Python has loaded after running ``code``."""
    heavy = ("torch", "mlflow", "optuna", "matplotlib", "plotly", "pandas")
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_importing_the_package_and_its_cli_loads_nothing_heavy() -> None:
    assert _loaded_after("import admmsearch, admmsearch.cli, admmsearch.tracking") == []
    for drawing in ("admmsearch.search.front", "admmsearch.search.sensitivity.plot"):
        loaded = _loaded_after(f"import {drawing}")
        assert not {"matplotlib", "plotly", "mlflow"} & set(loaded), drawing  # not till used


@pytest.mark.slow
def test_reading_a_study_file_does_not_import_torch() -> None:
    code = "import admmsearch.config as c\nc.load_study('studies/digits-quick.yaml')"
    assert "torch" not in _loaded_after(code)
