"""Tests for admmsearch.config: study files load, bad ones are rejected naming the field."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import optuna
import pydantic
import pytest
import torch
import yaml

from admmsearch.config import (
    StudyConfig,
    base_pipeline,
    check_layers,
    dense_settings,
    is_searched,
    knob_specs,
    load_study,
    resolve_layers,
    unit_spaces,
    validate_study,
)
from admmsearch.errors import ConfigError, LayerError
from admmsearch.train import TrainSettings

STUDIES = sorted((Path(__file__).parents[1] / "studies").glob("*.yaml"))
LAYERS = ["conv1", "conv2", "fc1", "fc2"]  # digits-cnn
MINIMAL: dict[str, Any] = {"name": "t", "model": "digits-cnn", "dataset": "digits"}


def study(**changes: Any) -> dict[str, Any]:
    """The minimal study with top-level ``changes``."""
    return {**copy.deepcopy(MINIMAL), **changes}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def rejected(tmp_path: Path, data: Any) -> str:
    """The message of the ConfigError that loading ``data`` raises; it names the file."""
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_study(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    return message


def config(**changes: Any) -> StudyConfig:
    return StudyConfig.model_validate(study(**changes))


# --- shipped studies ---


def test_the_four_studies_are_shipped() -> None:
    names = {p.stem for p in STUDIES}
    assert {"digits-quick", "lenet5-fashion", "lenet5-mnist", "resnet20-cifar10"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_shipped_study_is_valid(path: Path) -> None:
    cfg, layers = validate_study(path)
    assert cfg.name == path.stem
    assert layers
    check_layers(cfg, layers)
    assert any(is_searched(s) for s in knob_specs(cfg, layers).values())


def test_lenet5_mnist_starts_from_the_papers_keep_ratios() -> None:
    cfg = load_study(next(p for p in STUDIES if p.stem == "lenet5-mnist"))
    first = cfg.enqueue[0]
    assert first == {"keep.conv1": 0.2, "keep.conv2": 0.08, "keep.fc1": 0.009, "keep.fc2": 0.07}


def test_resnet20_groups_tie_each_stage() -> None:
    cfg, layers = validate_study(next(p for p in STUDIES if p.stem == "resnet20-cifar10"))
    units = {u.name: u.layers for u in unit_spaces(cfg, layers)}
    assert list(units) == ["conv1", "stage1", "stage2", "stage3", "fc"]
    assert all(len(units[f"stage{i}"]) == 6 for i in (1, 2, 3))


# --- a valid file, read carefully ---


def test_minimal_study_gets_defaults() -> None:
    cfg = config()
    assert cfg.model.name == "digits-cnn" and cfg.model.kwargs == {}
    assert cfg.dataset.name == "digits" and cfg.dataset.val_fraction == 0.1
    assert cfg.directions == ["maximize", "minimize"]
    assert cfg.budget.trials == 20
    assert cfg.sampler_seed == cfg.seed == 0


def test_default_sampler_is_the_one_the_search_benchmark_favours() -> None:
    """TPE: highest mean hypervolume after 20 to 50 trials in benchmarks/results/search.md."""
    from admmsearch.search.study import make_sampler

    cfg = config()
    assert cfg.sampler.name == "tpe" and cfg.sampler.population_size is None
    assert isinstance(make_sampler(cfg), optuna.samplers.TPESampler)
    result = Path(__file__).parents[1] / "benchmarks" / "results" / "search.json"
    assert json.loads(result.read_text())["recommended"] == cfg.sampler.name


def test_exponent_without_a_dot_reads_as_a_number(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nmodel: digits-cnn\ndataset: digits\nsearch: {lr: 1e-2}\n")
    assert load_study(path).search.lr == 0.01


def test_config_is_frozen() -> None:
    cfg = config()
    with pytest.raises(pydantic.ValidationError):
        cfg.seed = 3  # type: ignore[misc]


def test_resolved_dict_round_trips() -> None:
    layers = {"fc1": {"bits": None}, "conv1": {"keep": 0.5}, "conv2": {"clusters": 8}}
    cfg = config(search={"clusters": {"choices": [4, 8]}, "layers": layers})
    again = StudyConfig.model_validate(cfg.resolved_dict())
    assert again == cfg
    assert knob_specs(again, LAYERS) == knob_specs(cfg, LAYERS)
    assert cfg.resolved_dict()["search"]["layers"]["conv1"] == {"keep": 0.5}


def test_conversions_to_engine_settings() -> None:
    train = {"epochs": 7, "lr": 0.05, "batch_size": 32}
    cfg = config(
        seed=3,
        dense={"train": train},
        pipeline={"admm_quantize": None, "retrain": {"epochs": 1}, "index_format": "csr"},
    )
    assert dense_settings(cfg) == TrainSettings(epochs=7, lr=0.05, batch_size=32)
    p = base_pipeline(cfg)
    assert p.pretrain is None and p.admm_quantize is None
    assert p.retrain == TrainSettings(epochs=1, keep_best=True)  # retraining keeps its best
    assert p.admm_prune is not None and p.quant_retrain is not None
    assert (p.seed, p.index_format) == (3, "csr")


def test_fingerprint_is_stable_and_follows_the_dense_model_only() -> None:
    base = config()
    assert base.fingerprint_dense() == config().fingerprint_dense()
    assert len(base.fingerprint_dense()) == 64
    changed_dense = [
        config(seed=1),
        config(model={"name": "lenet5"}),
        config(dataset={"name": "digits", "val_fraction": 0.2}),
        config(dense={"train": {"epochs": 4}}),
        config(dense={"checkpoint": "dense.pt"}),
        config(dataset={"name": "digits", "num_classes": 12}),
    ]
    assert len({c.fingerprint_dense() for c in [base, *changed_dense]}) == 1 + len(changed_dense)
    same_dense = [
        config(layers=["fc*"]),  # which layers are compressed does not change dense training
        config(layers=list(LAYERS)),
        config(search={"keep": 0.5}),
        config(pipeline={"retrain": None}),
        config(sampler={"name": "tpe"}, budget={"trials": 3}, objectives=["val_accuracy"]),
        config(
            device="cuda", storage="sqlite:///x.db", dataset={"name": "digits", "download": False}
        ),
    ]
    assert {c.fingerprint_dense() for c in same_dense} == {base.fingerprint_dense()}


def test_resolve_layers_respects_patterns_and_leaves_the_rng_alone() -> None:
    state = torch.random.get_rng_state()
    assert resolve_layers(config()) == LAYERS
    assert torch.equal(state, torch.random.get_rng_state())
    assert resolve_layers(config(layers=["fc*"])) == ["fc1", "fc2"]
    with pytest.raises(LayerError, match="layers: .*'dense\\*'"):
        resolve_layers(config(layers=["dense*"]))


# --- files that are not study files ---


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: study file not found"):
        load_study(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [t\n", "not valid YAML: line 2"),
        ("name: t\nname: u\n", "key 'name' appears twice"),
        ("- name\n", "expected a mapping in the study file, got list"),
        ("", "got an empty file"),
    ],
)
def test_not_a_study_file(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in rejected(tmp_path, text)


# --- bad fields: each error names the field and the value ---


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"serach": {}}, "serach: unknown field"),
        (
            {"dataset": {"name": "digits", "val_fractoin": 0.2}},
            "dataset.val_fractoin: unknown field",
        ),
        ({"search": {"layers": {"fc1": {"kep": 0.1}}}}, "search.layers.fc1.kep: unknown field"),
        ({"seed": "zero"}, "seed: must be a valid integer, got 'zero'"),
        ({"budget": {"trials": 2.5}}, "budget.trials: must be a valid integer"),
        ({"search": {"keep": "half"}}, "search.keep: must be a valid number, got 'half'"),
        ({"search": {"keep": True}}, "search.keep: must be a valid number, got True"),
        ({"search": {"groups": {"fc": "fc1"}}}, "search.groups.fc: must be a list, got 'fc1'"),
        ({"search": {"keep": 0}}, "search.keep: must be in (0, 1], got 0"),
        ({"search": {"keep": 1.5}}, "search.keep: must be in (0, 1], got 1.5"),
        (
            {"search": {"keep": {"low": -1, "high": 1}}},
            "search.keep.low: must be in (0, 1], got -1",
        ),
        (
            {"search": {"keep": {"low": 0.5, "high": 0.1}}},
            "search.keep: low (0.5) must be <= high",
        ),
        ({"search": {"keep": {"choices": [0.5, 2]}}}, "search.keep.choices[1]: must be in (0, 1]"),
        (
            {"search": {"keep": {"choices": []}}},
            "search.keep.choices: must have at least 1 item, got []",
        ),
        ({"search": {"bits": 0}}, "search.bits: must be in [1, 16], got 0"),
        (
            {"search": {"bits": {"choices": [4, 0, None]}}},
            "search.bits.choices[1]: must be in [1, 16]",
        ),
        (
            {"search": {"bits": {"choices": [4, 4]}}},
            "search.bits.choices: must not repeat a choice",
        ),
        ({"search": {"clusters": 1}}, "search.clusters: must be in [2, 65536], got 1"),
        (
            {"search": {"layers": {"fc1": {"keep": 0}}}},
            "search.layers.fc1.keep: must be in (0, 1]",
        ),
        ({"search": {"layers": {"fc1": {"bits": 4, "clusters": 8}}}}, "give bits or clusters"),
        ({"search": {"admm_epochs": -1}}, "search.admm_epochs: must be >= 0, got -1"),
        ({"search": {"lr": 0}}, "search.lr: must be > 0, got 0"),
        ({"search": {"rho_end": 0}}, "search.rho_end: must be > 0, got 0"),
        (
            {"search": {"admm_updates": {"low": 0, "high": 2}}},
            "search.admm_updates.low: must be >= 1",
        ),
        (
            {"search": {"rho_multiplier": 1.5, "rho_every": 1}},
            "search: the rho schedule is now described over the stage: replace rho_multiplier "
            "-> rho_end, rho_every -> admm_updates",
        ),
        ({"search": {"admm_epochs": {"low": 0, "high": 4, "log": True}}}, "needs low > 0, got 0"),
        ({"search": {"keep": {"low": 0.1, "high": 1, "log": True, "step": 0.1}}}, "log and step"),
        ({"search": {"rho_initial": 2.0}}, "replace rho_initial -> rho_start"),
        (
            {
                "search": {"admm_epochs": 2},
                "pipeline": {"admm_prune": None, "admm_quantize": None},
            },
            "search.admm_epochs: sets admm_prune and admm_quantize, but all are null",
        ),
        ({"pipeline": {"retrain": {"epochs": -1}}}, "pipeline.retrain.epochs: must be >= 0"),
        (
            {"pipeline": {"retrain": {"optimizer": "lion"}}},
            "must be one of sgd, adam, adamw, got 'lion'",
        ),
        (
            {"pipeline": {"admm_prune": {"rho": {"initial": 2.0, "end": 1.0}}}},
            "pipeline.admm_prune: rho: initial, multiplier, every and maximum (the old schedule) "
            "cannot be mixed with start, end and updates",
        ),
        (
            {"pipeline": {"admm_quantize": {"update_every": 39}}},
            "pipeline.admm_quantize: update_every: replaced by rho.updates",
        ),
        ({"pipeline": {"admm_prune": {"rho": {"updates": 0}}}}, "rho.updates: must be >= 1"),
        ({"pipeline": {"retrain": {"keep_best": "yes"}}}, "retrain.keep_best: must be a valid"),
        (
            {"pipeline": {"quant_retrain": {"shares": [0.5, 0.9]}}},
            "must rise strictly and end at 1.0",
        ),
        ({"pipeline": {"index_format": "coo"}}, "pipeline.index_format: must be one of gap, csr"),
        ({"sampler": {"name": "cmaes"}}, "sampler.name: must be one of nsga2, tpe, gp, random"),
        ({"sampler": {"name": "tpe", "population_size": 8}}, "population_size: only nsga2"),
        ({"objectives": ["val_accuracy", "bogus"]}, "objectives[1]: must be one of val_accuracy"),
        ({"objectives": ["val_accuracy", "val_accuracy"]}, "objectives: must not repeat"),
        ({"objectives": []}, "objectives: must have at least 1 item"),
        ({"budget": {"trials": None}}, "budget: give trials, epochs, timeout_s or several"),
        ({"budget": {"trials": 0}}, "budget.trials: must be >= 1, got 0"),
        (
            {"constraints": {"max_accuracy_drop": 2}},
            "constraints.max_accuracy_drop: must be in [0, 1]",
        ),
        (
            {"enqueue": [{"keep.fc1": "a"}]},
            "enqueue[0].keep.fc1: must be a number or null, got 'a'",
        ),
        ({"name": "my study"}, "name: must be letters, digits"),
        ({"dataset": "imagenet"}, "dataset.name: unknown dataset; known: cifar10"),
        (
            {"dataset": {"name": "digits", "val_fraction": 1.0}},
            "dataset.val_fraction: must be in [0, 1)",
        ),
        ({"device": "gpu"}, "device: must be cpu, cuda, cuda:N or mps, got 'gpu'"),
    ],
)
def test_bad_field_is_named(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    assert expected in rejected(tmp_path, study(**changes))


def test_required_fields(tmp_path: Path) -> None:
    message = rejected(tmp_path, {"model": "lenet5"})
    assert "name: required field is missing" in message
    assert "dataset: required field is missing" in message


def test_every_bad_field_is_reported(tmp_path: Path) -> None:
    data = study(seed=-1, search={"keep": {"low": -1, "high": 1.5}}, sampler={"name": "x"})
    message = rejected(tmp_path, data)
    assert "4 problems" in message
    for field in ("seed", "search.keep.low", "search.keep.high", "sampler.name"):
        assert f"\n  {field}: " in message


# --- names that need the model's layers ---


@pytest.mark.parametrize(
    ("search", "enqueue", "expected"),
    [
        ({"layers": {"fc3": {"keep": 0.1}}}, [], "search.layers.fc3: not a compressible layer"),
        ({"groups": {"fc": ["fc1", "fc3"]}}, [], "search.groups.fc: 'fc3' matches no layer"),
        (
            {"groups": {"a": ["fc*"], "b": ["fc2"]}},
            [],
            "search.groups.b: layer 'fc2' is already in",
        ),
        ({"groups": {"fc1": ["fc2"]}}, [], "search.groups.fc1: a group cannot have the name"),
        (
            {"groups": {"fc": ["fc1", "fc2"]}, "layers": {"fc1": {"keep": 0.1}}},
            [],
            "search.layers.fc1: layer 'fc1' is tied in group 'fc'",
        ),
        ({}, [{"keep.fc3": 0.1}], "enqueue[0].keep.fc3: is not a parameter"),
        ({"keep": 0.5}, [{"keep.fc1": 0.5}], "enqueue[0].keep.fc1: is fixed in this study"),
        ({}, [{"keep.fc1": 1.5}], "enqueue[0].keep.fc1: 1.5 is outside range [0.02, 1.0]"),
        ({}, [{"bits.fc1": 7}], "enqueue[0].bits.fc1: 7 is outside choices"),
        ({"groups": {"fc": ["fc*"]}}, [{"keep.fc1": 0.1}], "enqueue[0].keep.fc1: is not a param"),
    ],
)
def test_unknown_names_are_rejected_with_valid_ones(
    search: dict[str, Any], enqueue: list[dict[str, Any]], expected: str
) -> None:
    cfg = config(search=search, enqueue=enqueue)
    with pytest.raises(ConfigError) as info:
        check_layers(cfg, LAYERS)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("search", "enqueue", "valid"),
    [
        ({"layers": {"fc3": {}}}, [], "valid: conv1, conv2, fc1, fc2"),
        ({"groups": {"fc": ["fc3"]}}, [], "valid: conv1, conv2, fc1, fc2"),
        ({"groups": {"fc": ["fc*"]}, "layers": {"fc3": {}}}, [], "valid: conv1, conv2, fc"),
        ({"bits": 4}, [{"keep.fc3": 0.1}], "searched: keep.conv1, keep.conv2, keep.fc1, keep.fc2"),
    ],
)
def test_errors_list_the_valid_names(
    search: dict[str, Any], enqueue: list[dict[str, Any]], valid: str
) -> None:
    with pytest.raises(ConfigError) as info:
        check_layers(config(search=search, enqueue=enqueue), LAYERS)
    assert str(info.value).endswith(valid)


def test_validate_study_names_the_file_for_layer_errors(tmp_path: Path) -> None:
    path = write(tmp_path, study(search={"layers": {"fc9": {"keep": 0.5}}}))
    with pytest.raises(ConfigError, match=f"^{path}: search.layers.fc9: .*valid: conv1, conv2"):
        validate_study(path)


def test_groups_take_globs_and_keep_model_order() -> None:
    cfg = config(search={"groups": {"convs": ["conv2", "conv*"]}})
    units = unit_spaces(cfg, LAYERS)
    assert [(u.name, u.layers) for u in units] == [
        ("convs", ("conv1", "conv2")),
        ("fc1", ("fc1",)),
        ("fc2", ("fc2",)),
    ]


def test_old_rho_keys_are_read_as_the_new_schedule_with_a_warning(tmp_path) -> None:
    """Study files written before the schedule was described over the stage keep working: one
    update per epoch, rho from ``initial`` to the last epoch's value, and a warning saying so."""
    from admmsearch.settings import LegacyScheduleWarning

    old = {"initial": 1e-2, "multiplier": 2.0, "every": 1, "maximum": 0.05}
    data = {
        "name": "old-keys",
        "model": "digits-cnn",
        "dataset": "digits",
        "pipeline": {"admm_prune": {"train": {"epochs": 5}, "rho": old}, "admm_quantize": {}},
    }
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.warns(LegacyScheduleWarning, match="read as"):
        config = load_study(path)
    rho = config.pipeline.admm_prune.rho
    # epochs 0..4 trained with 0.01, 0.02, 0.04, then capped: 0.05, 0.05
    assert (rho.start, rho.end, rho.updates) == (1e-2, 0.05, 5)


# --- what a message quotes stays short; a document's aliases cannot blow it up ---


def _alias_bomb(depth: int) -> str:
    """cases/30: 9 ** depth strings in `layers` from a few lines of anchors and aliases."""
    lines = ["name: bomb", "model: digits-cnn", "dataset: digits", "anchors:"]
    lines.append('  x0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]')
    for i in range(1, depth + 1):
        lines.append(f"  x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join([*lines, f"layers: *a{depth}", ""])


def test_an_alias_bomb_is_refused_at_once_naming_the_file(tmp_path: Path) -> None:
    start = time.monotonic()
    message = rejected(tmp_path, _alias_bomb(8))  # 43 million strings once expanded
    assert message.endswith(
        ": its aliases (*name) expand it to more than 100,000 values; write the values out instead"
    )
    assert time.monotonic() - start < 5


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    message = rejected(tmp_path, "name: &a [t, *a]\nmodel: digits-cnn\ndataset: digits\n")
    assert "expand it to more than" in message


def test_quoted_values_are_cut_short(tmp_path: Path) -> None:
    """A smaller bomb, and a long list put in a string field, are quoted in a few words."""
    message = rejected(tmp_path, _alias_bomb(3))
    assert len(message) < 1500 and "\n  anchors: unknown field" in message
    message = rejected(tmp_path, study(name=list(range(10_000))))
    assert message.endswith("name: must be a valid string, got [0, 1, 2, 3, 4, 5, ...]")


def test_a_list_of_bad_items_is_not_also_called_empty(tmp_path: Path) -> None:
    message = rejected(tmp_path, study(objectives=["accuracy"]))
    assert message == (
        f"{tmp_path / 'study.yaml'}: objectives[0]: must be one of val_accuracy, "
        "storage_bits_with_index, compression_ratio_with_index, got 'accuracy'"
    )


def test_every_wrong_enqueued_name_is_named() -> None:
    cfg = config(enqueue=[{"keep.conv9": 0.5, "bits.fc9": 4}])
    with pytest.raises(ConfigError) as info:
        check_layers(cfg, LAYERS)
    assert str(info.value).startswith(
        "enqueue[0].keep.conv9: is not a parameter; enqueue[0].bits.fc9: is not a parameter; "
        "searched: keep.conv1, "
    )


@pytest.mark.parametrize(
    ("knob", "expected"),
    [
        (
            {"keep": {"low": 0.02, "high": 1.0, "step": 0.05}},
            "search.keep: high 1.0 is not low + k * step (0.02 + k * 0.05); "
            "use high 0.97 or low 0.05",
        ),
        (
            {"admm_epochs": {"low": 1, "high": 10, "step": 2}},
            "search.admm_epochs: high 10 is not low + k * step (1 + k * 2); use high 9 or low 2",
        ),
    ],
)
def test_a_step_that_does_not_divide_its_range_is_refused(
    tmp_path: Path, knob: dict[str, Any], expected: str
) -> None:
    """cases/39: Optuna lowered high to the last step below it, warning once per trial."""
    assert rejected(tmp_path, study(search=knob)).endswith(expected)
