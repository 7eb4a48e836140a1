"""Storage accounting: hand-computed figures, the coding rules, and whole-model reports."""

from __future__ import annotations

import doctest
import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

from admmsearch.errors import ConstraintError, LayerError
from admmsearch.packed import _accounting as storage
from admmsearch.packed._accounting import (
    csr_layout,
    gap_index_bits,
    layer_storage,
    model_storage,
)
from admmsearch.packed._coding import best_gap

EXAMPLE = torch.tensor([[0, 0.5, 0, 0, 0, 0, 0, -0.5, 0, 0.5]])  # uniform: 0.5 * {-1, +1}
LEARNED = torch.tensor([[0, 0.3, 0, 0, 0, 0, 0, -0.71, 0, 0.3]])  # two centroids, no grid


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(storage)
    assert result.attempted >= 3 and result.failed == 0


def _gap_figures(gaps: list[int], trailing: int) -> tuple[dict[int, int], dict[int, int]]:
    """Fillers and index bits per width for the gaps and the zeros after the last nonzero."""
    fillers = {
        g: sum((d - 1) // (2**g - 1) for d in gaps) + trailing // (2**g - 1) for g in range(1, 17)
    }
    return fillers, {g: g * (len(gaps) + fillers[g]) for g in range(1, 17)}


def test_worked_example_by_hand() -> None:
    n, m = 10, 3
    fillers, index = _gap_figures([2, 6, 2], trailing=0)  # positions 1, 7, 9 of 10
    assert (fillers[1], fillers[2], fillers[3]) == (7, 1, 0)
    assert (index[1], index[2], index[3]) == (10, 8, 9)
    best_g = min(index, key=lambda g: (index[g], g))
    # uniform: one float32 scale (0.5) and 1-bit codes for the odd levels -1, +1
    uniform_data = m * 1 + 32  # 35 < codebook 3 * 1 + 2 * 32 = 67 < raw 96
    uniform_dense = n * 2 + 32  # levels -1, 0, 1 need 2 bits: 52
    s = layer_storage("fc", EXAMPLE)
    assert (s.numel, s.nonzeros, s.dense_bits) == (n, m, 320)
    assert (s.coding, s.code_bits, s.codebook_size, s.data_bits) == ("uniform", 1, 0, uniform_data)
    assert (s.encoding, s.gap_bits, s.fillers) == ("gap", best_g, fillers[best_g]) == ("gap", 2, 1)
    assert (s.stored_coding, s.stored_code_bits, s.stored_codebook_size) == ("uniform", 1, 0)
    assert s.index_bits == index[2] == 8
    assert s.stored_bits == uniform_data + 8 == 43 < uniform_dense == 52
    assert s.sparsity == pytest.approx(0.7)
    assert s.ratio_no_index == pytest.approx(320 / 35)
    assert s.ratio_with_index == pytest.approx(320 / 43)
    # learned levels: a codebook of K = 2 float32 and 1-bit codes
    learned_data = m * math.ceil(math.log2(2)) + 32 * 2  # 67 < 96
    learned_dense = n * math.ceil(math.log2(3)) + 32 * 3  # 116
    c = layer_storage("fc", LEARNED)
    assert (c.coding, c.code_bits, c.codebook_size, c.data_bits) == (
        "codebook",
        1,
        2,
        learned_data,
    )
    assert c.stored_bits == learned_data + 8 == 75 < learned_dense


def test_worked_example_csr_by_hand() -> None:
    pointer_bits, column_bits = math.ceil(math.log2(3 + 1)), math.ceil(math.log2(10))  # 2, 4
    index_bits = (1 + 1) * pointer_bits + 3 * column_bits  # 16
    s = layer_storage("fc", EXAMPLE, index_format="csr")
    assert csr_layout((1, 10), 3) == (1, 10, 2, 4)
    assert (s.encoding, s.gap_bits, s.fillers, s.index_bits) == ("csr", 0, 0, index_bits)
    assert s.stored_bits == 35 + 16 == 51
    assert layer_storage("fc", LEARNED, index_format="csr").stored_bits == 67 + 16 == 83


def test_gap_overflow_needs_fillers() -> None:
    positions = [0, 41]  # gaps 1 and 41; at g = 3 a gap of 41 needs (41 - 1) // 7 = 5 fillers
    assert gap_index_bits(np.array(positions), 3) == (3 * (2 + 5), 5)
    assert gap_index_bits(torch.tensor(positions), 3) == (21, 5)
    by_hand = {
        1: (42, 40),
        2: (30, 13),
        3: (21, 5),
        4: (16, 2),
        5: (15, 1),
        6: (12, 0),
        7: (14, 0),
    }
    for g, figures in by_hand.items():
        assert gap_index_bits(positions, g) == figures
    weight = torch.zeros(1, 64)
    weight[0, positions] = 1.0
    s = layer_storage("w", weight)
    # values: K = 1, c = 0 -> 32 bits; dense would be 64 * 1 + 32 = 96 bits (grid 0, 1)
    assert (s.encoding, s.gap_bits, s.fillers, s.index_bits) == ("gap", 6, 0, 12)
    assert (s.data_bits, s.stored_bits) == (32, 44)


def test_gap_width_ties_go_to_smaller_width() -> None:
    positions = np.arange(0, 9, 3)  # gaps 1, 3, 3: g=1 -> 1*(3+4)=7, g=2 -> 2*3=6, g=3 -> 9
    assert [gap_index_bits(positions, g)[0] for g in (1, 2, 3)] == [7, 6, 9]
    positions = np.array([1, 3])  # gaps 2, 2: g=1 -> 1*(2+2)=4, g=2 -> 2*2=4 -> choose g=1
    assert best_gap(positions, 4) == (1, 2, 4)


def test_gap_index_covers_trailing_zeros() -> None:
    positions = np.array([1, 3])  # then 36 zeros up to 40 entries
    assert gap_index_bits(positions, 3, 40) == (3 * (2 + 0 + 36 // 7), 5)
    _, index = _gap_figures([2, 2], trailing=36)
    assert best_gap(positions, 40) == (6, 0, 12) == (6, 0, index[6])
    with pytest.raises(ValueError, match="below numel"):
        gap_index_bits(positions, 3, 3)


def test_gap_index_bits_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        gap_index_bits(np.array([3, 3]), 2)
    with pytest.raises(ValueError, match="gap_bits"):
        gap_index_bits(np.array([3]), 0)


def test_csr_figures() -> None:
    weight = torch.zeros(4, 3, 2)  # 4 rows of 6 columns
    learned = torch.tensor([0.3, -0.71, 0.3, -0.71, 0.3])  # a codebook of two centroids
    weight.view(4, 6)[[0, 0, 2, 3, 3], [0, 5, 1, 2, 4]] = learned
    s = layer_storage("conv", weight, index_format="csr")
    pointer_bits, column_bits = math.ceil(math.log2(5 + 1)), math.ceil(math.log2(6))  # 3, 3
    assert csr_layout((4, 3, 2), 5) == (4, 6, 3, 3)
    assert s.index_bits == 5 * pointer_bits + 5 * column_bits == 30
    assert s.data_bits == 5 * 1 + 2 * 32 == 69
    assert (s.encoding, s.stored_bits) == ("csr", 99)  # dense: 24 * 2 + 3 * 32 = 144
    assert csr_layout((7,), 2) == (1, 7, 2, 3)  # 1-d weights are one row
    assert csr_layout((5, 1), 2) == (5, 1, 2, 0)  # one column needs no column index


def test_dense_chosen_without_zeros() -> None:
    weight = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    s = layer_storage("fc", weight)
    assert (s.encoding, s.gap_bits, s.fillers, s.index_bits) == ("dense", 0, 0, 0)
    assert (s.stored_code_bits, s.stored_codebook_size) == (32, 0)
    assert s.stored_bits == s.data_bits == s.dense_bits == 12 * 32
    assert s.ratio_with_index == 1.0


def test_ties_go_to_dense() -> None:
    weight = torch.zeros(1, 4)
    weight[0, 0] = 1.5  # dense: grid 0, 1 at scale 1.5, 4 * 1 + 32 = 36
    s = layer_storage("w", weight, index_format="csr")  # csr: 32 + 2 * 1 + 1 * 2 = 36
    assert (s.encoding, s.stored_bits) == ("dense", 36)
    weight = torch.randn(1, 32, generator=torch.Generator().manual_seed(3))
    weight[0, 5] = 0.0  # dense raw 32 * 32 = 1024; gap 31 * 32 raw + 1 * (31 + 1) = 1024
    s = layer_storage("w", weight)
    assert (s.encoding, s.stored_bits, s.stored_coding) == ("dense", 1024, "raw")


def test_negative_zero_is_pruned() -> None:
    weight = EXAMPLE.clone()
    weight[weight == 0] = -0.0
    assert layer_storage("fc", weight) == layer_storage("fc", EXAMPLE)


def test_bias_bits() -> None:
    s = layer_storage("fc", EXAMPLE, bias=torch.zeros(7))
    assert s.bias_bits == 7 * 32
    assert layer_storage("fc", EXAMPLE).bias_bits == 0


def test_empty_layer_raises() -> None:
    with pytest.raises(ConstraintError, match="layer 'fc' has no nonzero weight"):
        layer_storage("fc", torch.full((3, 3), -0.0))


def test_bad_index_format_raises() -> None:
    with pytest.raises(ValueError, match="index_format"):
        layer_storage("fc", EXAMPLE, index_format="coo")
    with pytest.raises(ValueError, match="index_format"):
        model_storage(nn.Linear(2, 2), [""], index_format="coo")


def test_non_float32_weight_raises() -> None:
    with pytest.raises(ConstraintError, match="float32"):
        layer_storage("fc", EXAMPLE.double())


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 6), nn.BatchNorm1d(6), nn.Linear(6, 3, bias=False))


def test_model_storage_totals() -> None:
    model = _model()
    with torch.no_grad():
        model[0].weight[:, ::2] = 0.0
    report = model_storage(model, ["0", "2"])
    first, last = report.layers
    assert first == layer_storage("0", model[0].weight, model[0].bias)
    assert last == layer_storage("2", model[2].weight)
    bn_bits = 4 * 6 * 32 + 64  # weight, bias, running mean and var; num_batches_tracked int64
    assert report.other_bits == bn_bits
    assert report.bias_bits == 6 * 32
    assert report.dense_weight_bits == (60 + 18) * 32
    assert report.model_dense_bits == (60 + 18 + 6) * 32 + bn_bits
    assert report.model_stored_bits == first.stored_bits + last.stored_bits + 6 * 32 + bn_bits
    assert report.model_ratio == report.model_dense_bits / report.model_stored_bits
    assert report.weight_ratio_no_index == report.dense_weight_bits / report.data_bits
    assert report.weight_ratio_with_index == report.dense_weight_bits / report.stored_bits


def test_frame_and_summary() -> None:
    report = model_storage(_model(), ["0", "2"], index_format="csr")
    frame = report.to_frame()
    assert list(frame["name"]) == ["0", "2"]
    assert {"stored_bits", "encoding", "sparsity", "ratio_with_index"} <= set(frame.columns)
    summary = report.summary()
    assert summary["model_stored_bits"] == report.model_stored_bits
    assert summary["weight_ratio_no_index"] == report.weight_ratio_no_index
    assert summary["weight_sparsity"] == 0.0
    assert all(isinstance(value, float) for value in summary.values())


class _Mask(nn.Module):
    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def test_parametrized_model_counts_effective_tensors() -> None:
    model, plain = _model(), _model()
    mask = (torch.arange(60) % 3 == 0).float().reshape(6, 10)
    parametrize.register_parametrization(model[0], "weight", _Mask(mask))
    parametrize.register_parametrization(model[1], "weight", _Mask(torch.ones(6)))
    with torch.no_grad():
        plain[0].weight.mul_(mask)
    assert model_storage(model, ["0", "2"]) == model_storage(plain, ["0", "2"])


def test_unknown_layer_raises() -> None:
    with pytest.raises(LayerError, match="'9'.*modules with one"):
        model_storage(_model(), ["9"])
    with pytest.raises(ValueError, match="more than once"):
        model_storage(_model(), ["0", "0"])
    with pytest.raises(ValueError, match="empty"):
        model_storage(_model(), [])


@settings(max_examples=200, deadline=None)
@given(
    positions=st.sets(st.integers(0, 5000), min_size=1, max_size=40),
    gap_bits=st.integers(1, 16),
)
def test_gap_bits_match_a_plain_loop(positions: set[int], gap_bits: int) -> None:
    ordered = sorted(positions)
    previous, fillers = -1, 0
    for position in ordered:
        fillers += (position - previous - 1) // (2**gap_bits - 1)
        previous = position
    assert gap_index_bits(np.array(ordered), gap_bits) == (
        gap_bits * (len(ordered) + fillers),
        fillers,
    )
    fillers += (5001 - 1 - previous) // (2**gap_bits - 1)  # the zeros after the last nonzero
    assert gap_index_bits(np.array(ordered), gap_bits, 5001) == (
        gap_bits * (len(ordered) + fillers),
        fillers,
    )
    weight = torch.zeros(5001)
    weight[ordered] = 1.0
    s = layer_storage("w", weight)
    if s.encoding == "gap":
        bits = {g: gap_index_bits(np.array(ordered), g, 5001)[0] for g in range(1, 17)}
        best = min(bits, key=lambda g: (bits[g], g))
        assert (s.gap_bits, s.index_bits) == (best, bits[best])


def test_large_layer_is_fast() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(2400, 1000, generator=generator)
    weight[torch.rand(weight.shape, generator=generator) < 0.5] = 0.0
    for index_format in ("gap", "csr"):
        start = time.perf_counter()
        layer_storage("big", weight, index_format=index_format)
        assert time.perf_counter() - start < 1.0
