"""The packed file: bit-exact round trips, a size that matches the accounting, clear errors."""

from __future__ import annotations

import json
import math
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

from admmsearch.errors import PackError
from admmsearch.packing import MAGIC, PackInfo, pack_model, read_packed, unpack_into


def _header(path: Path) -> dict:
    data = path.read_bytes()
    (length,) = struct.unpack_from("<I", data, 8)
    return json.loads(data[12 : 12 + length])


def _check_invariants(info: PackInfo) -> None:
    streams = _header(info.path)["streams"]
    stream_bits = [meta.get("b", 8 * meta["n"]) for meta in streams]
    assert info.file_bytes == info.path.stat().st_size
    assert info.file_bytes == info.header_bytes + sum(math.ceil(b / 8) for b in stream_bits)
    assert info.payload_bytes == info.file_bytes - info.header_bytes
    assert sum(stream_bits) == info.report.model_stored_bits
    weights = {meta["k"]: meta["b"] for meta in streams if meta["e"] != "raw"}
    for layer in info.report.layers:
        assert weights[f"{layer.name}.weight"] == layer.stored_bits


def _assert_same_state(decoded: dict[str, torch.Tensor], model: nn.Module) -> None:
    expected = model.state_dict()
    assert list(decoded) == list(expected)
    for key, tensor in expected.items():
        assert decoded[key].dtype == tensor.dtype and torch.equal(decoded[key], tensor), key


def test_worked_example_bytes(tmp_path: Path) -> None:
    layer = nn.Linear(10, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0, 0.5, 0, 0, 0, 0, 0, -0.5, 0, 0.5]]))
    info = pack_model(layer, [""], tmp_path / "example.admm")
    payload = info.path.read_bytes()[info.header_bytes :]
    # codebook [0.5, -0.5] (ascending bits 0x3F000000, 0xBF000000) as little-endian float32;
    # gap codes 2, 0, 3, 2 at 2 bits, LSB first: 0b10110010 = 0xB2; value codes 0, 1, 0 -> 0x02
    assert payload == bytes.fromhex("0000003f000000bfb202")
    assert info.report.model_stored_bits == 75
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
    levels = draw(st.sampled_from([0, 1, 2, 3, 16, 300]))  # 0: continuous values
    if levels:
        values = torch.randn(levels, generator=generator)[
            torch.randint(levels, shape, generator=generator)
        ]
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


def _rewrite_header(path: Path, edit) -> None:
    header = _header(path)
    data = path.read_bytes()
    (length,) = struct.unpack_from("<I", data, 8)
    edit(header)
    blob = json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(MAGIC + struct.pack("<I", len(blob)) + blob + data[12 + length :])


def _set(stream: int, field: str, value: object):
    return lambda header: header["streams"][stream].__setitem__(field, value)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(b"NOTAPACK" + p.read_bytes()[8:]), "bad magic"),
        (lambda p: p.write_bytes(p.read_bytes()[:10]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:40]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), "payload bytes"),
        (lambda p: p.write_bytes(p.read_bytes() + b"\0"), "payload bytes"),
        (lambda p: p.write_bytes(p.read_bytes()[:12] + b"}" + p.read_bytes()[13:]), "parse"),
        (lambda p: p.write_bytes(p.read_bytes()[:13] + b"\xff" + p.read_bytes()[14:]), "parse"),
        (lambda p: _rewrite_header(p, lambda h: h.update(format=7)), "format"),
        (lambda p: _rewrite_header(p, _set(0, "g", 0)), "malformed"),
        (lambda p: _rewrite_header(p, _set(0, "m", 1)), "malformed"),
        (lambda p: _rewrite_header(p, _set(0, "K", 1)), "malformed"),
        (lambda p: _rewrite_header(p, _set(0, "t", "nn")), "malformed"),
        (lambda p: _rewrite_header(p, _set(1, "s", [3])), "malformed"),
        (lambda p: _rewrite_header(p, _set(2, "e", "zip")), "malformed"),
    ],
)
def test_malformed_file_raises(packed: Path, damage, message: str) -> None:
    damage(packed)
    with pytest.raises(PackError, match=message) as caught:
        read_packed(packed)
    assert str(packed) in str(caught.value)


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
