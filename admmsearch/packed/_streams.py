"""One tensor of a packed file: its header entry and its payload stream, written and read.

A compressible layer's weight is one *coded* stream in the encoding and value coding that
:func:`._accounting.layer_storage` chose; every other tensor is a *raw* stream of its
bytes. A coded stream holds, bit-packed least-significant first (a field's bit ``i`` precedes its
bit ``i + 1``; stream bit ``j`` is bit ``j % 8`` of byte ``j // 8``; the last byte zero-padded):

1. the value table: a codebook (``K`` float32 bit patterns, ascending as unsigned integers), or
   a uniform grid's float32 scale and, when stored, its int32 zero point; nothing for raw;
2. the index: none (``dense``), the gap codes with fillers at ``g`` bits (``gap``), or
   ``rows + 1`` row pointers and ``m`` column indices (``csr``);
3. the value codes at ``c`` bits each, for every entry (``dense``) or every nonzero.

Its bit count is a function of the header entry alone (:meth:`StreamMeta.bits`), so a reader
checks the whole payload's length before it decodes or allocates anything. ``docs/FORMAT.md``
describes the same bytes for readers in other languages.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from ._accounting import LayerStorage
from ._coding import FLOAT_BITS, ValueCoding, coding_of, csr_layout, distinct_values
from ._coding import symmetric_zero as _symmetric_zero
from ._entries import CODINGS, DTYPES, ENCODINGS, MAX_LEVEL, StreamMeta

__all__ = ["CODINGS", "DTYPES", "ENCODINGS", "StreamMeta", "decode", "encode"]

# --- writing ---


def encode(key: str, tensor: Tensor, layer: LayerStorage | None) -> tuple[StreamMeta, bytes]:
    """One tensor's header entry and stream bytes; a weight is coded exactly as ``layer`` says.

    Raises:
        ValueError: the stream's bits differ from the accounting (a bug), or the dtype is not
            one the format knows.
    """
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype not in DTYPES:
        raise ValueError(f"{key!r} is {tensor.dtype}; the format stores {DTYPES}")
    shape = tuple(int(d) for d in tensor.shape)
    if layer is None:
        blob = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        return StreamMeta(key, tensor.dtype, shape, "raw"), blob
    flat = tensor.reshape(-1).numpy()
    flat = np.where(flat == 0, np.float32(0), flat).view(np.uint32)
    positions = None if layer.encoding == "dense" else np.flatnonzero(flat)
    values = flat if positions is None else flat[positions]
    coding = coding_of(values.size, distinct_values(values))
    meta = StreamMeta(key, torch.float32, shape, layer.encoding, *_coding_fields(coding))
    if positions is not None:
        meta = replace(meta, nonzeros=int(positions.size))
    fields = [*_table_fields(coding, values), *_index_fields(meta, layer, positions)]
    fields.append((_codes(values, coding), coding.width))
    if layer.encoding == "gap":
        meta = replace(meta, gap_bits=layer.gap_bits, fillers=layer.fillers)
    bits = np.concatenate([_to_bits(v, w) for v, w in fields])
    if bits.size != layer.stored_bits or bits.size != meta.bits:
        raise ValueError(
            f"layer {layer.name!r} packs {bits.size} bits; accounted {layer.stored_bits}"
        )
    return meta, np.packbits(bits, bitorder="little").tobytes()


def _coding_fields(coding: ValueCoding) -> tuple:
    return (coding.kind, coding.width, coding.codebook_size, coding.stride, coding.zero_stored)


def _table_fields(coding: ValueCoding, values: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """The codebook, or the uniform scale and any zero point (two's complement); raw: none."""
    if coding.kind == "codebook":
        return [(distinct_values(values), FLOAT_BITS)]
    if coding.kind == "uniform":
        table = [coding.scale] + ([coding.zero & 0xFFFFFFFF] if coding.zero_stored else [])
        return [(np.array(table, dtype=np.uint64), FLOAT_BITS)]
    return []


def _index_fields(
    meta: StreamMeta, layer: LayerStorage, positions: np.ndarray | None
) -> list[tuple[np.ndarray, int]]:
    if positions is None:
        return []
    if layer.encoding == "gap":
        return [(_gap_codes(positions, layer.gap_bits, meta.numel), layer.gap_bits)]
    rows, cols, pointer_bits, column_bits = csr_layout(meta.shape, positions.size)
    pointers = np.cumsum(np.bincount(positions // cols, minlength=rows), dtype=np.int64)
    return [(np.concatenate(([0], pointers)), pointer_bits), (positions % cols, column_bits)]


def _codes(values: np.ndarray, coding: ValueCoding) -> np.ndarray:
    """The value codes of ``values`` (uint32 bit patterns) in ``coding``."""
    if coding.kind == "raw":
        return values
    if coding.kind == "codebook":
        return np.searchsorted(distinct_values(values), values)
    scale = np.uint32(coding.scale).view(np.float32)
    levels = np.rint(values.view(np.float32).astype(np.float64) / float(scale)).astype(np.int64)
    codes = (levels - coding.zero) // coding.stride
    if not np.array_equal(_uniform_values(scale, coding.zero, coding.stride, codes), values):
        raise ValueError("values are not on the uniform grid the accounting found")
    return codes


def _uniform_values(scale: np.float32, zero: int, stride: int, codes: np.ndarray) -> np.ndarray:
    """float32 bit patterns of ``scale * (zero + stride * codes)``, the product in float32."""
    levels = (zero + stride * codes.astype(np.int64)).astype(np.float32)
    return (np.float32(scale) * levels).view(np.uint32)


def _gap_codes(positions: np.ndarray, gap_bits: int, numel: int) -> np.ndarray:
    """Gap codes in order: ``(d - 1) // span`` fillers (code 0), then the rest of the gap ``d``;
    then the fillers that cover the zeros after the last nonzero."""
    span = (1 << gap_bits) - 1
    gaps = np.diff(positions, prepend=-1)
    fillers = (gaps - 1) // span
    trailing = (numel - 1 - int(positions[-1])) // span
    codes = np.zeros(positions.size + int(fillers.sum()) + trailing, dtype=np.int64)
    codes[np.cumsum(fillers + 1) - 1] = gaps - fillers * span
    return codes


def _uint(width: int) -> np.dtype:
    """The smallest little-endian unsigned dtype holding ``width`` bits."""
    for nbytes in (1, 2, 4, 8):
        if width <= 8 * nbytes:
            return np.dtype(f"<u{nbytes}")
    raise ValueError(f"a field of {width} bits exceeds 64")


def _to_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Flat LSB-first bit array (uint8 0/1) of ``values`` at ``width`` bits each."""
    if width == 0 or values.size == 0:
        return np.zeros(0, dtype=np.uint8)
    as_bytes = values.astype(_uint(width)).reshape(-1, 1).view(np.uint8)
    return np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :width].reshape(-1)


# --- reading ---


class _BitReader:
    """Reads consecutive fixed-width fields from a stream's bytes, LSB first."""

    def __init__(self, blob: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(blob, dtype=np.uint8), bitorder="little")
        self.used = 0

    def read(self, count: int, width: int) -> np.ndarray:
        end = self.used + count * width
        if count < 0 or end > self.bits.size:
            raise ValueError(f"needs {end} bits, has {self.bits.size}")
        dtype = _uint(width)
        padded = np.zeros((count, 8 * dtype.itemsize), dtype=np.uint8)
        padded[:, :width] = self.bits[self.used : end].reshape(count, width)
        self.used = end
        return np.packbits(padded, axis=1, bitorder="little").view(dtype).reshape(-1)


def decode(meta: StreamMeta, blob: bytes) -> Tensor:
    """The tensor of one stream, whose length the caller checked against ``meta.nbytes``.

    Raises:
        ValueError: the stream contradicts its entry (index past the shape, code outside the
            codebook, bits left over).
    """
    if meta.encoding == "raw":
        flat = torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.empty(0)
        return flat.to(torch.uint8).view(meta.dtype).reshape(meta.shape).clone()
    reader = _BitReader(blob)
    table = _read_table(reader, meta)
    positions = None if meta.encoding == "dense" else _read_positions(reader, meta)
    codes = reader.read(meta.value_count, meta.width)
    values = _values(meta, table, codes)
    if reader.used != meta.bits:
        raise ValueError(f"stream holds {reader.used} bits; its entry says {meta.bits}")
    flat = np.zeros(meta.numel, dtype=np.uint32)
    flat[slice(None) if positions is None else positions] = values
    return torch.from_numpy(flat.view(np.float32)).reshape(meta.shape)


def _read_table(reader: _BitReader, meta: StreamMeta) -> tuple[np.ndarray, int]:
    """The codebook (or the scale's bit pattern) and the zero point."""
    if meta.coding == "codebook":
        return reader.read(meta.codebook_size, FLOAT_BITS), 0
    if meta.coding != "uniform":
        return np.zeros(0, dtype=np.uint32), 0
    scale = reader.read(1, FLOAT_BITS)
    if not meta.zero_stored:
        return scale, _symmetric_zero(meta.width, meta.stride)
    return scale, int(reader.read(1, FLOAT_BITS).astype(np.uint32).view(np.int32)[0])


def _values(meta: StreamMeta, table: tuple[np.ndarray, int], codes: np.ndarray) -> np.ndarray:
    """``count`` float32 bit patterns from the codes."""
    book, zero = table
    if meta.coding == "raw":
        return codes
    if meta.coding == "codebook":
        if codes.size and codes.max() >= book.size:
            raise ValueError(f"code {codes.max()} outside a codebook of {book.size}")
        return book[codes]
    top = zero + meta.stride * ((1 << meta.width) - 1)
    if max(abs(zero), abs(top)) >= MAX_LEVEL:
        raise ValueError(f"uniform levels {zero}..{top} exceed 2**24")
    return _uniform_values(book.astype(np.uint32).view(np.float32)[0], zero, meta.stride, codes)


def _read_positions(reader: _BitReader, meta: StreamMeta) -> np.ndarray:
    """Flat positions of the nonzeros from a gap or CSR index, checked against the shape."""
    nonzeros, numel = meta.nonzeros, meta.numel
    if meta.encoding == "gap":
        span = (1 << meta.gap_bits) - 1
        codes = reader.read(nonzeros + meta.fillers, meta.gap_bits).astype(np.int64)
        if np.count_nonzero(codes) != nonzeros:
            raise ValueError(f"index has {np.count_nonzero(codes)} gaps; entry says {nonzeros}")
        advance = np.where(codes == 0, span, codes)
        ends = np.cumsum(advance)
        covered = int(ends[-1]) if ends.size else 0
        if not 0 <= numel - covered < span:
            raise ValueError(
                f"shape {list(meta.shape)} does not match its gap index, which "
                f"covers {covered} entries"
            )
        positions = (ends - 1)[codes != 0]
    else:
        rows, cols, pointer_bits, column_bits = csr_layout(meta.shape, nonzeros)
        pointers = reader.read(rows + 1, pointer_bits).astype(np.int64)
        columns = reader.read(nonzeros, column_bits).astype(np.int64)
        if pointers[0] != 0 or pointers[-1] != nonzeros or np.any(np.diff(pointers) < 0):
            raise ValueError("row pointers are not a running count of the nonzeros")
        if columns.size and columns.max() >= cols:
            raise ValueError(f"column index {columns.max()} outside {cols} columns")
        positions = np.repeat(np.arange(rows), np.diff(pointers)) * cols + columns
        if np.any(np.diff(positions) <= 0):
            raise ValueError("index does not give the nonzeros in increasing order")
    return positions
