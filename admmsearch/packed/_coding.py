"""Coding rules of the storage accounting: value codings, gap indices with fillers, CSR.

Each rule is a small pure function of counts, values and positions; ``storage`` applies them to
layers and ``packing`` writes exactly the bits they count.

A stream of float32 values is coded in the cheapest of three exact ways (ties go to the earlier):

* ``"raw"``: 32 bits per value.
* ``"codebook"``: the ``K`` distinct bit patterns as float32 (``32 * K`` bits), then a
  ``ceil(log2 K)``-bit code per value. This is what learned levels (clustering) need.
* ``"uniform"``: one float32 scale ``s`` and ``c``-bit codes; code ``j`` stands for the integer
  level ``q = z + t * j`` and decodes as the float32 product ``s * q``, exactly (a C decoder
  gets the same bits with ``(float)s * (float)q``). The stride ``t`` is in the file's header; the
  zero point ``z`` is implied for a symmetric grid, ``z = -((t * (2**c - 1)) // 2)``, and
  otherwise stored as a 32-bit integer beside the scale. A uniform b-bit layer thus costs
  ``32 + n * b`` bits instead of a codebook's ``32 * 2**b + n * b``.

Which layers are uniform is read from the values alone (:func:`uniform_levels`): a stream is
uniform when some float32 ``s`` and small integers ``q`` reproduce every value bit for bit. The
pipeline's uniform quantization produces exactly such values (``masking.Quantized`` keeps
integer levels and one scale), so the accounting needs no word from the pipeline, and a model
quantized elsewhere is charged by the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._grids import MAX_UNIFORM_LEVELS, uniform_levels

__all__ = [
    "FLOAT_BITS",
    "MAX_GAP_BITS",
    "ValueCoding",
    "best_gap",
    "coding_of",
    "csr_index_bits",
    "csr_layout",
    "distinct_values",
    "gap_index_bits",
    "symmetric_zero",
    "uniform_levels",
    "value_coding_bits",
]

FLOAT_BITS = 32
MAX_GAP_BITS = 16
_RAW = "raw"
_CODEBOOK = "codebook"
_UNIFORM = "uniform"


@dataclass(frozen=True)
class ValueCoding:
    """How one stream of float32 values is coded.

    Attributes:
        kind: ``"raw"``, ``"codebook"`` or ``"uniform"``.
        width: bits per value (32 for raw; 0 when a codebook or grid has one entry).
        codebook_size: ``K`` float32 entries before the codes (codebook only).
        scale: the uniform scale's float32 bit pattern (uniform only).
        zero: the integer level of code 0 (uniform only).
        stride: integer step between consecutive codes' levels (uniform only).
        zero_stored: the zero point is stored (32 bits) because the grid is not symmetric.
    """

    kind: str
    width: int
    codebook_size: int = 0
    scale: int = 0
    zero: int = 0
    stride: int = 1
    zero_stored: bool = False

    @property
    def table_bits(self) -> int:
        """Bits before the codes: the codebook, or the scale and any zero point."""
        if self.kind == _CODEBOOK:
            return FLOAT_BITS * self.codebook_size
        if self.kind == _UNIFORM:
            return FLOAT_BITS * (1 + self.zero_stored)
        return 0

    def bits(self, count: int) -> int:
        """Bits of ``count`` values in this coding: ``count * width + table_bits``."""
        return count * self.width + self.table_bits


RAW = ValueCoding(_RAW, FLOAT_BITS)


def value_coding_bits(values: Tensor) -> tuple[int, int]:
    """Code width and codebook size of the cheapest coding of a multiset of float32 values.

    Example: 3 values ``{0.5, -0.5, 0.5}`` lie on the grid ``0.5 * {-1, 1}``: 1-bit codes and a
    scale, ``3 * 1 + 32 = 35`` bits (a codebook would cost ``3 + 64``, raw ``96``).

    Returns:
        ``(c, K)``; raw coding is ``(32, 0)`` and a uniform grid ``(c, 0)``.
    """
    bits = values.detach().cpu().to(torch.float32).reshape(-1).numpy().view(np.uint32)
    coding = coding_of(bits.size, distinct_values(bits))
    return coding.width, coding.codebook_size


def distinct_values(bits: np.ndarray) -> np.ndarray:
    """Sorted distinct uint32 bit patterns; sorting is several times faster than ``np.unique``."""
    ordered = np.sort(bits.view(np.uint32).reshape(-1))
    if ordered.size == 0:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def coding_of(count: int, distinct: np.ndarray) -> ValueCoding:
    """The cheapest exact coding of ``count`` values whose distinct bit patterns are ``distinct``.

    Raw, codebook and uniform are compared in that order; a later one must be strictly smaller.
    """
    size = int(distinct.size)
    best = RAW
    width = (size - 1).bit_length() if size > 1 else 0
    codebook = ValueCoding(_CODEBOOK, width, size)
    if codebook.bits(count) < best.bits(count):
        best = codebook
    if size <= MAX_UNIFORM_LEVELS + 1:
        uniform = _uniform_coding(count, distinct)
        if uniform is not None and uniform.bits(count) < best.bits(count):
            best = uniform
    return best


def symmetric_zero(width: int, stride: int) -> int:
    """The implied zero point of a symmetric grid of ``2**width`` codes spaced ``stride``."""
    return -((stride * ((1 << width) - 1)) // 2)


def _uniform_coding(count: int, distinct: np.ndarray) -> ValueCoding | None:
    """The uniform coding of values with these distinct bit patterns, or None."""
    found = uniform_levels(distinct.view(np.float32))
    if found is None:
        return None
    scale, levels = found
    low, high = int(levels.min()), int(levels.max())
    stride = int(np.gcd.reduce(levels - low)) or 1
    width = ((high - low) // stride).bit_length()
    options = [
        ValueCoding(_UNIFORM, width, 0, scale, low, stride, zero_stored=True),
    ]
    for sym_width in range(width, width + 3):
        zero = symmetric_zero(sym_width, stride)
        codes = levels - zero
        if np.all(codes % stride == 0) and codes.min() >= 0 and high - zero < stride << sym_width:
            options.insert(0, ValueCoding(_UNIFORM, sym_width, 0, scale, zero, stride))
            break
    return min(options, key=lambda c: c.bits(count))  # min keeps the first (symmetric) on ties


def gap_index_bits(
    positions: Tensor | np.ndarray, gap_bits: int, numel: int | None = None
) -> tuple[int, int]:
    """Gap-index bits and filler count for strictly increasing flat ``positions`` at one width.

    Example: positions 0 and 41 give gaps 1 and 41; at ``g = 3`` a gap of 41 needs
    ``(41 - 1) // 7 = 5`` fillers, so the index costs ``3 * (2 + 5) = 21`` bits. With ``numel``
    the index also covers the zeros after the last nonzero: ``(numel - 1 - last) // 7`` more
    fillers, so that a reader can check the layer's size against its index.

    Raises:
        ValueError: ``gap_bits`` is below 1, the positions are not strictly increasing, or one
            lies at or past ``numel``.
    """
    if gap_bits < 1:
        raise ValueError(f"gap_bits must be at least 1, got {gap_bits}")
    flat = _as_positions(positions)
    fillers = int((_gap_excess(flat, numel) // ((1 << gap_bits) - 1)).sum())
    return gap_bits * (flat.size + fillers), fillers


def _as_positions(positions: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(positions, Tensor):
        positions = positions.detach().cpu().numpy()
    return np.asarray(positions, dtype=np.int64).reshape(-1)


def _gap_excess(positions: np.ndarray, numel: int | None = None) -> np.ndarray:
    """``d - 1`` for every gap ``d`` (previous position -1 before the first), then the zeros
    after the last nonzero when ``numel`` is given; zeros dropped."""
    ends = positions if numel is None else np.append(positions, numel)
    excess = np.diff(ends, prepend=-1) - 1
    if excess.size and excess.min() < 0:
        raise ValueError("positions must be non-negative, strictly increasing and below numel")
    return excess[excess > 0]


def _fillers_per_width(positions: np.ndarray, numel: int | None) -> np.ndarray:
    """Fillers for each width g = 1..16; each pass keeps only the gaps that still overflow."""
    excess = _gap_excess(positions, numel)
    fillers = np.zeros(MAX_GAP_BITS, dtype=np.int64)
    for gap_bits in range(1, MAX_GAP_BITS + 1):
        span = (1 << gap_bits) - 1
        excess = excess[excess >= span]
        fillers[gap_bits - 1] = (excess // span).sum()
    return fillers


def best_gap(positions: np.ndarray, numel: int | None = None) -> tuple[int, int, int]:
    """``(g, fillers, index bits)`` minimising the index bits; ``argmin`` keeps the smaller g."""
    fillers = _fillers_per_width(positions, numel)
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
    numel = math.prod(int(d) for d in shape)
    rows = int(shape[0]) if len(shape) >= 2 else 1
    cols = numel // rows if rows else 0
    return rows, cols, nonzeros.bit_length(), max(cols - 1, 0).bit_length()


def csr_index_bits(shape: Sequence[int], nonzeros: int) -> int:
    rows, _, pointer_bits, column_bits = csr_layout(shape, nonzeros)
    return (rows + 1) * pointer_bits + nonzeros * column_bits
