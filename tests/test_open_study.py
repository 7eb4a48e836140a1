"""The study as Optuna and its dashboard see it (search.study.open_study)."""

from __future__ import annotations

import warnings

import optuna

from admmsearch.config import StudyConfig
from admmsearch.search.study import open_study


def test_the_objectives_have_their_names_in_optuna(tmp_path) -> None:
    """The dashboard names the objectives by their names, not 0 and 1; reopening the study
    (another worker, a resume) keeps them and warns of nothing."""
    config = StudyConfig.model_validate(
        {"name": "named", "model": "digits-cnn", "dataset": "digits"}
    )
    url = f"sqlite:///{tmp_path / 'o.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        study = open_study(config, url)
        again = open_study(config, url)
    assert study.metric_names == again.metric_names == list(config.objectives)
    stored = optuna.load_study(study_name="named", storage=url)
    assert stored.metric_names == ["val_accuracy", "storage_bits_with_index"]
