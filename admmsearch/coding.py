"""Coding rules of the storage accounting: value codebooks, gap indices with fillers, CSR.

Each rule is a small pure function of counts and positions; ``storage`` applies them to layers
and ``packing`` writes exactly the bits they count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FLOAT_BITS",
    "MAX_GAP_BITS",
    "best_gap",
    "csr_index_bits",
    "csr_layout",
    "distinct_count",
    "gap_index_bits",
    "value_bits",
    "value_coding",
    "value_coding_bits",
]

FLOAT_BITS = 32
MAX_GAP_BITS = 16


def value_coding_bits(values: Tensor) -> tuple[int, int]:
    """Code width and codebook size for a multiset of float32 values.

    Distinct values are distinct float32 bit patterns. With ``K`` distinct values a codebook
    costs ``c = ceil(log2 K)`` bits per value (0 when ``K == 1``) plus ``32 * K``; it is used only
    when smaller than raw float32. Example: 3 values with ``K = 2`` cost ``3 * 1 + 64 = 67 < 96``.

    Returns:
        ``(c, K)``; raw coding is ``(32, 0)``, so a stream always costs ``count * c + 32 * K``.
    """
    bits = values.detach().cpu().to(torch.float32).reshape(-1).numpy().view(np.int32)
    return value_coding(bits.size, distinct_count(bits))


def distinct_count(bits: np.ndarray) -> int:
    """Number of distinct entries; sorting is several times faster than ``np.unique`` here."""
    ordered = np.sort(bits)
    return int(ordered.size > 0) + int(np.count_nonzero(ordered[1:] != ordered[:-1]))


def value_coding(count: int, distinct: int) -> tuple[int, int]:
    width = (distinct - 1).bit_length() if distinct > 1 else 0
    if count * width + FLOAT_BITS * distinct < FLOAT_BITS * count:
        return width, distinct
    return FLOAT_BITS, 0


def value_bits(count: int, width: int, codebook_size: int) -> int:
    return count * width + FLOAT_BITS * codebook_size


def gap_index_bits(positions: Tensor | np.ndarray, gap_bits: int) -> tuple[int, int]:
    """Gap-index bits and filler count for strictly increasing flat ``positions`` at one width.

    Example: positions 0 and 41 give gaps 1 and 41; at ``g = 3`` a gap of 41 needs
    ``(41 - 1) // 7 = 5`` fillers, so the index costs ``3 * (2 + 5) = 21`` bits.

    Raises:
        ValueError: ``gap_bits`` is below 1, or the positions are not strictly increasing.
    """
    if gap_bits < 1:
        raise ValueError(f"gap_bits must be at least 1, got {gap_bits}")
    flat = _as_positions(positions)
    fillers = int((_gap_excess(flat) // ((1 << gap_bits) - 1)).sum())
    return gap_bits * (flat.size + fillers), fillers


def _as_positions(positions: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(positions, Tensor):
        positions = positions.detach().cpu().numpy()
    return np.asarray(positions, dtype=np.int64).reshape(-1)


def _gap_excess(positions: np.ndarray) -> np.ndarray:
    """``d - 1`` for every gap ``d`` (previous position -1 before the first), zeros dropped."""
    excess = np.diff(positions, prepend=-1) - 1
    if excess.size and excess.min() < 0:
        raise ValueError("positions must be non-negative and strictly increasing")
    return excess[excess > 0]


def _fillers_per_width(positions: np.ndarray) -> np.ndarray:
    """Fillers for each width g = 1..16; each pass keeps only the gaps that still overflow."""
    excess = _gap_excess(positions)
    fillers = np.zeros(MAX_GAP_BITS, dtype=np.int64)
    for gap_bits in range(1, MAX_GAP_BITS + 1):
        span = (1 << gap_bits) - 1
        excess = excess[excess >= span]
        fillers[gap_bits - 1] = (excess // span).sum()
    return fillers


def best_gap(positions: np.ndarray) -> tuple[int, int, int]:
    """``(g, fillers, index bits)`` minimising the index bits; ``argmin`` keeps the smaller g."""
    fillers = _fillers_per_width(positions)
    widths = np.arange(1, MAX_GAP_BITS + 1)
    bits = widths * (positions.size + fillers)
    best = int(np.argmin(bits))
    return best + 1, int(fillers[best]), int(bits[best])


def csr_layout(shape: Sequence[int], nonzeros: int) -> tuple[int, int, int, int]:
    """``(rows, cols, row-pointer bits, column-index bits)`` of the CSR view of a weight.

    Rows are ``shape[0]`` (1 for 0-d and 1-d weights), columns the rest flattened. Row pointers
    take ``ceil(log2(m + 1))`` bits each, column indices ``ceil(log2 cols)``. Example: a 1x10
    weight with 3 nonzeros has ``(1, 10, 2, 4)``: ``2 * 2 + 3 * 4 = 16`` index bits.
    """
    numel = int(np.prod(shape, dtype=np.int64))
    rows = int(shape[0]) if len(shape) >= 2 else 1
    cols = numel // rows if rows else 0
    return rows, cols, nonzeros.bit_length(), max(cols - 1, 0).bit_length()


def csr_index_bits(shape: Sequence[int], nonzeros: int) -> int:
    rows, _, pointer_bits, column_bits = csr_layout(shape, nonzeros)
    return (rows + 1) * pointer_bits + nonzeros * column_bits
