"""The compressed model file (``.admm``, format 3): everything needed to predict from raw inputs.

Layout (all integers little-endian; ``docs/FORMAT.md`` gives every byte):

* a 20-byte prefix: the magic ``b"ADMMPK"``, the format version (uint16, 3), the header's and
  the payload's byte lengths (uint32, uint64);
* a compact binary header: how to rebuild the network (model name or ``module:function``, its
  arguments as JSON, class count, input shape, whether BatchNorm was folded), the input
  normalisation, one entry per state_dict tensor (key, dtype, shape, encoding and the counts
  and widths of its stream, see :mod:`._streams`), and the network's graph as traced by
  ``torch.fx`` (:mod:`._graph`), so that a runtime without Python runs it;
* the payload: the tensors' streams in header order, each starting on a byte boundary; a
  compressible weight holds exactly ``LayerStorage.stored_bits`` bits, so the payload is
  ``StorageReport.model_stored_bits`` plus byte padding;
* a CRC-32 (zlib's) of everything before it.

A reader checks, in order and before allocating any tensor: magic and version, the total length,
the checksum, the header's fields and their consistency, every stream's length against the
payload's, and a bound on the entries to decode; then each stream's index against its shape.
Any failure is a :class:`PackError` naming the file and what is wrong. Format 2 files (the
same without the graph) are read too.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import PackError
from ..normalise import Normalisation
from ._accounting import StorageReport, model_storage
from ._binio import ByteReader, ByteWriter, Malformed
from ._coding import FLOAT_BITS
from ._graph import NetworkGraph
from ._streams import StreamMeta, decode, encode
from ._tracing import trace_graph

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_ENTRIES",
    "ModelMeta",
    "PackInfo",
    "PackedFile",
    "READ_VERSIONS",
    "encode_model",
    "load_state",
    "pack_model",
    "read_model_file",
    "read_packed",
    "smallest_file_bits",
    "unpack_into",
]

MAGIC = b"ADMMPK"
FORMAT_VERSION = 3
#: The versions this reader reads: format 2 has no graph section.
READ_VERSIONS = (2, 3)
#: A reader decodes at most this many tensor entries (1 GiB of float32) unless told otherwise.
MAX_ENTRIES = 1 << 28
_PREFIX = struct.Struct("<6sHIQ")
_CRC = struct.Struct("<I")
_FOLDED = 1  # flag bit: BatchNorm was folded into the preceding convolutions


@dataclass(frozen=True)
class ModelMeta:
    """What the header says beside the tensors: how to rebuild and feed the network.

    Attributes:
        model: registered name, ``torchvision:<name>`` or ``module:function``; "" if unknown.
        kwargs: the factory's extra arguments (JSON-able).
        num_classes: the output layer's size (0 if unknown).
        input_shape: one sample's shape, e.g. ``(1, 28, 28)``.
        folded: BatchNorm was folded into its convolutions (rebuild, then fold, then load).
        normalisation: applied to raw inputs before the network, or None.
    """

    model: str = ""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    num_classes: int = 0
    input_shape: tuple[int, ...] = ()
    folded: bool = False
    normalisation: Normalisation | None = None


@dataclass(frozen=True)
class PackInfo:
    """Where a packed model went and how its bytes split into header and payload.

    ``header_bytes`` counts everything that is not payload: prefix, header and checksum.
    """

    path: Path | None
    file_bytes: int
    header_bytes: int
    payload_bytes: int
    report: StorageReport


@dataclass(frozen=True)
class PackedFile:
    """A packed file read back: its meta, tensors, header entries, raw streams and graph."""

    path: Path
    meta: ModelMeta
    state: dict[str, Tensor]
    streams: tuple[StreamMeta, ...]
    blobs: dict[str, bytes]
    file_bytes: int
    header_bytes: int
    graph: NetworkGraph = NetworkGraph.absent("")
    version: int = FORMAT_VERSION

    @property
    def payload_bytes(self) -> int:
        return self.file_bytes - self.header_bytes


def encode_model(
    model: nn.Module,
    layer_names: Sequence[str],
    index_format: str = "gap",
    meta: ModelMeta | None = None,
    report: StorageReport | None = None,
) -> tuple[bytes, PackInfo]:
    """The packed file's bytes for ``model``, ``layer_names``' weights compressed.

    ``report``, the storage accounting of this model already made (by ``run_pipeline``), spares
    computing it again when it covers the same layers in the same index format; the streams
    are still checked against it bit for bit. The graph is traced from ``model`` for
    ``meta.input_shape`` (:func:`~admmsearch.tracing.trace_graph`); a network that does not
    trace is packed with the reason instead.

    Raises:
        PackError: the model still carries parametrizations, or a tensor cannot be stored.
    """
    streams, report, keys = _encode_streams(model, layer_names, index_format, report)
    meta = meta or ModelMeta()
    header = _header(meta, [m for m, _ in streams], trace_graph(model, meta.input_shape, keys))
    payload = b"".join(blob for _, blob in streams)
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header), len(payload)) + header + payload
    data = body + _CRC.pack(zlib.crc32(body))
    return data, PackInfo(None, len(data), len(data) - len(payload), len(payload), report)


def _encode_streams(
    model: nn.Module,
    layer_names: Sequence[str],
    index_format: str,
    report: StorageReport | None,
) -> tuple[list[tuple[StreamMeta, bytes]], StorageReport, list[str]]:
    """Every state_dict tensor's entry and stream, the accounting, the keys in order."""
    if any(parametrize.is_parametrized(module) for module in model.modules()):
        raise PackError(
            "model still carries parametrizations; call finalize(model) before packing"
        )
    same = report is not None and report.index_format == index_format
    if not same or [layer.name for layer in report.layers] != list(layer_names):
        report = model_storage(model, layer_names, index_format)
    layers = {_state_key(layer.name, "weight"): layer for layer in report.layers}
    state = model.state_dict()
    if missing := sorted(set(layers) - set(state)):
        raise PackError(f"compressible weights {missing} are not in the model's state_dict")
    try:
        streams = [encode(key, tensor, layers.get(key)) for key, tensor in state.items()]
    except ValueError as exc:
        raise PackError(f"cannot pack the model: {exc}") from exc
    if sum(m.bits for m, _ in streams if m.encoding != "raw") != report.stored_bits:
        raise PackError("packed bits differ from the storage accounting; please report this bug")
    return streams, report, list(state)


def smallest_file_bits(
    model: nn.Module, layer_names: Sequence[str], meta: ModelMeta | None = None
) -> int:
    """A lower bound, in bits, on the packed file of any compression of ``model`` with
    ``layer_names``' weights compressed: the prefix, the header with every compressed weight's
    entry at its shortest (dense, raw coding: no codebook, grid or index fields), the checksum,
    every other tensor raw, and at least 32 bits per compressed weight (one float32 value,
    quantization scale or codebook entry, before byte padding).

    >>> from torch import nn
    >>> layer = nn.Linear(4, 2)
    >>> smallest_file_bits(layer, [""]), 8 * encode_model(layer, [""])[1].file_bytes
    (720, 944)
    """
    state = model.state_dict()
    compressed = {_state_key(name, "weight") for name in layer_names}
    entries = [
        StreamMeta(key, t.dtype, tuple(t.shape), "dense" if key in compressed else "raw")
        for key, t in state.items()
    ]
    header = _header(meta or ModelMeta(), entries, NetworkGraph.absent(""))
    raw = sum(t.numel() * t.element_size() for k, t in state.items() if k not in compressed)
    fixed = _PREFIX.size + len(header) + raw + _CRC.size
    return 8 * fixed + FLOAT_BITS * len(compressed & state.keys())


def pack_model(
    model: nn.Module,
    layer_names: Sequence[str],
    path: str | Path,
    index_format: str = "gap",
    meta: ModelMeta | None = None,
    report: StorageReport | None = None,
) -> PackInfo:
    """Write ``model``'s state_dict to ``path`` (see :func:`encode_model`).

    Raises:
        PackError: as :func:`encode_model`, or the file cannot be written.
    """
    data, info = encode_model(model, layer_names, index_format, meta, report)
    path = Path(path)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise PackError(f"cannot write packed model {path}: {exc}") from exc
    return PackInfo(path, info.file_bytes, info.header_bytes, info.payload_bytes, info.report)


def read_model_file(path: str | Path, max_entries: int = MAX_ENTRIES) -> PackedFile:
    """Read and check a packed file: meta, every tensor, the header entries and raw streams.

    Raises:
        PackError: the file cannot be read, is of another version, truncated, damaged
            (checksum), malformed, or would decode to more than ``max_entries`` entries; the
            message names the file and the problem.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PackError(f"cannot read packed model {path}: {exc}") from exc
    header_end, payload_end, version = _check_prefix(path, data)
    try:
        meta, streams, graph = _parse_header(ByteReader(data, _PREFIX.size, header_end), version)
        _check_streams(streams, payload_end - header_end, max_entries)
    except (Malformed, ValueError) as exc:
        raise PackError(f"{path}: header is malformed: {exc}") from None
    state, blobs, offset = {}, {}, header_end
    for stream in streams:
        blob = data[offset : offset + stream.nbytes]
        try:
            state[stream.key] = decode(stream, blob)
        except (ValueError, IndexError) as exc:
            raise PackError(f"{path}: stream {stream.key!r} is malformed: {exc}") from None
        blobs[stream.key], offset = blob, offset + stream.nbytes
    header_bytes = len(data) - (payload_end - header_end)
    return PackedFile(
        path, meta, state, tuple(streams), blobs, len(data), header_bytes, graph, version
    )


def read_packed(path: str | Path, max_entries: int = MAX_ENTRIES) -> dict[str, Tensor]:
    """Decode a packed file into a full state_dict (weights as float32, the rest as stored).

    Raises:
        PackError: as :func:`read_model_file`.
    """
    return read_model_file(path, max_entries).state


def unpack_into(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a packed file into ``model`` (strict: same keys, shapes and dtypes); returns it.

    Raises:
        PackError: the file is malformed or does not fit the model.
    """
    load_state(model, read_packed(path), path)
    return model


def load_state(model: nn.Module, state: Mapping[str, Tensor], path: str | Path) -> None:
    """Load a decoded state into ``model`` after checking keys, shapes and dtypes.

    Raises:
        PackError: naming ``path`` and the first tensor that does not fit.
    """
    expected = model.state_dict()
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


def _state_key(module_name: str, tensor_name: str) -> str:
    return f"{module_name}.{tensor_name}" if module_name else tensor_name


# --- the header ---


def _header(meta: ModelMeta, streams: list[StreamMeta], graph: NetworkGraph) -> bytes:
    out = ByteWriter()
    out.text(meta.model)
    out.text(json.dumps(dict(meta.kwargs), separators=(",", ":"), sort_keys=True))
    out.put("IB", meta.num_classes, len(meta.input_shape))
    out.put(f"{len(meta.input_shape)}I", *meta.input_shape)
    out.put("B", _FOLDED if meta.folded else 0)
    norm = meta.normalisation
    out.put("B", 0 if norm is None else 1)
    if norm is not None:
        out.put("I", norm.channels)
        out.floats(norm.mean)
        out.floats(norm.std)
    out.put("I", len(streams))
    for stream in streams:
        stream.write(out)
    graph.write(out)
    return bytes(out.buffer)


def _parse_header(
    src: ByteReader, version: int = FORMAT_VERSION
) -> tuple[ModelMeta, list[StreamMeta], NetworkGraph]:
    model = src.text("the model name")
    try:
        kwargs = json.loads(src.text("the model arguments"))
    except json.JSONDecodeError as exc:
        raise Malformed(f"the model arguments are not JSON ({exc})") from None
    if not isinstance(kwargs, dict):
        raise Malformed("the model arguments are not a JSON object")
    num_classes, ndim = src.get("IB", "the class count")
    input_shape = src.get(f"{ndim}I", "the input shape")
    flags = int(src.one("B", "the flags"))
    if flags & ~_FOLDED:
        raise Malformed(f"unknown flags {flags:#x}")
    norm = _parse_normalisation(src)
    count = int(src.one("I", "the tensor count"))
    streams = [StreamMeta.read(src, f"tensor {i}") for i in range(count)]
    graph = NetworkGraph.absent(f"format {version} files record no graph")
    if version >= 3:
        graph = NetworkGraph.read(src, count)
    if src.pos != src.end:
        last = "graph" if version >= 3 else "last tensor entry"
        raise Malformed(f"{src.end - src.pos} bytes after the {last}")
    if len({s.key for s in streams}) != len(streams):
        raise Malformed("a tensor key appears twice")
    meta = ModelMeta(model, kwargs, num_classes, tuple(input_shape), bool(flags & _FOLDED), norm)
    return meta, streams, graph


def _parse_normalisation(src: ByteReader) -> Normalisation | None:
    kind = int(src.one("B", "the normalisation kind"))
    if kind == 0:
        return None
    if kind != 1:
        raise Malformed(f"unknown normalisation kind {kind}")
    channels = int(src.one("I", "the normalisation's channel count"))
    mean = src.floats(channels, "the normalisation's means")
    std = src.floats(channels, "the normalisation's stds")
    try:
        return Normalisation(mean, std)
    except ValueError as exc:
        raise Malformed(str(exc)) from None


def _check_prefix(path: Path, data: bytes) -> tuple[int, int, int]:
    """Magic, version, lengths and checksum; returns where the header and payload end, and the
    version."""
    if data[: len(MAGIC)] != MAGIC:
        raise PackError(f"{path} is not a packed admmsearch model (bad magic {data[:8]!r})")
    if data[6:8] == b"01":
        raise PackError(
            f"{path} is format 1 (an older admmsearch); this admmsearch reads formats "
            f"{' and '.join(map(str, READ_VERSIONS))}: pack the model again (admmsearch compress)"
        )
    if len(data) < _PREFIX.size + _CRC.size:
        raise PackError(f"{path} is truncated inside its {_PREFIX.size}-byte prefix")
    _, version, header_bytes, payload_bytes = _PREFIX.unpack_from(data)
    if version not in READ_VERSIONS:
        raise PackError(
            f"{path} has format version {version}; this admmsearch reads formats "
            f"{' and '.join(map(str, READ_VERSIONS))}"
        )
    header_end = _PREFIX.size + header_bytes
    expected = header_end + payload_bytes + _CRC.size
    if len(data) != expected:
        what = "is truncated" if len(data) < expected else "has extra bytes"
        raise PackError(f"{path} {what}: {len(data)} bytes, its prefix says {expected}")
    (stored,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    computed = zlib.crc32(memoryview(data)[: len(data) - _CRC.size])
    if stored != computed:
        raise PackError(
            f"{path} is damaged: checksum {computed:08x} does not match the stored {stored:08x}"
        )
    return header_end, header_end + payload_bytes, version


def _check_streams(streams: list[StreamMeta], payload_bytes: int, max_entries: int) -> None:
    """Every entry consistent, the streams' lengths the payload's, the entries bounded."""
    for stream in streams:
        try:
            stream.check()
        except ValueError as exc:
            raise ValueError(f"tensor {stream.key!r}: {exc}") from None
    total = sum(stream.nbytes for stream in streams)
    if total != payload_bytes:
        raise ValueError(
            f"its entries add up to {total} payload bytes; the file has {payload_bytes}"
        )
    entries = sum(stream.numel for stream in streams)
    if entries > max_entries:
        raise ValueError(
            f"its tensors hold {entries} entries, above the limit of {max_entries} "
            "(read_model_file's max_entries raises it)"
        )
