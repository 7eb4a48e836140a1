"""The built-in names a study file is checked against without torch (admmsearch.names) are the
names the registries hold, and a name a program registers is accepted too."""

from __future__ import annotations

import pytest

from admmsearch import data, models
from admmsearch.config import StudyConfig
from admmsearch.names import (
    DATASET_NAMES,
    DATASET_SHAPES,
    MODEL_NAMES,
    POLICIES,
    known_datasets,
    known_models,
)
from admmsearch.search import export


def test_the_built_in_names_are_the_registered_ones() -> None:
    assert sorted(MODEL_NAMES) == models.MODELS.names()
    assert sorted(DATASET_NAMES) == data.DATASETS.names()
    assert export.POLICIES is POLICIES


def test_the_built_in_shapes_are_the_datasets_own() -> None:
    loaded = data.load_dataset("digits", seed=0, limit_train=10)
    assert DATASET_SHAPES["digits"] == (loaded.input_shape, loaded.num_classes)


def test_a_model_a_program_registers_is_known_to_the_study_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = {"name": "x", "model": "my-net", "dataset": "digits"}
    with pytest.raises(ValueError, match="unknown model; known: digits-cnn, "):
        StudyConfig.model_validate(study)
    monkeypatch.setitem(models.MODELS._factories, "my-net", models.MODELS.get("digits-cnn"))
    assert "my-net" in known_models()
    assert StudyConfig.model_validate(study).model.name == "my-net"
    assert known_datasets() == sorted(DATASET_NAMES)
