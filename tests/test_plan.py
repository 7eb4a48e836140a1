"""The per-layer plan: one set of rules for a plan file, a settings file and a study file."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
import torch
import yaml

from admmsearch import plan as plan_module
from admmsearch.compression import read_plan
from admmsearch.config import load_study
from admmsearch.constraints import (
    Clustering,
    OnSupport,
    Sparsity,
    StructuredSparsity,
    UniformQuantization,
)
from admmsearch.errors import ConfigError, ConstraintError, LayerError
from admmsearch.plan import PLAN_VERSION, LayerPlan, Plan
from admmsearch.search.space import settings_from_params
from admmsearch.settings_file import FORMAT, read_settings

LAYERS_BLOCK = """\
layers:
  conv1: {keep: 5e-1, bits: 4}
  conv2: {keep: 0.25, clusters: 8, structured: true}
  fc1: {keep: 5e-2, bits: 2}
  fc2:
"""


def settings_file(folder: Path, layers_block: str) -> Path:
    """A settings file as ``export`` writes one, with ``layers_block`` as its plan."""
    head = {
        "format": FORMAT,
        "study": "s",
        "trial": 0,
        "chosen_by": "test",
        "seed": 0,
        "model": {"name": "digits-cnn"},
        "dataset": {"name": "digits"},
        "pipeline": {},
    }
    path = folder / "best.yaml"
    path.write_text(yaml.safe_dump(head) + layers_block)
    return path


def plan_file(folder: Path, layers_block: str) -> Path:
    path = folder / "plan.yaml"
    path.write_text(layers_block)
    return path


def settings_plan(path: Path) -> Plan:
    """The plan ``compress SETTINGS`` applies (as :func:`admmsearch.compression.reproduce`)."""
    file = read_settings(path)
    assert settings_from_params({}, file.config, file.layers).plan == file.plan
    return file.plan


def test_the_examples_in_the_docstring_run() -> None:
    result = doctest.testmod(plan_module)
    assert result.attempted >= 3 and result.failed == 0


def test_a_plan_file_and_a_settings_file_with_the_same_layers_give_the_same_plan(
    tmp_path: Path,
) -> None:
    from_plan = read_plan(plan_file(tmp_path, LAYERS_BLOCK))
    assert from_plan == settings_plan(settings_file(tmp_path, LAYERS_BLOCK))
    assert from_plan.layers["fc1"] == LayerPlan(keep=0.05, bits=2)  # 5e-2 is a number
    assert from_plan.layers["fc2"] == LayerPlan()  # nothing given: kept whole, float32


def test_a_settings_file_embeds_the_plan_in_the_plan_format(tmp_path: Path) -> None:
    plan = read_plan(plan_file(tmp_path, LAYERS_BLOCK))
    block = yaml.safe_dump({"layers": plan.to_dict()["layers"]})
    assert settings_plan(settings_file(tmp_path, block)) == plan
    assert Plan.from_dict(plan.to_dict()) == plan
    assert plan.to_dict()["layers"]["fc2"] == {"keep": 1.0, "bits": None}


@pytest.mark.parametrize(
    "layer,problem",
    [
        ("{clusters: 1}", "clusters: must be in [2, 65536], got 1"),
        ("{bits: 17}", "bits: must be in [1, 16], got 17"),
        ("{keep: 0}", "keep: must be in (0, 1], got 0"),
        ("{keep: '0.5'}", "keep: must be a valid number, got '0.5'"),
        ("{keep: 0.5, bits: 4, clusters: 8}", "give either bits or clusters, not both"),
        ("{keep: 0.5, sparsity: 0.5}", "sparsity: unknown field"),
    ],
)
def test_plan_and_settings_files_refuse_the_same_values(tmp_path: Path, layer, problem) -> None:
    block = f"layers:\n  fc1: {layer}\n"
    for path in (plan_file(tmp_path, block), settings_file(tmp_path, block)):
        with pytest.raises(ConfigError) as info:
            read_plan(path) if path.name == "plan.yaml" else read_settings(path)
        assert str(info.value).startswith(f"{path}: layers.fc1")
        assert str(info.value).endswith(problem)


def test_a_study_file_refuses_one_cluster_as_a_plan_file_does(tmp_path: Path) -> None:
    """cases: ``clusters: 1`` was accepted in a plan file and refused in a study file."""
    path = tmp_path / "study.yaml"
    data = {"name": "s", "model": "digits-cnn", "dataset": "digits"}
    path.write_text(yaml.safe_dump({**data, "search": {"layers": {"fc1": {"clusters": 1}}}}))
    with pytest.raises(ConfigError, match=r"clusters: must be in \[2, 65536\], got 1"):
        load_study(path)
    with pytest.raises(ConfigError, match=r"clusters: must be in \[2, 65536\], got 1"):
        read_plan(plan_file(tmp_path, "layers:\n  fc1: {clusters: 1}\n"))


def test_layer_names_are_strings_and_a_bad_version_is_named() -> None:
    assert list(Plan.from_dict({"layers": {0: {"keep": 0.5}}}).layers) == ["0"]
    with pytest.raises(ConfigError, match="^plan: version: must be 1, got 2"):
        Plan.from_dict({"version": 2, "layers": {}})
    with pytest.raises(ConfigError, match="^plan: layers: must be a mapping"):
        Plan.from_dict({"layers": ["fc1"]})


DOC = {
    "version": PLAN_VERSION,
    "layers": {
        "conv1": {"keep": 0.5, "structured": True},
        "fc1": {"keep": 0.05, "bits": 3},
        "fc2": {"clusters": 8},
    },
}


def test_a_plan_round_trips_through_its_mapping() -> None:
    plan = Plan.from_dict(DOC)
    assert plan.layers["fc1"] == LayerPlan(keep=0.05, bits=3)
    assert plan.to_dict() == {  # every layer's keep and quantizer written out, as export does
        "version": PLAN_VERSION,
        "layers": {
            "conv1": {"keep": 0.5, "bits": None, "structured": True},
            "fc1": {"keep": 0.05, "bits": 3},
            "fc2": {"keep": 1.0, "clusters": 8},
        },
    }
    assert Plan.from_dict(plan.to_dict()) == plan


def test_uniform_gives_every_layer_the_same_setting() -> None:
    plan = Plan.uniform(["a", "b"], keep=0.1, bits=4)
    assert set(plan.layers) == {"a", "b"}
    assert plan.layers["a"] == plan.layers["b"] == LayerPlan(keep=0.1, bits=4)


@pytest.mark.parametrize(
    ("layers", "field"),
    [
        ({"fc1": {"keep": 0.0}}, "layers.fc1.keep"),
        ({"fc1": {"keep": 1.5}}, "layers.fc1.keep"),
        ({"fc1": {"keep": "half"}}, "layers.fc1.keep"),
        ({"fc1": {"bits": 0}}, "layers.fc1.bits"),
        ({"fc1": {"bits": 17}}, "layers.fc1.bits"),
        ({"fc1": {"keep": 0.5, "sparsity": 0.5}}, "layers.fc1"),
        ({"fc1": [0.5]}, "layers.fc1"),
    ],
)
def test_a_bad_setting_is_refused_naming_its_field(layers: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        Plan.from_dict({"layers": layers})


def test_a_plan_of_another_version_or_shape_is_refused() -> None:
    with pytest.raises(ConfigError, match="version"):
        Plan.from_dict({"version": PLAN_VERSION + 1, "layers": {}})
    with pytest.raises(ConfigError, match="layers"):
        Plan.from_dict({"layers": ["fc1"]})
    with pytest.raises(ConfigError):
        Plan.from_dict({"layer": {}})


def test_check_layers_names_the_unknown_layer_and_refuses_an_empty_one() -> None:
    plan = Plan.from_dict(DOC)
    plan.check_layers(["conv1", "conv2", "fc1", "fc2"], {"fc1": 1000})
    with pytest.raises(LayerError, match="'fc1'.*valid: conv1, fc2"):
        plan.check_layers(["conv1", "fc2"])
    tiny = Plan.uniform(["fc1"], keep=0.001)
    with pytest.raises(ConstraintError, match=r"layers\.fc1\.keep"):
        tiny.check_layers(["fc1"], {"fc1": 10})


def test_constraints_follow_the_plan() -> None:
    plan = Plan.from_dict(DOC)
    weights = {name: torch.zeros(4, 4) for name in ("conv1", "fc1", "fc2")}
    prune = plan.prune_constraints(weights)
    assert set(prune) == {"conv1", "fc1"}  # fc2 keeps every weight
    assert isinstance(prune["conv1"], StructuredSparsity) and isinstance(prune["fc1"], Sparsity)
    mask = torch.ones(4, 4, dtype=torch.bool)
    quant = plan.quant_constraints({"fc1": mask, "fc2": None})
    assert set(quant) == {"fc1", "fc2"}  # conv1 stays float32
    assert isinstance(quant["fc1"], OnSupport) and isinstance(quant["fc2"], Clustering)
    assert isinstance(LayerPlan(bits=4).quantizer(sparse=False), UniformQuantization)
    assert not LayerPlan(keep=1.0).prunes and LayerPlan(clusters=4).quantizes


@pytest.mark.parametrize(
    ("layer", "text"),
    [
        ({"keep": 0.6, "bits": 2}, ".60/2b"),
        ({"keep": 0.18547, "bits": 3}, ".19/3b"),
        ({"keep": 0.0612}, ".061/fp"),
        ({"keep": 0.0034, "bits": 8}, ".0034/8b"),
        ({"bits": 4}, "1/4b"),
        ({"keep": 0.25, "clusters": 16, "structured": True}, ".25s/16c"),
    ],
)
def test_a_layers_compact_form_gives_keep_structure_and_levels(layer, text) -> None:
    assert LayerPlan(**layer).compact() == text
    plan = Plan.from_dict({"layers": {"conv1": layer, "fc1": {"keep": 0.5, "bits": 2}}})
    assert plan.compact() == f"conv1 {text} fc1 .50/2b"
