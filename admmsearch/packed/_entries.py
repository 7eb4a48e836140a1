"""The header entry of one tensor in a packed file: what its stream holds and how to read it.

An entry gives the tensor's key, dtype and shape, its encoding (raw, dense, gap, csr) and, for a
compressed weight, the value coding with its widths and counts (``docs/FORMAT.md``, "Tensor
entries"). The stream's bit count follows from the entry alone (:attr:`StreamMeta.bits`), which
is what lets a reader check a file's payload before decoding anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ._binio import ByteReader, ByteWriter, Malformed
from ._coding import FLOAT_BITS, MAX_GAP_BITS, csr_layout

__all__ = ["CODINGS", "DTYPES", "ENCODINGS", "MAX_LEVEL", "StreamMeta"]

ENCODINGS = ("raw", "dense", "gap", "csr")
CODINGS = ("raw", "codebook", "uniform")
#: dtype codes of the header, in code order.
DTYPES = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
)
MAX_LEVEL = 1 << 24  # |integer level| of a uniform grid, so that it is exact in float32


@dataclass(frozen=True)
class StreamMeta:
    """The header entry of one tensor: what its stream holds and how to read it."""

    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    encoding: str
    coding: str = "raw"
    width: int = FLOAT_BITS
    codebook_size: int = 0
    stride: int = 1
    zero_stored: bool = False
    nonzeros: int = 0
    gap_bits: int = 0
    fillers: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def value_count(self) -> int:
        """Value codes in the stream: every entry (dense) or every nonzero (gap, csr)."""
        return self.numel if self.encoding == "dense" else self.nonzeros

    @property
    def table_bits(self) -> int:
        if self.coding == "codebook":
            return FLOAT_BITS * self.codebook_size
        return FLOAT_BITS * (1 + self.zero_stored) if self.coding == "uniform" else 0

    @property
    def index_bits(self) -> int:
        if self.encoding == "gap":
            return self.gap_bits * (self.nonzeros + self.fillers)
        if self.encoding == "csr":
            rows, _, pointer_bits, column_bits = csr_layout(self.shape, self.nonzeros)
            return (rows + 1) * pointer_bits + self.nonzeros * column_bits
        return 0

    @property
    def bits(self) -> int:
        """The stream's bits before byte padding, from the entry alone."""
        if self.encoding == "raw":
            return 8 * self.numel * self.dtype.itemsize
        return self.table_bits + self.index_bits + self.value_count * self.width

    @property
    def nbytes(self) -> int:
        return (self.bits + 7) // 8

    def check(self) -> None:
        """Raise ValueError when the fields contradict each other or the format's rules."""
        if self.encoding == "raw":
            return
        if self.dtype != torch.float32:
            raise ValueError(f"a {self.encoding} stream must be float32, not {self.dtype}")
        if self.coding == "raw" and self.width != FLOAT_BITS:
            raise ValueError(f"raw values take 32 bits, not {self.width}")
        if self.coding == "codebook":
            want = (self.codebook_size - 1).bit_length() if self.codebook_size > 1 else 0
            if self.codebook_size < 1 or self.width != want:
                raise ValueError(f"a codebook of {self.codebook_size} takes {want}-bit codes")
        if self.coding == "uniform" and not (self.width <= 24 and 1 <= self.stride < MAX_LEVEL):
            raise ValueError(f"uniform codes of {self.width} bits, stride {self.stride}")
        sparse = self.encoding in ("gap", "csr")
        if not (1 if sparse else 0) <= self.nonzeros <= self.numel:
            raise ValueError(f"{self.nonzeros} nonzeros in {self.numel} entries")
        if self.encoding == "gap" and not 1 <= self.gap_bits <= MAX_GAP_BITS:
            raise ValueError(f"gap width {self.gap_bits} outside 1..{MAX_GAP_BITS}")

    def write(self, out: ByteWriter) -> None:
        """Append the entry's bytes (see docs/FORMAT.md, "Tensor entries")."""
        out.text(self.key)
        out.put("BB", DTYPES.index(self.dtype), len(self.shape))
        out.put(f"{len(self.shape)}I", *self.shape)
        out.put("B", ENCODINGS.index(self.encoding))
        if self.encoding == "raw":
            return
        out.put("BB", CODINGS.index(self.coding), self.width)
        if self.coding == "codebook":
            out.put("I", self.codebook_size)
        if self.coding == "uniform":
            out.put("IB", self.stride, self.zero_stored)
        if self.encoding in ("gap", "csr"):
            out.put("I", self.nonzeros)
        if self.encoding == "gap":
            out.put("BI", self.gap_bits, self.fillers)

    @classmethod
    def read(cls, src: ByteReader, what: str) -> StreamMeta:
        """Parse one entry; raises Malformed naming ``what`` and the field."""
        key = src.text(f"{what}'s key")
        what = f"tensor {key!r}"
        dtype, ndim = src.get("BB", f"{what}'s dtype and rank")
        shape = src.get(f"{ndim}I", f"{what}'s shape")
        encoding = _pick(ENCODINGS, src.one("B", f"{what}'s encoding"), f"{what}'s encoding")
        meta = cls(key, _pick(DTYPES, dtype, f"{what}'s dtype"), tuple(shape), encoding)
        if encoding == "raw":
            return meta
        code, width = src.get("BB", f"{what}'s value coding")
        fields = {"coding": _pick(CODINGS, code, f"{what}'s value coding"), "width": width}
        if fields["coding"] == "codebook":
            fields["codebook_size"] = src.one("I", f"{what}'s codebook size")
        if fields["coding"] == "uniform":
            fields["stride"], zero = src.get("IB", f"{what}'s grid")
            fields["zero_stored"] = _flag(zero, f"{what}'s zero point flag")
        if encoding in ("gap", "csr"):
            fields["nonzeros"] = src.one("I", f"{what}'s nonzero count")
        if encoding == "gap":
            fields["gap_bits"], fields["fillers"] = src.get("BI", f"{what}'s gap index")
        return replace(meta, **fields)


def _pick(options: tuple, code: int, what: str):
    if code >= len(options):
        raise Malformed(f"{what} has unknown code {code}")
    return options[code]


def _flag(value: int, what: str) -> bool:
    if value not in (0, 1):
        raise Malformed(f"{what} is {value}, not 0 or 1")
    return bool(value)
