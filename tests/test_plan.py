"""The per-layer plan (admmsearch.plan): read from a mapping, checked, written back, and turned
into the constraints each layer is pruned and quantized to."""

from __future__ import annotations

import pytest
import torch

from admmsearch.constraints import (
    Clustering,
    OnSupport,
    Sparsity,
    StructuredSparsity,
    UniformQuantization,
)
from admmsearch.errors import ConfigError, ConstraintError, LayerError
from admmsearch.plan import PLAN_VERSION, LayerPlan, Plan

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
    assert plan.to_dict() == DOC
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
