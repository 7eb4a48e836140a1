"""The packed file: bit-exact round trips, a size that matches the accounting, clear errors."""

from __future__ import annotations

import math
import struct
import tempfile
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

from admmsearch.errors import PackError
from admmsearch.normalise import Normalisation
from admmsearch.packed import _format as packing
from admmsearch.packed._binio import ByteReader
from admmsearch.packed._format import (
    MAGIC,
    ModelMeta,
    PackInfo,
    pack_model,
    read_model_file,
    read_packed,
    unpack_into,
)


def _check_invariants(info: PackInfo) -> None:
    packed = read_model_file(info.path)
    stream_bits = [meta.bits for meta in packed.streams]
    assert info.file_bytes == info.path.stat().st_size == packed.file_bytes
    assert info.file_bytes == info.header_bytes + sum(math.ceil(b / 8) for b in stream_bits)
    assert info.payload_bytes == info.file_bytes - info.header_bytes == packed.payload_bytes
    assert sum(stream_bits) == info.report.model_stored_bits
    weights = {meta.key: meta.bits for meta in packed.streams if meta.encoding != "raw"}
    for layer in info.report.layers:
        assert weights[f"{layer.name}.weight" if layer.name else "weight"] == layer.stored_bits


def _assert_same_state(decoded: dict[str, torch.Tensor], model: nn.Module) -> None:
    expected = model.state_dict()
    assert list(decoded) == list(expected)
    for key, tensor in expected.items():
        assert decoded[key].dtype == tensor.dtype and torch.equal(decoded[key], tensor), key


def _one_layer(values: list[float]) -> nn.Linear:
    layer = nn.Linear(len(values), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([values]))
    return layer


def test_worked_example_bytes(tmp_path: Path) -> None:
    layer = _one_layer([0, 0.5, 0, 0, 0, 0, 0, -0.5, 0, 0.5])
    info = pack_model(layer, [""], tmp_path / "example.admm")
    payload = info.path.read_bytes()[info.header_bytes - 4 : -4]
    # uniform: scale 0.5 (0x3F000000, little-endian); gap codes 2, 0, 3, 2 at 2 bits, LSB
    # first: 0b10110010 = 0xB2; levels +1, -1, +1 on the symmetric stride-2 grid {-1, +1}
    # are codes 1, 0, 1 -> 0b101 = 0x05
    assert payload == bytes.fromhex("0000003fb205")
    assert info.report.model_stored_bits == 32 + 8 + 3 == 43
    assert torch.equal(read_packed(info.path)["weight"], layer.weight)
    layer = _one_layer([0, 0.3, 0, 0, 0, 0, 0, -0.71, 0, 0.3])
    info = pack_model(layer, [""], tmp_path / "learned.admm")
    payload = info.path.read_bytes()[info.header_bytes - 4 : -4]
    # codebook [0.3, -0.71] in ascending bits (0x3E99999A, 0xBF35C28F); codes 0, 1, 0 -> 0x02
    assert payload == bytes.fromhex("9a99993e8fc235bfb202")
    assert torch.equal(read_packed(info.path)["weight"], layer.weight)


def _compress_(model: nn.Module, keep: float, levels: int, seed: int) -> None:
    """Magnitude-prune to ``keep`` and snap survivors to ``levels`` values per layer, in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                weight = module.weight
                weight.copy_(torch.randn(weight.shape, generator=generator))
                cutoff = weight.abs().flatten().kthvalue(int((1 - keep) * weight.numel()) + 1)
                grid = torch.linspace(-2, 2, levels)
                snapped = grid[(weight.unsqueeze(-1) - grid).abs().argmin(-1)]
                weight.copy_(torch.where(weight.abs() >= cutoff.values, snapped, 0.0))


def _small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, 3),
    )


@pytest.mark.parametrize("index_format", ["gap", "csr"])
def test_small_model_round_trip(tmp_path: Path, index_format: str) -> None:
    torch.manual_seed(0)
    model = _small_net()
    _compress_(model, keep=0.3, levels=7, seed=1)
    inputs = torch.randn(16, 1, 8, 8)
    model.train()(inputs)  # move the BatchNorm running statistics off their defaults
    model.eval()
    info = pack_model(model, ["0", "3", "6"], tmp_path / "net.admm", index_format)
    _check_invariants(info)
    assert info.header_bytes < 1024
    assert info.report.model_ratio > 2.0
    torch.manual_seed(99)
    fresh = unpack_into(_small_net(), info.path).eval()
    with torch.no_grad():
        assert torch.equal(fresh(inputs), model(inputs))
    _assert_same_state(read_packed(info.path), model)


def test_pruned_negative_zero_decodes_as_positive_zero(tmp_path: Path) -> None:
    layer = nn.Linear(8, 4)
    with torch.no_grad():
        layer.weight[:, ::2] = -0.0
    info = pack_model(layer, [""], tmp_path / "neg.admm")
    decoded = read_packed(info.path)["weight"]
    assert torch.equal(decoded, layer.weight)
    assert not torch.signbit(decoded[:, ::2]).any()


class _Holder(nn.Module):
    """One weight of any shape, an optional bias and a buffer of another dtype."""

    def __init__(self, weight: torch.Tensor, bias: bool, buffer: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.randn(weight.shape[0])) if bias else None
        self.register_buffer("extra", buffer)


@st.composite
def _weights(draw: st.DrawFn) -> torch.Tensor:
    shape = draw(st.lists(st.integers(1, 7), min_size=1, max_size=4))
    if draw(st.booleans()):
        shape[-1] = draw(st.integers(50, 700))  # long rows: large gaps, fillers at small widths
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    values = torch.randn(shape, generator=generator)
    levels = draw(st.sampled_from([0, 1, 2, 3, 16, 300, -3, -15, -255]))  # 0: continuous
    if levels > 0:  # learned levels: a codebook
        values = torch.randn(levels, generator=generator)[
            torch.randint(levels, shape, generator=generator)
        ]
    elif levels < 0:  # a uniform grid: float32 products of one scale and odd integers
        grid = torch.arange(levels, -levels + 1, 2, dtype=torch.float32)
        scale = torch.rand((), generator=generator) + 0.01
        values = scale * grid[torch.randint(len(grid), shape, generator=generator)]
    keep = draw(st.floats(0.0, 1.0))
    weight = torch.where(torch.rand(shape, generator=generator) < keep, values, -0.0)
    weight.view(-1)[draw(st.integers(0, weight.numel() - 1))] = 1.5  # one survivor at least
    return weight


_BUFFERS = [torch.arange(5), torch.ones(2, 3, dtype=torch.float16), torch.tensor(True)]


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(_weights(), min_size=1, max_size=3),
    biases=st.lists(st.booleans(), min_size=3, max_size=3),
    index_format=st.sampled_from(["gap", "csr"]),
)
def test_random_round_trip(weights: list, biases: list, index_format: str) -> None:
    model = nn.ModuleDict(
        {f"m{i}": _Holder(weight, biases[i], _BUFFERS[i]) for i, weight in enumerate(weights)}
    )
    with tempfile.TemporaryDirectory() as folder:
        info = pack_model(model, list(model.keys()), Path(folder) / "m.admm", index_format)
        _check_invariants(info)
        _assert_same_state(read_packed(info.path), model)


def test_parametrized_model_is_refused(tmp_path: Path) -> None:
    layer = nn.Linear(4, 4)
    parametrize.register_parametrization(layer, "weight", nn.Identity())
    with pytest.raises(PackError, match="finalize"):
        pack_model(layer, [""], tmp_path / "p.admm")


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = _small_net()
    _compress_(model, keep=0.5, levels=5, seed=2)
    return pack_model(model, ["0", "3", "6"], tmp_path / "net.admm").path


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _rewrite(path: Path, edit) -> None:
    """Re-encode the header after ``edit(meta, streams)``, with a valid checksum: a file
    crafted on purpose, which only the structural checks can refuse."""
    data = path.read_bytes()
    _, version, header_bytes, payload_bytes = struct.unpack_from("<6sHIQ", data)
    meta, streams, graph = packing._parse_header(ByteReader(data, 20, 20 + header_bytes))
    meta, streams = edit(meta, list(streams))
    header = packing._header(meta, streams, graph)
    payload = data[20 + header_bytes : 20 + header_bytes + payload_bytes]
    prefix = struct.pack("<6sHIQ", MAGIC, version, len(header), len(payload))
    path.write_bytes(_with_crc(prefix + header + payload))


def _stream(index: int | str, **fields):
    """Edit the stream at ``index`` (or with that key)."""

    def edit(meta, streams):
        at = index if isinstance(index, int) else [s.key for s in streams].index(index)
        streams[at] = replace(streams[at], **fields)
        return meta, streams

    return edit


def _flip(offset: int):
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[offset] ^= 0x10
        path.write_bytes(bytes(data))

    return damage


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(b"NOTAPK" + p.read_bytes()[6:]), "bad magic"),
        (lambda p: p.write_bytes(b"ADMMPK01" + p.read_bytes()[8:]), "format 1"),
        (
            lambda p: p.write_bytes(p.read_bytes()[:6] + b"\x07\x00" + p.read_bytes()[8:]),
            "version 7",
        ),
        (lambda p: p.write_bytes(p.read_bytes()[:10]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:40]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes() + b"\0"), "extra bytes"),
        (_flip(30), "damaged: checksum"),
        (_flip(-20), "damaged: checksum"),
        (lambda p: _rewrite(p, _stream(0, gap_bits=0)), "gap width 0"),
        (lambda p: _rewrite(p, _stream(0, nonzeros=1)), "malformed"),
        (lambda p: _rewrite(p, _stream(0, coding="codebook")), "codebook of 0"),
        (lambda p: _rewrite(p, _stream(0, width=7)), "payload bytes"),
        (lambda p: _rewrite(p, _stream(0, shape=(4, 1, 3, 4))), "does not match its gap index"),
        (lambda p: _rewrite(p, _stream(1, shape=(3,))), "payload bytes"),
        (lambda p: _rewrite(p, _stream(1, dtype=torch.float64)), "payload bytes"),
        (lambda p: _rewrite(p, _stream("4.num_batches_tracked", encoding="dense")), "float32"),
    ],
)
def test_damaged_file_raises(packed: Path, damage, message: str) -> None:
    damage(packed)
    with pytest.raises(PackError, match=message) as caught:
        read_packed(packed)
    assert str(packed) in str(caught.value)


def test_huge_claimed_shape_is_refused_before_allocating(packed: Path) -> None:
    """cases/27: a header claiming a 10^6 x 10^6 weight (checksum made valid) must not make the
    reader allocate it."""
    gap = next(i for i, s in enumerate(read_model_file(packed).streams) if s.encoding == "gap")
    _rewrite(packed, _stream(gap, shape=(10**6, 10**6)))
    with pytest.raises(PackError, match="above the limit of 268435456"):
        read_packed(packed)
    # past the size limit, the gap index itself gives the shape away
    with pytest.raises(PackError, match=r"shape \[1000000, 1000000\] does not match its gap"):
        read_packed(packed, max_entries=10**13)
    _rewrite(packed, _stream(gap, shape=(10**6, 10**6), encoding="csr"))
    with pytest.raises(PackError, match="payload bytes"):  # its row pointers alone are longer
        read_packed(packed, max_entries=10**13)


def test_every_single_bit_flip_is_refused(packed: Path) -> None:
    data = packed.read_bytes()
    generator = torch.Generator().manual_seed(0)
    bits = torch.randint(8 * len(data), (1000,), generator=generator).tolist()
    for bit in bits:
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        packed.write_bytes(bytes(damaged))
        with pytest.raises(PackError):
            read_packed(packed)


def test_every_truncation_is_refused(packed: Path) -> None:
    data = packed.read_bytes()
    for length in range(len(data)):
        packed.write_bytes(data[:length])
        with pytest.raises(PackError):
            read_packed(packed)


def test_meta_round_trips(tmp_path: Path) -> None:
    meta = ModelMeta(
        "digits-cnn",
        {"width": 2},
        10,
        (1, 8, 8),
        folded=True,
        normalisation=Normalisation((4.88671875,), (6.0187501907348633,)),
    )
    info = pack_model(_small_net(), ["0"], tmp_path / "m.admm", meta=meta)
    assert read_model_file(info.path).meta == meta


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="cannot read"):
        read_packed(tmp_path / "absent.admm")


def test_file_that_does_not_fit_the_model_raises(packed: Path) -> None:
    other = _small_net()
    other[3] = nn.Linear(4 * 6 * 6, 32, bias=False)
    with pytest.raises(PackError, match=r"does not fit the model: missing \[\], unexpected"):
        unpack_into(other, packed)
    other = _small_net()
    other[6] = nn.Linear(32, 4)
    with pytest.raises(PackError, match="'6.weight' is torch.float32\\[3, 32\\]"):
        unpack_into(other, packed)


def test_a_format_2_file_still_loads(packed: Path) -> None:
    """Format 2 is format 3 without the graph section: same tensors, no graph."""
    from nets import as_format_2

    state = read_packed(packed)
    as_format_2(packed)
    read = read_model_file(packed)
    assert read.version == 2 and read.graph.missing == "format 2 files record no graph"
    assert all(torch.equal(read.state[k], v) for k, v in state.items())


def test_the_smallest_file_bound_is_below_every_real_file(packed_digits) -> None:
    """What check_constraints refuses max_storage_bits against: a true lower bound (here on a
    model pruned to 5 % at 2 bits in fc1), and above the header and raw tensors alone."""
    from admmsearch.models import compressible_layers
    from admmsearch.packed import smallest_file_bits

    model, info = packed_digits.model, packed_digits.info
    layers = list(compressible_layers(model))
    meta = read_model_file(packed_digits.path).meta
    bound = smallest_file_bits(model, layers, meta)
    raw = sum(t.numel() * 32 for k, t in model.state_dict().items() if k.endswith("bias"))
    assert raw + 32 * len(layers) < bound <= 8 * info.file_bytes
