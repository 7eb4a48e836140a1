"""The budgeted allocator: exact (brute force agrees), never over budget, a hand-worked case."""

from __future__ import annotations

import itertools
import random

import pytest

from admmsearch.search.allocation import (
    Option,
    allocate,
    allocate_many,
    log_budgets,
    pareto_front,
)


def test_hand_worked_case() -> None:
    """Three layers, the smallest options cost too much accuracy in fc1.

    conv: 100 bits loss 0, 40 bits loss .02;  fc1: 1000 loss 0, 300 loss .01, 100 loss .20;
    fc2: 50 loss 0, 20 loss .03; fixed 30 bits. Budget 430: fc1 must drop to 300 (1000 does
    not fit); then 430 - 30 - 300 = 100 is left for conv + fc2: 40 + 50 (loss .02) beats
    100 + 20 (loss .03) and 40 + 20 (.05). Best: 40 / 300 / 50, 420 bits, loss .03.
    """
    conv = [Option("conv", 100, 0.0), Option("conv", 40, 0.02)]
    fc1 = [Option("fc1", 1000, 0.0), Option("fc1", 300, 0.01), Option("fc1", 100, 0.20)]
    fc2 = [Option("fc2", 50, 0.0), Option("fc2", 20, 0.03)]
    best = allocate([conv, fc1, fc2], budget_bits=430, fixed_bits=30)
    assert [o.storage_bits for o in best.options] == [40, 300, 50]
    assert best.storage_bits == 420 and best.loss == pytest.approx(0.03)
    assert allocate([conv, fc1, fc2], budget_bits=189, fixed_bits=30) is None  # 30+40+100+20
    top = allocate([conv, fc1, fc2], budget_bits=10**6, fixed_bits=30)
    assert top.loss == 0.0 and top.storage_bits == 1180


def _random_units(rng: random.Random) -> list[list[Option]]:
    units = []
    for u in range(rng.randint(1, 4)):
        units.append(
            [
                Option(f"u{u}", rng.randint(1, 400), round(rng.uniform(-0.01, 0.3), 3))
                for _ in range(rng.randint(1, 5))
            ]
        )
    return units


@pytest.mark.parametrize("seed", range(40))
def test_matches_brute_force_and_never_exceeds_the_budget(seed: int) -> None:
    rng = random.Random(seed)
    units = _random_units(rng)
    fixed = rng.randint(0, 50)
    combos = list(itertools.product(*units))
    budgets = [rng.randint(fixed, fixed + 1600) for _ in range(6)]
    for budget, got in zip(budgets, allocate_many(units, budgets, fixed), strict=True):
        fits = [c for c in combos if fixed + sum(o.storage_bits for o in c) <= budget]
        if not fits:
            assert got is None
            continue
        best = min(sum(o.loss for o in c) for c in fits)
        assert got is not None and got.loss == pytest.approx(best, abs=1e-12)
        assert got.storage_bits == fixed + sum(o.storage_bits for o in got.options) <= budget
        assert [o.unit for o in got.options] == [options[0].unit for options in units]


def test_front_is_non_dominated_and_sorted() -> None:
    rng = random.Random(7)
    units = _random_units(rng) + _random_units(rng)
    front = pareto_front(units)
    storage = [s for s, _, _ in front]
    losses = [loss for _, loss, _ in front]
    assert storage == sorted(storage) and len(set(storage)) == len(storage)
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))


def test_budgets_are_log_spaced_inside_the_range() -> None:
    units = [[Option("a", 10, 0), Option("a", 1000, 0)], [Option("b", 0, 0), Option("b", 10, 0)]]
    budgets = log_budgets(units, 3, fixed_bits=0)
    assert budgets == [31, 100, 318]  # geomspace(10, 1010, 5)[1:-1], floored
    assert log_budgets(units, 0) == [] and log_budgets([[Option("a", 5, 0)]], 3) == []


def test_the_worked_example_in_the_module_docstring() -> None:
    import doctest

    from admmsearch.search import allocation

    result = doctest.testmod(allocation)
    assert result.attempted >= 3 and result.failed == 0
