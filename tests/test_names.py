"""The built-in names a study file is checked against without torch (admmsearch.names) are the
names the registries hold; models are checked against the registry they register in, and a
name a program registers is accepted too."""

from __future__ import annotations

from pathlib import Path

import pytest

from admmsearch import data, models
from admmsearch.config import validate_study
from admmsearch.errors import ConfigError
from admmsearch.names import DATASET_NAMES, DATASET_SHAPES, POLICIES, known_datasets
from admmsearch.search import export


def test_the_built_in_names_are_the_registered_ones() -> None:
    assert sorted(DATASET_NAMES) == data.DATASETS.names()
    assert export.POLICIES is POLICIES


def test_the_built_in_shapes_are_the_datasets_own() -> None:
    loaded = data.load_dataset("digits", seed=0, limit_train=10)
    assert DATASET_SHAPES["digits"] == (loaded.input_shape, loaded.num_classes)


def test_a_model_is_checked_against_the_registry_where_the_networks_register(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = tmp_path / "x.yaml"
    study.write_text("name: x\nmodel: my-net\ndataset: digits\n")
    with pytest.raises(ConfigError, match=r"x.yaml: model.name: unknown model 'my-net'; known: d"):
        validate_study(study)
    monkeypatch.setitem(models.MODELS._factories, "my-net", models.MODELS.get("digits-cnn"))
    assert validate_study(study)[0].model.name == "my-net"
    assert known_datasets() == sorted(DATASET_NAMES)


def test_the_reference_networks_register_where_they_are_defined() -> None:
    source = Path(models.__file__).read_text()
    for name in models.MODELS.names():
        assert f'@MODELS.register("{name}")\nclass ' in source, name
