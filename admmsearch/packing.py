"""The compressed model file, whose size is the storage accounting plus a small header.

Layout: the 8-byte magic ``b"ADMMPK01"``, the header length as a little-endian uint32, a compact
UTF-8 JSON header (``{"format": 1, "streams": [...]}``, one entry per state_dict tensor, in
file order), then the streams, each starting on a byte boundary. A stream's entry has short keys
to keep the header small: ``k`` state_dict key, ``s`` shape, ``t`` dtype, ``e`` encoding, ``n``
byte length; weight streams add ``c`` code width, ``K`` codebook size, ``m`` nonzeros, ``b``
bits before padding, and for ``"gap"`` ``g`` gap width and ``f`` fillers. Each compressible
layer's weight is one stream, in the encoding :func:`admmsearch.storage.layer_storage` chose:

* ``"dense"``: [codebook] codes of all entries;
* ``"gap"``: [codebook] gap codes (fillers included) at ``g`` bits, then the value codes;
* ``"csr"``: [codebook] row pointers, column indices, then the value codes;

where the codebook (present when ``K > 0``) is ``K`` float32 bit patterns in ascending order of
their bits and the value codes are ``c`` bits each (raw float32 bits when ``K == 0``). Every
other tensor (biases, buffers, non-compressible parameters) is a ``"raw"`` stream of its bytes.

Bits are packed least-significant first: a field's bit ``i`` precedes its bit ``i + 1``, and
the stream's bit ``j`` is bit ``j % 8`` of byte ``j // 8``; the last byte is zero-padded. Raw
bytes are little-endian. A weight stream holds exactly ``LayerStorage.stored_bits`` bits, so
``file_bytes == header_bytes + Σ ceil(stream_bits / 8)`` and the streams' bits sum to
``StorageReport.model_stored_bits``. Pruned entries (``+0.0`` or ``-0.0``) decode as ``+0.0``.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .errors import PackError
from .storage import MAX_GAP_BITS, LayerStorage, StorageReport, csr_layout, model_storage

__all__ = ["MAGIC", "PackInfo", "pack_model", "read_packed", "unpack_into"]

MAGIC = b"ADMMPK01"
FORMAT_VERSION = 1
_LENGTH = struct.Struct("<I")
_PREFIX_BYTES = len(MAGIC) + _LENGTH.size
_DECODE_ERRORS = (
    KeyError,
    TypeError,
    ValueError,
    IndexError,
    AttributeError,
    OverflowError,
    RuntimeError,
)


@dataclass(frozen=True)
class PackInfo:
    """Where a packed model went and how its bytes split into header and payload."""

    path: Path
    file_bytes: int
    header_bytes: int
    payload_bytes: int
    report: StorageReport


def pack_model(
    model: nn.Module, layer_names: Sequence[str], path: str | Path, index_format: str = "gap"
) -> PackInfo:
    """Write ``model``'s state_dict to ``path``, ``layer_names``' weights compressed.

    Raises:
        PackError: the model still carries parametrizations.
    """
    if any(parametrize.is_parametrized(module) for module in model.modules()):
        raise PackError(
            "model still carries parametrizations; call finalize(model) before packing"
        )
    report = model_storage(model, layer_names, index_format)
    layers = {_state_key(layer.name, "weight"): layer for layer in report.layers}
    state = model.state_dict()
    if missing := sorted(set(layers) - set(state)):
        raise PackError(f"compressible weights {missing} are not in the model's state_dict")
    streams = [_encode(key, tensor, layers.get(key)) for key, tensor in state.items()]
    if sum(bits for _, bits, _ in streams) != report.model_stored_bits:
        raise PackError("packed bits differ from the storage accounting; please report this bug")
    metas = [meta for meta, _, _ in streams]
    header = json.dumps({"format": FORMAT_VERSION, "streams": metas}, separators=(",", ":"))
    header_blob = MAGIC + _LENGTH.pack(len(header.encode())) + header.encode()
    payload = b"".join(blob for _, _, blob in streams)
    path = Path(path)
    try:
        path.write_bytes(header_blob + payload)
    except OSError as exc:
        raise PackError(f"cannot write packed model {path}: {exc}") from exc
    return PackInfo(path, len(header_blob) + len(payload), len(header_blob), len(payload), report)


def read_packed(path: str | Path) -> dict[str, Tensor]:
    """Decode a packed file into a full state_dict (weights as float32, the rest as stored).

    Raises:
        PackError: the file cannot be read or is malformed; the message names file and problem.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PackError(f"cannot read packed model {path}: {exc}") from exc
    streams = _parse_header(path, data)
    offset = _PREFIX_BYTES + _LENGTH.unpack_from(data, len(MAGIC))[0]
    state = {}
    for meta in streams:
        try:
            nbytes, key = int(meta["n"]), str(meta["k"])
            if key in state:
                raise ValueError("the key appears twice")
            state[key] = _decode(meta, data[offset : offset + nbytes])
        except _DECODE_ERRORS as exc:
            raise PackError(f"{path}: stream {meta.get('k')!r} is malformed: {exc}") from exc
        offset += nbytes
    return state


def unpack_into(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a packed file into ``model`` (strict: same keys, shapes and dtypes); returns it.

    Raises:
        PackError: the file is malformed or does not fit the model.
    """
    state, expected = read_packed(path), model.state_dict()
    if state.keys() != expected.keys():
        missing, extra = sorted(expected.keys() - state), sorted(state.keys() - expected)
        raise PackError(f"{path} does not fit the model: missing {missing}, unexpected {extra}")
    for key, tensor in state.items():
        want = expected[key]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise PackError(
                f"{path} does not fit the model: {key!r} is {tensor.dtype}{list(tensor.shape)} "
                f"in the file but {want.dtype}{list(want.shape)} in the model"
            )
    model.load_state_dict(state, strict=True)
    return model


def _state_key(module_name: str, tensor_name: str) -> str:
    return f"{module_name}.{tensor_name}" if module_name else tensor_name


def _parse_header(path: Path, data: bytes) -> list[dict[str, Any]]:
    """Check magic, header and total length; return the stream entries."""
    if data[: len(MAGIC)] != MAGIC:
        raise PackError(f"{path} is not a packed admmsearch model (bad magic {data[:8]!r})")
    if len(data) < _PREFIX_BYTES:
        raise PackError(f"{path} is truncated inside its header length")
    end = _PREFIX_BYTES + _LENGTH.unpack_from(data, len(MAGIC))[0]
    if end > len(data):
        raise PackError(f"{path} is truncated inside its {end - _PREFIX_BYTES}-byte header")
    try:
        header = json.loads(data[_PREFIX_BYTES:end].decode())
        streams = header["streams"]
        promised = sum(int(meta["n"]) for meta in streams)
    except (*_DECODE_ERRORS, UnicodeDecodeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        raise PackError(f"{path} has a header that does not parse ({problem})") from exc
    if header.get("format") != FORMAT_VERSION:
        raise PackError(f"{path} has format {header.get('format')!r}; expected {FORMAT_VERSION}")
    if len(data) != end + promised:
        raise PackError(f"{path} has {len(data) - end} payload bytes; its header says {promised}")
    return streams


def _encode(key: str, tensor: Tensor, layer: LayerStorage | None) -> tuple[dict, int, bytes]:
    """One stream: its header entry, its bit count and its bytes."""
    if not isinstance(tensor, Tensor):
        raise PackError(f"state_dict entry {key!r} is not a tensor; it cannot be packed")
    tensor = tensor.detach().cpu().contiguous()
    meta = {"k": key, "s": list(tensor.shape), "t": str(tensor.dtype).split(".")[-1]}
    if layer is None:
        blob = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        return {**meta, "e": "raw", "n": len(blob)}, 8 * len(blob), blob
    fields = _weight_fields(tensor, layer)
    bits = np.concatenate([_to_bits(values, width) for values, width in fields])
    if bits.size != layer.stored_bits:
        raise PackError(
            f"layer {layer.name!r} packs {bits.size} bits; accounted {layer.stored_bits}"
        )
    blob = np.packbits(bits, bitorder="little").tobytes()
    coding = {"e": layer.encoding, "c": layer.stored_code_bits, "K": layer.stored_codebook_size}
    gap = {"g": layer.gap_bits, "f": layer.fillers} if layer.encoding == "gap" else {}
    counts = {"m": layer.nonzeros, "b": int(bits.size), "n": len(blob)}
    return {**meta, **coding, **gap, **counts}, int(bits.size), blob


def _weight_fields(weight: Tensor, layer: LayerStorage) -> list[tuple[np.ndarray, int]]:
    """The (values, bit width) fields of a weight stream in file order."""
    flat = weight.reshape(-1).numpy()
    flat = np.where(flat == 0, np.float32(0), flat).view(np.uint32)
    if layer.encoding == "dense":
        return _value_fields(flat, layer.stored_code_bits, layer.stored_codebook_size)
    positions = np.flatnonzero(flat)
    codebook, *codes = _value_fields(flat[positions], layer.code_bits, layer.codebook_size)
    if layer.encoding == "gap":
        index = [(_gap_codes(positions, layer.gap_bits), layer.gap_bits)]
    else:
        rows, cols, pointer_bits, column_bits = csr_layout(layer.shape, layer.nonzeros)
        pointers = np.cumsum(np.bincount(positions // cols, minlength=rows), dtype=np.int64)
        index = [(np.concatenate(([0], pointers)), pointer_bits), (positions % cols, column_bits)]
    return [codebook, *index, *codes]


def _value_fields(bits: np.ndarray, width: int, size: int) -> list[tuple[np.ndarray, int]]:
    """Codebook and codes (or an empty codebook and raw float32 bits when ``size == 0``)."""
    if size == 0:
        return [(bits[:0], 32), (bits, 32)]
    ordered = np.sort(bits)
    codebook = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
    if codebook.size != size:
        raise PackError(f"codebook has {codebook.size} values, accounted {size}")
    return [(codebook, 32), (np.searchsorted(codebook, bits), width)]


def _gap_codes(positions: np.ndarray, gap_bits: int) -> np.ndarray:
    """Gap codes in order: ``(d - 1) // span`` fillers (code 0), then the rest of the gap ``d``."""
    span = (1 << gap_bits) - 1
    gaps = np.diff(positions, prepend=-1)
    fillers = (gaps - 1) // span
    codes = np.zeros(positions.size + int(fillers.sum()), dtype=np.int64)
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


def _decode(meta: dict[str, Any], blob: bytes) -> Tensor:
    """Tensor of one stream; raises ValueError (or similar) when the stream is inconsistent."""
    shape, dtype = [int(n) for n in meta["s"]], getattr(torch, meta["t"])
    if not isinstance(dtype, torch.dtype) or len(blob) != int(meta["n"]):
        raise ValueError(f"bad dtype {meta['t']!r} or truncated stream")
    if meta["e"] == "raw":
        flat = torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.empty(0)
        return flat.to(torch.uint8).view(dtype).reshape(shape).clone()
    reader, numel = _BitReader(blob), math.prod(shape)
    codebook = reader.read(int(meta["K"]), 32)
    positions = None if meta["e"] == "dense" else _read_positions(reader, meta, shape)
    count = numel if positions is None else positions.size
    values = _read_values(reader, codebook, count, int(meta["c"]))
    if reader.used != int(meta["b"]) or len(blob) != math.ceil(reader.used / 8):
        raise ValueError(f"stream holds {reader.used} bits; header says {meta['b']}")
    flat = np.zeros(numel, dtype=np.uint32)
    flat[slice(None) if positions is None else positions] = values
    return torch.from_numpy(flat.view(np.float32)).reshape(shape)


def _read_positions(reader: _BitReader, meta: dict[str, Any], shape: list[int]) -> np.ndarray:
    """Flat positions of the nonzeros from a gap or CSR index, checked against the shape."""
    nonzeros = int(meta["m"])
    if meta["e"] == "gap" and 1 <= int(meta["g"]) <= MAX_GAP_BITS:
        codes = reader.read(nonzeros + int(meta["f"]), int(meta["g"])).astype(np.int64)
        advance = np.where(codes == 0, (1 << int(meta["g"])) - 1, codes)
        positions = (np.cumsum(advance) - 1)[codes != 0]
    elif meta["e"] == "csr":
        rows, cols, pointer_bits, column_bits = csr_layout(shape, nonzeros)
        pointers = reader.read(rows + 1, pointer_bits).astype(np.int64)
        columns = reader.read(nonzeros, column_bits).astype(np.int64)
        if pointers[0] != 0 or pointers[-1] != nonzeros or np.any(np.diff(pointers) < 0):
            raise ValueError("row pointers are not a running count of the nonzeros")
        if columns.size and columns.max() >= cols:
            raise ValueError(f"column index {columns.max()} outside {cols} columns")
        positions = np.repeat(np.arange(rows), np.diff(pointers)) * cols + columns
    else:
        raise ValueError(f"unknown encoding {meta['e']!r} (gap width {meta.get('g')})")
    if positions.size != nonzeros:
        raise ValueError(f"index gives {positions.size} nonzeros; header says {nonzeros}")
    if np.any(np.diff(positions) <= 0):
        raise ValueError("index does not give the nonzeros in increasing order")
    if positions.size and positions[-1] >= math.prod(shape):
        raise ValueError(f"index points past the {math.prod(shape)} entries")
    return positions


def _read_values(reader: _BitReader, codebook: np.ndarray, count: int, width: int) -> np.ndarray:
    """``count`` float32 bit patterns: codes looked up in ``codebook``, or raw when it is empty."""
    if codebook.size == 0:
        return reader.read(count, 32)
    codes = reader.read(count, width)
    if codes.size and codes.max() >= codebook.size:
        raise ValueError(f"code {codes.max()} outside a codebook of {codebook.size}")
    return codebook[codes]
