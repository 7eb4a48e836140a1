"""Zero-cost allocation priors (admmsearch.search.priors): each family against values worked out by
hand on tiny layers, then on the digits CNN with fixed layers, tied groups, ranges and storage
targets."""

from __future__ import annotations

import math

import pytest
import torch

from admmsearch.config import Choices, FloatRange, IntRange, StudyConfig, unit_spaces
from admmsearch.constraints import Sparsity
from admmsearch.models import create_model
from admmsearch.packed import model_storage
from admmsearch.plan import LayerPlan
from admmsearch.search.priors import (
    ZERO_COST,
    DenseLayers,
    PriorProblem,
    clip_keep,
    erk_densities,
    estimated_storage_bits,
    global_magnitude_keeps,
    lamp_keeps,
    lamp_scores,
    prior_at_keep,
    prior_at_storage,
    prior_order,
    storage_range,
    storage_targets,
    uniform_keeps,
    unit_levels,
)

LAYERS = ["conv1", "conv2", "fc1", "fc2"]  # digits-cnn: 144, 4,608, 32,768 and 640 weights
SIZES = {"conv1": 144, "conv2": 4608, "fc1": 32768, "fc2": 640}

# --- the families, by hand ---

# a: 4 weights, b: 6 weights; magnitudes in a: 0.9, 0.4, 0.2, 0.1; in b: 0.8 .. 0.05
TINY = {
    "a": torch.tensor([[0.1, -0.9], [0.4, 0.2]]),
    "b": torch.tensor([0.3, -0.8, 0.05, 0.6, 0.7, -0.5]),
}


def test_global_magnitude_keeps_the_largest_magnitudes_wherever_they_are() -> None:
    # keep 5 of 10: 0.9 (a), then 0.8, 0.7, 0.6, 0.5 (all b); the threshold is 0.5
    assert global_magnitude_keeps(TINY, 0.5) == {"a": 0.25, "b": 4 / 6}
    # keep 7 of 10: add 0.4 (a) and 0.3 (b)
    assert global_magnitude_keeps(TINY, 0.7) == {"a": 0.5, "b": 5 / 6}
    assert global_magnitude_keeps(TINY, 1.0) == {"a": 1.0, "b": 1.0}
    assert global_magnitude_keeps(TINY, 0.0) == {"a": 0.0, "b": 0.0}


def test_lamp_scores_are_each_square_over_the_squares_not_smaller() -> None:
    # a ascending by magnitude: 0.1, 0.2, 0.4, 0.9; squares 0.01, 0.04, 0.16, 0.81 (sum 1.02)
    expected = [[0.01 / 1.02, 1.0], [0.16 / 0.97, 0.04 / 1.01]]
    assert torch.allclose(lamp_scores(TINY["a"]), torch.tensor(expected, dtype=torch.float64))
    # b ascending: 0.05, 0.3, 0.5, 0.6, 0.7, 0.8; squares sum 1.8325
    squares = [0.0025, 0.09, 0.25, 0.36, 0.49, 0.64]
    tails = [sum(squares[i:]) for i in range(6)]  # 1.8325, 1.83, 1.74, 1.49, 1.13, 0.64
    by_rank = [s / t for s, t in zip(squares, tails, strict=True)]
    at = {0.05: 0, 0.3: 1, 0.5: 2, 0.6: 3, 0.7: 4, 0.8: 5}
    got = lamp_scores(TINY["b"])
    for w, score in zip(TINY["b"].tolist(), got.tolist(), strict=True):
        assert score == pytest.approx(by_rank[at[round(abs(w), 2)]], rel=1e-6)  # float32 in
    assert lamp_scores(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_lamp_keeps_each_layers_largest_weight_first() -> None:
    # scores: a 1.0 (0.9), 0.165 (0.4), 0.0396 (0.2), 0.0098 (0.1); b 1.0 (0.8), 0.4336 (0.7),
    # 0.2416 (0.6), 0.1437 (0.5), 0.0492 (0.3), 0.0014 (0.05)
    assert lamp_keeps(TINY, 0.2) == {"a": 0.25, "b": 1 / 6}  # both scores of 1
    assert lamp_keeps(TINY, 0.5) == {"a": 0.5, "b": 0.5}  # 1, 1, .434, .242, .165
    assert global_magnitude_keeps(TINY, 0.2) == {"a": 0.25, "b": 1 / 6}
    one = {"small": torch.full((100,), 0.01), "large": torch.tensor([5.0, 4.0])}
    assert global_magnitude_keeps(one, 0.02) == {"small": 0.0, "large": 1.0}
    assert lamp_keeps(one, 0.02)["small"] > 0  # LAMP empties no layer


def test_erk_densities_scale_with_dims_over_size_and_saturate() -> None:
    shapes = {"fc": (4, 2), "conv": (2, 2, 3, 3)}  # raw 6/8 and 10/36, sizes 8 and 36
    # 8 of 44 kept: eps * (0.75 * 8 + 10/36 * 36) = 16 eps = 8
    d = erk_densities(shapes, 8 / 44)
    assert d["fc"] == pytest.approx(0.375) and d["conv"] == pytest.approx(5 / 36)
    # 22 of 44: eps = 22/16 would give fc 1.03 > 1: fc dense, conv keeps the other 14 of 36
    d = erk_densities(shapes, 0.5)
    assert d["fc"] == 1.0 and d["conv"] == pytest.approx(14 / 36)
    assert erk_densities(shapes, 1.0) == {"fc": 1.0, "conv": pytest.approx(1.0)}


def test_uniform_spares_the_ends_and_shares_the_rest() -> None:
    sizes = {"first": 10, "mid": 80, "last": 10}
    assert uniform_keeps(sizes, 0.5, ("first", "last")) == {"first": 1, "mid": 0.375, "last": 1}
    assert uniform_keeps(sizes, 0.1, ("first", "last"))["mid"] == 0.0  # the ends take it all
    assert uniform_keeps(sizes, 0.5) == {"first": 0.5, "mid": 0.5, "last": 0.5}


def test_clip_keep_puts_a_keep_inside_its_knob() -> None:
    assert clip_keep(FloatRange(low=0.3, high=1.0), 0.05) == 0.3
    assert clip_keep(FloatRange(low=0.02, high=0.5), 0.9) == 0.5
    assert clip_keep(FloatRange(low=0.02, high=1.0), 0.001, floor=0.01) == 0.02
    assert clip_keep(FloatRange(low=0.001, high=1.0), 0.001, floor=0.01) == 0.01
    assert clip_keep(FloatRange(low=0.1, high=0.9, step=0.2), 0.42) == 0.5
    assert clip_keep(FloatRange(low=0.1, high=0.9, step=0.2), 1.0) == 0.9
    assert clip_keep(Choices(choices=(0.05, 0.2, 0.8)), 0.1) == 0.2  # nearest on a log scale
    assert clip_keep(Choices(choices=(0.05, 0.2, 0.8)), 0.01, floor=0.1) == 0.2
    assert clip_keep(0.4, 0.9) == 0.4


def test_unit_levels_are_fixed_or_the_sensitivity_pass_or_the_middle_choice() -> None:
    config = StudyConfig.model_validate(
        {
            "name": "u",
            "model": "digits-cnn",
            "dataset": "digits",
            "search": {
                "bits": {"choices": [2, 3, 4, 6, 8, None]},
                "layers": {"conv1": {"bits": 8}, "fc2": {"bits": {"low": 2, "high": 7}}},
            },
        }
    )
    units = {u.name: u for u in unit_spaces(config, LAYERS)}
    assert unit_levels(units["conv1"]) == 8  # fixed
    assert unit_levels(units["conv2"]) == 4  # the lower middle of 2, 3, 4, 6, 8
    assert unit_levels(units["fc2"]) == 4  # the middle of 2 .. 7: 4 (lower middle)
    within = {"conv2": 3, "fc1": None, "fc2": None}
    assert unit_levels(units["conv2"], within) == 3
    assert unit_levels(units["fc1"], within) is None  # none within 1 point: float32
    assert unit_levels(units["fc2"], within) == 7  # none within, no float32: the most bits
    assert IntRange(low=2, high=7).high == 7


def test_storage_targets_are_log_spaced_inside_the_range() -> None:
    assert storage_targets(1000, 16000, 3) == [2000, 4000, 8000]
    assert storage_targets(1000, 1000, 3) == []
    assert prior_order(["a", "b"], 3) == [
        ("a", 0),
        ("b", 1),
        ("a", 1),
        ("b", 2),
        ("a", 2),
        ("b", 0),
    ]


# --- on the digits CNN ---


@pytest.fixture()
def dense(dense_digits) -> DenseLayers:
    model = create_model("digits-cnn", num_classes=10, input_shape=(1, 8, 8))
    model.load_state_dict(dense_digits)
    return DenseLayers.of(model, LAYERS)


def problem(dense: DenseLayers, search: dict, bits: int | None = None) -> PriorProblem:
    config = StudyConfig.model_validate(
        {"name": "p", "model": "digits-cnn", "dataset": "digits", "search": search}
    )
    units = tuple(unit_spaces(config, LAYERS))
    return PriorProblem(dense, units, {u.name: bits for u in units})


FREE = {"keep": {"low": 0.001, "high": 1.0, "log": True}, "bits": None}


def test_the_storage_estimate_is_the_accounting_of_the_pruned_model(dense_copy, dense) -> None:
    keeps = {"conv1": 0.5, "conv2": 0.2, "fc1": 0.05, "fc2": 0.3}
    model = dense_copy()
    with torch.no_grad():
        for name, keep in keeps.items():
            w = getattr(model, name).weight
            w.copy_(Sparsity(keep).project(w))
    exact = model_storage(model, LAYERS).model_stored_bits
    plans = {n: LayerPlan(keep=k) for n, k in keeps.items()}
    assert estimated_storage_bits(dense, plans) == exact
    assert (
        estimated_storage_bits(dense, {}) == model_storage(dense_copy(), LAYERS).model_stored_bits
    )


@pytest.mark.parametrize("family", ["global", "lamp"])
def test_ranked_families_on_free_layers_are_the_layer_functions(dense, family) -> None:
    prior = prior_at_keep(family, problem(dense, FREE), 0.1)
    rule = global_magnitude_keeps if family == "global" else lamp_keeps
    expected = rule(dense.weights, 0.1)
    assert prior.keeps == {n: pytest.approx(expected[n], rel=1e-3) for n in LAYERS}
    assert prior.overall_keep == pytest.approx(0.1, rel=1e-3) and not prior.clipped


def test_erk_and_uniform_on_the_digits_cnn(dense) -> None:
    shapes = {n: tuple(w.shape) for n, w in dense.weights.items()}
    erk = prior_at_keep("erk", problem(dense, FREE), 0.1)
    assert erk.keeps == {
        n: pytest.approx(v, rel=1e-3) for n, v in erk_densities(shapes, 0.1).items()
    }
    uniform = prior_at_keep("uniform", problem(dense, FREE), 0.1)
    assert uniform.keeps["conv1"] == 1.0 and uniform.keeps["fc2"] == 1.0  # first and last
    middle = (0.1 * 38160 - 144 - 640) / (4608 + 32768)  # the rest share one keep
    assert uniform.keeps["conv2"] == uniform.keeps["fc1"] == pytest.approx(middle, rel=1e-3)


def test_a_fixed_layer_counts_at_its_keep_and_the_others_share_the_rest(dense) -> None:
    fixed = {**FREE, "layers": {"fc1": {"keep": 0.05}}}
    prior = prior_at_keep("global", problem(dense, fixed), 0.1)
    assert set(prior.keeps) == {"conv1", "conv2", "fc2"}
    free = {n: dense.weights[n] for n in ("conv1", "conv2", "fc2")}
    share = (0.1 * 38160 - 0.05 * 32768) / (144 + 4608 + 640)
    expected = global_magnitude_keeps(free, share)
    assert prior.keeps == {n: pytest.approx(v, rel=1e-3) for n, v in expected.items()}
    assert prior.overall_keep == pytest.approx(0.1, rel=1e-3)


def test_a_tied_group_gets_its_layers_share(dense) -> None:
    tied = {**FREE, "groups": {"fc": ["fc1", "fc2"]}}
    prior = prior_at_keep("global", problem(dense, tied), 0.1)
    layer = global_magnitude_keeps(dense.weights, 0.1)
    kept = layer["fc1"] * 32768 + layer["fc2"] * 640
    assert set(prior.keeps) == {"conv1", "conv2", "fc"}
    assert prior.keeps["fc"] == pytest.approx(kept / (32768 + 640), rel=1e-3)


def test_a_keep_outside_its_range_is_clipped_and_says_so(dense) -> None:
    ranged = {**FREE, "layers": {"fc1": {"keep": {"low": 0.2, "high": 0.6}}}}
    prior = prior_at_keep("global", problem(dense, ranged), 0.05)
    family_keep, used = prior.clipped["fc1"]
    assert family_keep < 0.2 and used == prior.keeps["fc1"] == 0.2
    assert set(prior.clipped) == {"fc1"} and prior.overall_keep > 0.05


@pytest.mark.parametrize("family", ZERO_COST)
def test_a_storage_target_is_met_by_bisection(dense, family) -> None:
    space = problem(dense, {"keep": {"low": 0.01, "high": 1.0, "log": True}}, bits=4)
    low, high = storage_range(space)
    assert low < high
    for target in storage_targets(low, high, 3):
        prior = prior_at_storage(family, space, target)
        assert prior.target_bits == target
        assert prior.storage_bits <= target
        assert prior.storage_bits > 0.97 * target  # tight: a little more keep would exceed it
        assert all(0.01 <= k <= 1.0 for k in prior.keeps.values())
    below = prior_at_storage(family, space, low // 2)  # below reach: the least keep's prior
    assert below.storage_bits == prior_at_keep(family, space, 1 / 38160).storage_bits
    assert (below.storage_bits == low) == (family != "uniform")  # uniform spares 2 layers


@pytest.mark.parametrize("family", ZERO_COST)
def test_with_every_keep_fixed_a_prior_is_the_fixed_plan(dense, family) -> None:
    prior = prior_at_keep(family, problem(dense, {"keep": 0.25, "bits": None}), 0.9)
    assert prior.keeps == {} and prior.overall_keep == pytest.approx(0.25)
    assert global_magnitude_keeps({}, 0.5) == {}


def test_an_unknown_family_is_refused(dense) -> None:
    with pytest.raises(ValueError, match="family must be one of global, lamp, erk, uniform"):
        prior_at_keep("random", problem(dense, FREE), 0.1)
    assert math.isclose(sum(SIZES.values()), 38160)
