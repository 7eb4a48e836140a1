"""The coding rules (admmsearch.packed: coding, grids): which values are raw, a codebook or a
uniform grid, and what each costs in bits."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from admmsearch.constraints import UniformQuantization
from admmsearch.packed import _grids as grids
from admmsearch.packed._accounting import value_coding_bits
from admmsearch.packed._coding import coding_of, distinct_values, uniform_levels


@pytest.mark.parametrize(
    ("values", "expected", "kind"),
    [
        ([1.5] * 5, (0, 1), "codebook"),  # K = 1: 5 * 0 + 32 = 32; a grid needs 1-bit codes
        ([1.5], (32, 0), "raw"),  # K = 1 but 0 + 32 is not < 32: raw
        ([0.3, -0.71, 0.3, -0.71], (1, 2), "codebook"),  # 4 * 1 + 64 = 68 < 128; no grid
        ([0.3, -0.71, 0.5], (32, 0), "raw"),  # 3 * 2 + 96 = 102 >= 96: raw
        ([1.0, 2.0, 1.0, 2.0], (2, 0), "uniform"),  # 1, 2 on the symmetric grid -1..2: 8 + 32
        ([1.0, 2.0, 3.0], (3, 0), "uniform"),  # symmetric -3..4: 3 * 3 + 32 = 41 < 96
        ([float(i) for i in range(100)], (7, 0), "uniform"),  # 0..99 from a zero point: 700 + 64
        ([float(i % 8) for i in range(100)], (3, 0), "uniform"),  # 300 + 64 < 300 + 256
        ([0.1 * i for i in range(100)], (32, 0), "raw"),  # float64 steps: no float32 grid
        ([0.0, -0.0] * 10, (1, 2), "codebook"),  # distinct bit patterns are distinct values
    ],
)
def test_value_coding_bits(values: list[float], expected: tuple[int, int], kind: str) -> None:
    assert value_coding_bits(torch.tensor(values)) == expected
    bits = torch.tensor(values).numpy().view(np.uint32)
    assert coding_of(bits.size, distinct_values(bits)).kind == kind


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8, 12, 16])
@pytest.mark.parametrize("zero", [True, False])
def test_uniform_grids_cost_one_scale(bits: int, zero: bool) -> None:
    """A b-bit grid of the quantizer, at a scale that is no power of two, costs b bits a value
    plus one float32, whichever levels a pruned layer happens to use."""
    generator = torch.Generator().manual_seed(bits)
    grid = UniformQuantization(bits, zero=zero).grid().to(torch.float32)
    used = grid[grid.abs() >= grid.max() // 3] if bits > 2 else grid
    levels = used[torch.randint(len(used), (5000,), generator=generator)]
    scale = torch.tensor(0.0123, dtype=torch.float32)
    values = scale * levels  # float32 products, as the parametrization computes them
    coding = coding_of(values.numel(), distinct_values(values.numpy().view(np.uint32)))
    assert (coding.kind, coding.width, coding.zero_stored) == ("uniform", bits, False)
    assert np.uint32(coding.scale).view(np.float32) == scale.item()
    codes = (levels.numpy().astype(np.int64) - coding.zero) // coding.stride
    decoded = np.float32(scale.item()) * (coding.zero + coding.stride * codes).astype(np.float32)
    assert np.array_equal(decoded.view(np.uint32), values.numpy().view(np.uint32))


def test_uniform_levels_needs_exact_products() -> None:
    assert doctest.testmod(grids).failed == 0
    values = np.array([0.5, 1.0, 1.5], dtype=np.float32)
    scale, levels = uniform_levels(values)
    assert (np.uint32(scale).view(np.float32), list(levels)) == (0.5, [1, 2, 3])
    nudged = values.copy()
    nudged[2] = np.nextafter(nudged[2], np.float32(2))  # one ulp off the grid
    assert uniform_levels(nudged) is None
    assert uniform_levels(np.array([0.0], dtype=np.float32)) is None
