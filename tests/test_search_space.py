"""Tests for admmsearch.search.space: trials -> plans and pipelines, and their exact replay."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from admmsearch.config import StudyConfig, base_pipeline
from admmsearch.errors import ConfigError
from admmsearch.search.space import (
    TrialSettings,
    param_names,
    settings_from_params,
    suggest,
    without_float_noise,
)

LAYERS = ["conv1", "conv2", "fc1", "fc2"]  # digits-cnn
SEARCH: dict[str, Any] = {
    "keep": {"low": 0.05, "high": 1.0, "log": True},
    "bits": {"choices": [2, 4, 8, None]},
    "groups": {"fc": ["fc1", "fc2"]},
    "layers": {"conv1": {"keep": {"low": 0.5, "high": 0.9}, "bits": 8}},
    "rho_start": {"low": 1e-4, "high": 1e-2, "log": True},
    "rho_end": 0.7,
    "admm_updates": {"choices": [8, 16]},
    "admm_epochs": {"low": 1, "high": 4},
    "retrain_epochs": 2,
    "lr": {"choices": [0.01, 0.02]},
}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def config(search: dict[str, Any] | None = None, **changes: Any) -> StudyConfig:
    data = {"name": "t", "model": "digits-cnn", "dataset": "digits", **changes}
    return StudyConfig.model_validate({**data, "search": SEARCH if search is None else search})


def trials(cfg: StudyConfig, n: int = 30, seed: int = 0) -> list[tuple[dict, TrialSettings]]:
    """``n`` trials asked of an in-memory study with a seeded random sampler."""
    study = optuna.create_study(
        directions=cfg.directions, sampler=optuna.samplers.RandomSampler(seed)
    )
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((trial, suggest(trial, cfg, LAYERS)))
    return out


def test_param_names_are_as_documented() -> None:
    expected = [
        "keep.conv1",
        "keep.conv2",
        "bits.conv2",
        "keep.fc",
        "bits.fc",
        "rho_start",
        "admm_updates",
        "admm_epochs",
        "lr",
    ]
    assert param_names(config(), LAYERS) == expected
    for trial, _ in trials(config(), n=3):
        assert list(trial.params) == expected


def test_keep_lies_in_its_range_and_overrides_win() -> None:
    seen = []
    for _, settings in trials(config()):
        layers = settings.plan.layers
        assert set(layers) == set(LAYERS)
        assert 0.5 <= layers["conv1"].keep <= 0.9
        assert all(0.05 <= layers[n].keep <= 1.0 for n in LAYERS)
        assert layers["conv1"].bits == 8
        seen.append(layers["conv2"].keep)
    assert min(seen) < 0.2 < 0.6 < max(seen)  # the log range is really sampled


def test_a_group_shares_one_setting() -> None:
    for trial, settings in trials(config()):
        fc1, fc2 = settings.plan.layers["fc1"], settings.plan.layers["fc2"]
        assert fc1 == fc2
        assert fc1.keep == without_float_noise(trial.params["keep.fc"])
        assert fc1.bits == trial.params["bits.fc"]


def test_fixed_knobs_are_applied_but_not_suggested() -> None:
    for trial, settings in trials(config(), n=5):
        assert "rho_end" not in trial.params and "retrain_epochs" not in trial.params
        p = settings.pipeline
        for stage in (p.admm_prune, p.admm_quantize):
            assert stage.rho.end == 0.7
            assert stage.rho.start == without_float_noise(trial.params["rho_start"])
            assert stage.rho.updates == trial.params["admm_updates"]
            assert stage.train.epochs == trial.params["admm_epochs"]
            assert stage.train.lr == trial.params["lr"]
        assert p.retrain.epochs == 2 and p.retrain.lr == trial.params["lr"]
        assert p.quant_retrain == base_pipeline(config()).quant_retrain  # lr not applied there


def test_knobs_leave_skipped_stages_skipped() -> None:
    cfg = config(pipeline={"admm_quantize": None, "quant_retrain": None})
    for _, settings in trials(cfg, n=3):
        assert settings.pipeline.admm_quantize is None
        assert settings.pipeline.quant_retrain is None
        assert settings.pipeline.admm_prune.train.lr in (0.01, 0.02)


def test_bits_null_means_no_quantization() -> None:
    cfg = config({"keep": {"low": 0.1, "high": 1.0}, "bits": None})
    assert param_names(cfg, LAYERS) == ["keep.conv1", "keep.conv2", "keep.fc1", "keep.fc2"]
    for _, settings in trials(cfg, n=5):
        assert not any(lp.quantizes for lp in settings.plan.layers.values())
        assert all(lp.prunes or lp.keep == 1.0 for lp in settings.plan.layers.values())


def test_bits_none_is_a_choice() -> None:
    found = {s.plan.layers["conv2"].bits for _, s in trials(config(), n=40)}
    assert found == {2, 4, 8, None}


def test_clusters_are_searched_instead_of_bits() -> None:
    search = {
        "keep": 0.5,
        "clusters": {"choices": [4, 16]},
        "layers": {"fc2": {"bits": {"choices": [3, 5]}}, "conv1": {"clusters": None}},
    }
    cfg = config(search)
    assert param_names(cfg, LAYERS) == ["bits.conv1", "clusters.conv2", "clusters.fc1", "bits.fc2"]
    for _, settings in trials(cfg, n=5):
        layers = settings.plan.layers
        assert layers["conv2"].clusters in (4, 16) and layers["conv2"].bits is None
        assert layers["fc2"].bits in (3, 5) and layers["fc2"].clusters is None
        assert layers["conv1"].bits in (2, 3, 4, 5, 6, 8, None)  # the study-wide bits
        assert all(lp.keep == 0.5 for lp in layers.values())


def test_replay_gives_identical_settings() -> None:
    cfg = config()
    kept: dict[int, TrialSettings] = {}

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        settings = suggest(trial, cfg, LAYERS)
        kept[trial.number] = settings
        plan = settings.plan.layers.values()
        return sum(lp.keep for lp in plan), sum(lp.bits or 32 for lp in plan)

    study = optuna.create_study(
        directions=cfg.directions, sampler=optuna.samplers.NSGAIISampler(population_size=4, seed=1)
    )
    study.optimize(objective, n_trials=12)
    for frozen in study.trials:
        assert settings_from_params(frozen.params, cfg, LAYERS) == kept[frozen.number]


STEPPED = {"keep": {"low": 0.00497, "high": 0.99497, "step": 0.01}, "bits": 4}


def test_a_step_range_leaves_no_float_noise_in_the_plan_and_replays_exactly() -> None:
    """Optuna draws ``low + k * step``: 0.07497000000000001 for k = 7; the plan keeps 0.07497."""
    cfg = config(STEPPED)
    drawn = trials(cfg, n=20)
    noisy = [
        (trial.params[f"keep.{layer}"], settings.plan.layers[layer].keep)
        for trial, settings in drawn
        for layer in LAYERS
        if repr(trial.params[f"keep.{layer}"]) != repr(round(trial.params[f"keep.{layer}"], 5))
    ]
    assert noisy  # the range does make noise
    for param, keep in noisy:
        assert keep == round(param, 5) and len(repr(keep)) <= 7
    for trial, settings in drawn:
        assert settings_from_params(trial.params, cfg, LAYERS) == settings
    fixed = optuna.trial.FixedTrial({f"keep.{layer}": 0.07497000000000001 for layer in LAYERS})
    assert {lp.keep for lp in suggest(fixed, cfg, LAYERS).plan.layers.values()} == {0.07497}


def test_enqueued_params_are_used() -> None:
    first = {"keep.conv1": 0.6, "keep.conv2": 0.3, "bits.fc": None, "lr": 0.02}
    cfg = config(enqueue=[first])
    study = optuna.create_study(directions=cfg.directions)
    for params in cfg.enqueue:
        study.enqueue_trial(params)
    trial = study.ask()
    settings = suggest(trial, cfg, LAYERS)
    assert {k: trial.params[k] for k in first} == first
    assert settings.plan.layers["conv2"].keep == 0.3
    assert settings.plan.layers["fc1"].bits is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"drop": "lr"}, "missing: lr"),
        ({"add": ("keep.fc9", 0.5)}, "not searched: keep.fc9"),
        ({"add": ("retrain_epochs", 3)}, "not searched: retrain_epochs"),
        ({"add": ("keep.conv2", 1.5)}, "params.keep.conv2: 1.5 is outside"),
        ({"add": ("bits.fc", 3)}, "params.bits.fc: 3 is outside"),
    ],
)
def test_replay_rejects_params_of_another_space(change: dict[str, Any], expected: str) -> None:
    cfg = config()
    params = dict(trials(cfg, n=1)[0][0].params)
    if "drop" in change:
        del params[change["drop"]]
    else:
        name, value = change["add"]
        params[name] = value
    with pytest.raises(ConfigError, match=re.escape(expected)):
        settings_from_params(params, cfg, LAYERS)


def test_plans_fit_the_engine() -> None:
    for _, settings in trials(config(), n=5):
        settings.plan.check_layers(LAYERS)


def test_only_search_space_calls_suggest() -> None:
    package = Path(__file__).parents[1] / "admmsearch"
    call = re.compile(r"\.suggest_\w+\(")
    callers = [p.relative_to(package) for p in package.rglob("*.py") if call.search(p.read_text())]
    assert callers == [Path("search/space.py")]


def test_enqueued_whole_floats_run_as_the_integers_they_equal(tmp_path: Path) -> None:
    """cases/09: ``bits: 4.0`` for an integer choice (a JSON round trip writes it so) is queued
    as 4, and the trial builds its quantizers, instead of failing after the dense training."""
    from admmsearch.config import validate_study

    search = {
        "keep": {"low": 0.05, "high": 1.0},
        "bits": {"choices": [2, 4, None]},
        "admm_epochs": {"low": 1, "high": 3},
    }
    queued = {"keep.fc1": 1, "bits.fc1": 4.0, "bits.conv1": 2.0, "admm_epochs": 2.0}
    path = tmp_path / "s.yaml"
    data = {"name": "t", "model": "digits-cnn", "dataset": "digits", "search": search}
    path.write_text(yaml.safe_dump({**data, "enqueue": [queued]}))
    cfg, layers = validate_study(path)
    (params,) = cfg.enqueue
    assert params == queued
    assert {k: type(v) for k, v in params.items()} == {
        "keep.fc1": float,
        "bits.fc1": int,
        "bits.conv1": int,
        "admm_epochs": int,
    }
    study = optuna.create_study(directions=cfg.directions)
    study.enqueue_trial(dict(params))
    settings = suggest(study.ask(), cfg, layers)
    fc1 = settings.plan.layers["fc1"]
    assert fc1.bits == 4 and type(fc1.bits) is int and fc1.quantizer(sparse=False).bits == 4
    assert type(settings.pipeline.admm_prune.train.epochs) is int


@pytest.mark.parametrize(
    ("search", "value", "expected"),
    [
        ({"bits": {"choices": [2, 4]}}, {"bits.fc1": 4.5}, "4.5 is outside choices [2, 4]"),
        ({"admm_epochs": {"low": 1, "high": 3}}, {"admm_epochs": 1.5}, "(integers)"),
        ({"admm_epochs": {"low": 1, "high": 5, "step": 2}}, {"admm_epochs": 2}, "steps of 2"),
    ],
)
def test_enqueued_values_no_knob_takes_are_refused(search, value, expected) -> None:
    from admmsearch.config import check_layers

    cfg = config(search={"keep": 0.5, "bits": 4, **search}, enqueue=[value])
    with pytest.raises(ConfigError) as info:
        check_layers(cfg, LAYERS)
    assert str(info.value).startswith(f"enqueue[0].{next(iter(value))}: ")
    assert expected in str(info.value)


def test_the_pruning_schedule_is_searchable_and_replays() -> None:
    schedule = {
        "progressive_steps": {"low": 1, "high": 3},
        "admm_prune_epochs": {"low": 0, "high": 2},
    }
    search = {"keep": {"low": 0.1, "high": 1.0}, "bits": 4, **schedule}
    cfg = config(search, pipeline={"admm_quantize": {"train": {"epochs": 5}}})
    assert param_names(cfg, LAYERS)[-2:] == ["admm_prune_epochs", "progressive_steps"]
    seen = set()
    for trial, settings in trials(cfg, n=30):
        p = settings.pipeline
        assert p.progressive_steps == trial.params["progressive_steps"]
        assert p.admm_prune.train.epochs == trial.params["admm_prune_epochs"]
        assert p.admm_quantize.train.epochs == 5  # the quantization stage keeps its own length
        assert settings_from_params(trial.params, cfg, LAYERS) == settings
        seen.add((p.progressive_steps, p.admm_prune.train.epochs))
    assert {1, 2, 3} == {s for s, _ in seen} and {0, 1, 2} == {e for _, e in seen}


def test_a_fixed_schedule_applies_to_every_trial() -> None:
    cfg = config({"keep": 0.5, "bits": 4, "progressive_steps": 2, "admm_prune_epochs": 0})
    for trial, settings in trials(cfg, n=2):
        assert trial.params == {}
        assert settings.pipeline.progressive_steps == 2
        assert settings.pipeline.admm_prune.train.epochs == 0


def test_admm_epochs_and_admm_prune_epochs_cannot_both_be_given() -> None:
    base = {"name": "t", "model": "digits-cnn", "dataset": "digits"}
    both = {**base, "search": {"admm_epochs": 2, "admm_prune_epochs": {"low": 0, "high": 2}}}
    with pytest.raises(ConfigError, match="search: admm_prune_epochs: admm_epochs already sets"):
        StudyConfig.parse(both, "s.yaml")
    alone = {**base, "search": {"admm_prune_epochs": 1}, "pipeline": {"admm_prune": None}}
    with pytest.raises(ConfigError, match="search.admm_prune_epochs: sets admm_prune"):
        StudyConfig.parse(alone, "s.yaml")
