"""The engine's settings: one type per concept, validated once, the same for a study file and
for code; and the modules that hold them import no torch."""

from __future__ import annotations

import doctest
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from admmsearch import settings
from admmsearch import validation as fields
from admmsearch.config import StudyConfig, base_pipeline, dense_settings
from admmsearch.errors import ConfigError
from admmsearch.settings import (
    AdmmSettings,
    CompressionSettings,
    LegacyScheduleWarning,
    PipelineSettings,
    QuantRetrainSettings,
    RhoSchedule,
    TrainingHooks,
    TrainSettings,
)

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {"name": "t", "model": "digits-cnn", "dataset": "digits"}


def study(**changes) -> StudyConfig:
    return StudyConfig.model_validate({**MINIMAL, **changes})


def test_the_examples_in_the_docstrings_run() -> None:
    for module in (fields, settings):
        result = doctest.testmod(module)
        assert result.attempted >= 2 and result.failed == 0, module.__name__


def test_a_study_pipeline_is_the_engine_type_itself() -> None:
    pipeline = {
        "admm_prune": {"train": {"epochs": 2, "lr": 0.02}, "rho": {"start": 0.01, "updates": 4}},
        "retrain": {"epochs": 1},
        "admm_quantize": None,
        "quant_retrain": {"shares": [0.5, 1.0]},
        "index_format": "csr",
    }
    config = study(seed=3, pipeline=pipeline, dense={"train": {"epochs": 7}})
    assert isinstance(config.pipeline, CompressionSettings)
    assert config.pipeline == CompressionSettings.model_validate(pipeline)
    assert dense_settings(config) is config.dense.train == TrainSettings(epochs=7)
    expected = PipelineSettings(
        pretrain=None,
        admm_prune=AdmmSettings(
            train=TrainSettings(epochs=2, lr=0.02), rho=RhoSchedule(start=0.01, updates=4)
        ),
        retrain=TrainSettings(epochs=1, keep_best=True),
        admm_quantize=None,
        quant_retrain=QuantRetrainSettings(
            train=TrainSettings(epochs=1, keep_best=True), shares=(0.5, 1.0)
        ),
        index_format="csr",
        seed=3,
    )
    assert base_pipeline(config) == expected


def test_the_study_defaults_are_the_engine_defaults() -> None:
    engine = PipelineSettings()
    stages = dict(study().pipeline)
    assert stages == {k: getattr(engine, k) for k in CompressionSettings.model_fields}
    assert study().training == TrainingHooks()


def test_a_retraining_stage_written_as_a_mapping_keeps_its_best_epoch() -> None:
    assert PipelineSettings(retrain={"epochs": 2}).retrain.keep_best is True
    assert PipelineSettings(retrain={"epochs": 2, "keep_best": False}).retrain.keep_best is False
    assert PipelineSettings(retrain=TrainSettings(epochs=2)).retrain.keep_best is False
    assert QuantRetrainSettings(train={"lr": 0.1}).train.keep_best is True
    assert QuantRetrainSettings().train == TrainSettings(epochs=1, keep_best=True)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: TrainSettings(lr=0), "TrainSettings: lr: must be > 0, got 0"),
        (lambda: TrainSettings(epochs=True), "TrainSettings: epochs: must be a valid integer"),
        (lambda: TrainSettings(optimizer="rmsprop"), "TrainSettings: optimizer: must be one of"),
        (lambda: RhoSchedule(updates=0), "RhoSchedule: updates: must be >= 1, got 0"),
        (lambda: QuantRetrainSettings(shares=(0.5, 0.9)), "QuantRetrainSettings: shares: must"),
        (lambda: PipelineSettings(progressive_steps=0), "PipelineSettings: progressive_steps"),
        (lambda: PipelineSettings(retrain={"epoch": 1}), "PipelineSettings: retrain.epoch: unk"),
        (lambda: TrainingHooks(loss="nocolon"), "TrainingHooks: loss: must be package.mod"),
    ],
)
def test_a_bad_value_in_code_is_a_config_error_naming_the_field(make, message) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        make()


def test_fields_come_by_position_as_in_the_dataclasses_they_replace() -> None:
    assert RhoSchedule(1e-3, 0.1, 3) == RhoSchedule(start=1e-3, end=0.1, updates=3)
    train = TrainSettings(epochs=1)
    assert AdmmSettings(train, RhoSchedule()) == AdmmSettings(train=train)
    with pytest.raises(TypeError, match="two values for start"):
        RhoSchedule(1e-3, start=1e-2)


def test_replace_checks_the_new_values() -> None:
    s = PipelineSettings()
    assert s.replace(seed=4).seed == 4 and s.replace(seed=4).admm_prune == s.admm_prune
    with pytest.raises(ConfigError, match="^PipelineSettings: seed: must be >= 0, got -1"):
        s.replace(seed=-1)


def test_an_error_inside_a_study_keeps_its_dotted_path() -> None:
    """Nested validation does not go through the models' own constructor (which names the
    model): a study's errors name the path from the file's root."""
    with pytest.raises(ConfigError) as info:
        StudyConfig.parse({**MINIMAL, "pipeline": {"retrain": {"epochs": -1}}}, "s.yaml")
    assert str(info.value) == "s.yaml: pipeline.retrain.epochs: must be >= 0, got -1"


@pytest.mark.parametrize("key", ["pretrain", "seed", "training"])
def test_a_study_pipeline_takes_only_the_compression_stages(key) -> None:
    """The dense stage is ``dense.train``, the seed the study's, the hooks ``training:``."""
    with pytest.raises(ConfigError, match=f"pipeline.{key}: unknown field"):
        StudyConfig.parse({**MINIMAL, "pipeline": {key: None}}, "s.yaml")


def test_old_rho_keys_in_code_are_read_as_in_a_study_file() -> None:
    old = {"train": {"epochs": 4}, "rho": {"initial": 0.01, "multiplier": 2.0}}
    with pytest.warns(LegacyScheduleWarning):
        admm = AdmmSettings.model_validate(old)
    assert admm.rho == RhoSchedule(start=0.01, end=0.08, updates=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigError, match="update_every: replaced by rho.updates"):
            AdmmSettings.parse({"update_every": 2}, "admm")


def test_hooks_in_the_study_enter_the_dense_fingerprint_only_when_set() -> None:
    plain = study()
    assert study(training={}).fingerprint_dense() == plain.fingerprint_dense()
    hooked = study(training={"loss": "hooks.py:loss"})
    assert hooked.fingerprint_dense() != plain.fingerprint_dense()
    assert base_pipeline(hooked).training == TrainingHooks(loss="hooks.py:loss")


@pytest.mark.slow
def test_the_settings_plan_and_record_modules_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import admmsearch.settings, admmsearch.plan, admmsearch.validation, admmsearch.record\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert run.returncode == 0, run.stderr
