"""docs/FORMAT.md is enough to read a packed file: a reader written from that page alone (only
struct, zlib and numpy; nothing of admmsearch's packer) decodes real models bit for bit."""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

# ---- the independent reader: docs/FORMAT.md, section by section ----

DTYPES = {0: "<f4", 1: "<f8", 2: "<f2", 3: "bf16", 4: "<i8", 5: "<i4", 6: "<i2", 7: "i1", 8: "u1"}
DTYPES[9] = "?"
SIZES = {0: 4, 1: 8, 2: 2, 3: 2, 4: 8, 5: 4, 6: 2, 7: 1, 8: 1, 9: 1}


class Cursor:
    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        assert self.pos + size <= self.end, "header ends early"
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def string(self) -> str:
        (length,) = self.take("H")
        text = self.data[self.pos : self.pos + length].decode("utf-8")
        self.pos += length
        return text


def bit_length(x: int) -> int:
    return 0 if x == 0 else math.floor(math.log2(x)) + 1


def read_spec(path: Path) -> dict:
    data = path.read_bytes()
    magic, version, header_bytes, payload_bytes = struct.unpack_from("<6sHIQ", data, 0)
    assert magic == b"ADMMPK" and version in (2, 3)
    assert len(data) == 20 + header_bytes + payload_bytes + 4
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    assert crc == zlib.crc32(data[:-4])
    head = Cursor(data, 20, 20 + header_bytes)
    out = {"model": head.string(), "arguments": json.loads(head.string())}
    out["num_classes"], ndim = head.take("IB")
    out["input_shape"] = head.take(f"{ndim}I")
    (out["flags"],) = head.take("B")
    (kind,) = head.take("B")
    if kind == 1:
        (channels,) = head.take("I")
        out["mean"], out["std"] = head.take(f"{channels}f"), head.take(f"{channels}f")
    (count,) = head.take("I")
    entries = [entry(head) for _ in range(count)]
    out["graph"] = graph(head, count) if version == 3 else None
    assert head.pos == head.end
    tensors, pos = {}, 20 + header_bytes
    for e in entries:
        nbytes = (stream_bits(e) + 7) // 8
        tensors[e["key"]] = decode(e, data[pos : pos + nbytes])
        pos += nbytes
    assert pos == 20 + header_bytes + payload_bytes
    out["tensors"], out["entries"] = tensors, entries
    return out


def varint(head: Cursor) -> int:
    value, shift = 0, 0
    while True:
        (byte,) = head.take("B")
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value


OPS = {0: "unsupported", 1: "conv", 2: "linear", 3: "relu", 4: "relu6", 5: "sigmoid"}
OPS |= {6: "tanh", 7: "hardswish", 8: "max_pool", 9: "avg_pool", 10: "global_avg_pool"}
OPS |= {11: "reshape", 12: "add", 13: "concat", 14: "batch_norm"}


def graph(head: Cursor, tensor_count: int) -> dict:
    (kind,) = head.take("B")
    if kind == 0:
        return {"why": head.string()}
    nodes = []
    for number in range(varint(head)):
        node = {"op": OPS[varint(head)]}
        for field in ("inputs", "shape", "tensors", "ints"):
            node[field] = [varint(head) for _ in range(varint(head))]
        node["floats"] = list(head.take(f"{varint(head)}f"))
        if node["op"] == "unsupported":
            node["name"] = head.string()
        assert all(i <= number for i in node["inputs"])
        assert all(t < tensor_count for t in node["tensors"])
        nodes.append(node)
    return {"nodes": nodes, "output": varint(head)}


def entry(head: Cursor) -> dict:
    e = {"key": head.string()}
    e["dtype"], ndim = head.take("BB")
    e["shape"] = head.take(f"{ndim}I")
    e["numel"] = math.prod(e["shape"])
    (e["encoding"],) = head.take("B")
    if e["encoding"] == 0:
        return e
    e["coding"], e["c"] = head.take("BB")
    if e["coding"] == 1:
        (e["K"],) = head.take("I")
    if e["coding"] == 2:
        e["t"], e["zero_stored"] = head.take("IB")
    if e["encoding"] in (2, 3):
        (e["m"],) = head.take("I")
    if e["encoding"] == 2:
        e["g"], e["f"] = head.take("BI")
    return e


def csr_view(e: dict) -> tuple[int, int, int, int]:
    rows = e["shape"][0] if len(e["shape"]) >= 2 else 1
    cols = e["numel"] // rows
    return rows, cols, bit_length(e["m"]), bit_length(cols - 1)


def stream_bits(e: dict) -> int:
    if e["encoding"] == 0:
        return 8 * e["numel"] * SIZES[e["dtype"]]
    table = {0: 0, 1: 32 * e.get("K", 0), 2: 32 * (1 + e.get("zero_stored", 0))}[e["coding"]]
    if e["encoding"] == 1:
        return table + e["numel"] * e["c"]
    if e["encoding"] == 2:
        return table + e["g"] * (e["m"] + e["f"]) + e["m"] * e["c"]
    rows, _, pb, cb = csr_view(e)
    return table + (rows + 1) * pb + e["m"] * cb + e["m"] * e["c"]


class Bits:
    def __init__(self, blob: bytes) -> None:
        self.blob, self.pos = blob, 0

    def field(self, width: int) -> int:
        value = 0
        for i in range(width):
            j = self.pos + i
            value |= ((self.blob[j // 8] >> (j % 8)) & 1) << i
        self.pos += width
        return value


def f32(pattern: int) -> np.float32:
    return np.array([pattern], dtype=np.uint32).view(np.float32)[0]


def decode(e: dict, blob: bytes) -> np.ndarray:
    if e["encoding"] == 0:
        if e["dtype"] == 3:  # bf16: the upper half of an f32
            halves = np.frombuffer(blob, "<u2").astype(np.uint32) << 16
            return halves.view(np.float32).reshape(e["shape"])
        return np.frombuffer(blob, DTYPES[e["dtype"]]).reshape(e["shape"])
    bits = Bits(blob)
    table, scale, zero = [], None, 0
    if e["coding"] == 1:
        table = [bits.field(32) for _ in range(e["K"])]
    if e["coding"] == 2:
        scale = f32(bits.field(32))
        if e["zero_stored"]:
            zero = struct.unpack("<i", struct.pack("<I", bits.field(32)))[0]
        else:
            zero = -((e["t"] * (2 ** e["c"] - 1)) // 2)
    if e["encoding"] == 1:
        positions = list(range(e["numel"]))
    elif e["encoding"] == 2:
        positions, cursor = [], 0
        for _ in range(e["m"] + e["f"]):
            code = bits.field(e["g"])
            cursor += code if code else 2 ** e["g"] - 1
            if code:
                positions.append(cursor - 1)
        assert 0 <= e["numel"] - cursor < 2 ** e["g"] - 1
    else:
        rows, cols, pb, cb = csr_view(e)
        pointers = [bits.field(pb) for _ in range(rows + 1)]
        columns = [bits.field(cb) for _ in range(e["m"])]
        positions = [
            r * cols + columns[k] for r in range(rows) for k in range(*pointers[r : r + 2])
        ]
    out = np.zeros(e["numel"], dtype=np.float32)
    for position in positions:
        code = bits.field(e["c"])
        if e["coding"] == 0:
            out[position] = f32(code)
        elif e["coding"] == 1:
            out[position] = f32(table[code])
        else:
            out[position] = scale * np.float32(zero + e["t"] * code)  # one f32 rounding
    return out.reshape(e["shape"])


# ---- the graph's operations, from the page's table (numpy, float64) ----


def run_spec(read: dict, x: np.ndarray) -> np.ndarray:
    """The recorded graph's output for a batch ``x`` (already normalised)."""
    tensors = [np.asarray(read["tensors"][e["key"]], dtype=np.float64) for e in read["entries"]]
    values = [x.astype(np.float64)]
    for node in read["graph"]["nodes"]:
        xs = [values[i] for i in node["inputs"]]
        out = SPEC[node["op"]](node, xs, [tensors[t] for t in node["tensors"]])
        values.append(out.reshape(len(x), *node["shape"]))
    return values[read["graph"]["output"]]


def split(ints: list[int], d: int, parts: int) -> list[list[int]]:
    return [ints[i * d : (i + 1) * d] for i in range(parts)]


def windows(x: np.ndarray, kernel, stride, dilation, out) -> list[np.ndarray]:
    """For each kernel position q, the entries x[..., p * stride + q * dilation] at every
    output position p (x already padded)."""
    views = []
    for q in np.ndindex(*kernel):
        index = tuple(
            slice(q[a] * dilation[a], q[a] * dilation[a] + stride[a] * (out[a] - 1) + 1, stride[a])
            for a in range(len(kernel))
        )
        views.append(x[(..., *index)])
    return views


def conv(node, xs, ts):
    (x,), d = xs, xs[0].ndim - 2
    stride, dilation, before, after = split(node["ints"], d, 4)
    groups, weight = node["ints"][-1], ts[0]
    x = np.pad(x, [(0, 0), (0, 0), *zip(before, after, strict=True)])
    out = [
        (x.shape[2 + a] - dilation[a] * (weight.shape[2 + a] - 1) - 1) // stride[a] + 1
        for a in range(d)
    ]
    n, c, o = len(x), x.shape[1] // groups, weight.shape[0] // groups
    y = np.zeros((n, groups, o, *out))
    for q, view in zip(
        np.ndindex(*weight.shape[2:]),
        windows(x, weight.shape[2:], stride, dilation, out),
        strict=True,
    ):
        w = weight[(slice(None), slice(None), *q)].reshape(groups, o, c)
        y += np.einsum("goc,ngc...->ngo...", w, view.reshape(n, groups, c, *out))
    y = y.reshape(n, groups * o, *out)
    return y + (ts[1].reshape(1, -1, *[1] * d) if len(ts) > 1 else 0)


def pool(node, xs, ts):
    (x,), d = xs, xs[0].ndim - 2
    kernel, stride, padding = split(node["ints"], d, 3)
    pads = [(0, 0), (0, 0), *zip(padding, padding, strict=True)]
    out = [(x.shape[2 + a] + 2 * padding[a] - kernel[a]) // stride[a] + 1 for a in range(d)]
    ones = [1] * d
    if node["op"] == "max_pool":
        padded = np.pad(x, pads, constant_values=-np.inf)
        return np.max(windows(padded, kernel, stride, ones, out), axis=0)
    total = np.sum(windows(np.pad(x, pads), kernel, stride, ones, out), axis=0)
    if node["ints"][-1]:
        return total / np.prod(kernel)
    inside = np.sum(windows(np.pad(np.ones_like(x), pads), kernel, stride, ones, out), axis=0)
    return total / inside


def batch_norm(node, xs, ts):
    shape = (1, -1, *[1] * (xs[0].ndim - 2))
    mean, var, *affine = (t.reshape(shape) for t in ts)
    weight, bias = affine or (1.0, 0.0)
    return (xs[0] - mean) / np.sqrt(var + node["floats"][0]) * weight + bias


SPEC = {
    "conv": conv,
    "linear": lambda node, xs, ts: xs[0] @ ts[0].T + (ts[1] if len(ts) > 1 else 0),
    "relu": lambda node, xs, ts: np.maximum(xs[0], 0),
    "relu6": lambda node, xs, ts: np.minimum(np.maximum(xs[0], 0), 6),
    "sigmoid": lambda node, xs, ts: 1 / (1 + np.exp(-xs[0])),
    "tanh": lambda node, xs, ts: np.tanh(xs[0]),
    "hardswish": lambda node, xs, ts: xs[0] * np.minimum(np.maximum(xs[0] + 3, 0), 6) / 6,
    "max_pool": pool,
    "avg_pool": pool,
    "global_avg_pool": lambda node, xs, ts: xs[0].reshape(len(xs[0]), xs[0].shape[1], -1).mean(2),
    "reshape": lambda node, xs, ts: xs[0],
    "add": lambda node, xs, ts: xs[0] + xs[1],
    "concat": lambda node, xs, ts: np.concatenate(xs, axis=1),
    "batch_norm": batch_norm,
}


# ---- the tests ----


def _assert_bitwise(decoded: np.ndarray, tensor: torch.Tensor, key: str) -> None:
    expected = tensor.detach().cpu()
    if expected.dtype == torch.float32:
        expected = torch.where(expected == 0, torch.zeros(()), expected)  # pruned: +0.0
    want = expected.reshape(-1).view(torch.uint8).numpy().tobytes()
    got = np.ascontiguousarray(decoded).tobytes()
    assert got == want, key


def test_worked_example_of_the_page(tmp_path: Path) -> None:
    from torch import nn

    from admmsearch.packed._format import ModelMeta, pack_model

    page = (Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md").read_text()
    layer = nn.Linear(10, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0, 0.5, 0, 0, 0, 0, 0, -0.5, 0, 0.5]]))
    path = tmp_path / "example.admm"
    pack_model(layer, [""], path, meta=ModelMeta(num_classes=1, input_shape=(10,)))
    data = path.read_bytes()
    block = page.split("## Example", 1)[1].split("```")[1]
    hex_text = "".join(line.split("   ")[0] for line in block.strip().splitlines())
    assert bytes.fromhex(hex_text.replace(" ", "")) == data and len(data) == 98
    read = read_spec(path)
    assert read["tensors"]["weight"].tolist() == [[0, 0.5, 0, 0, 0, 0, 0, -0.5, 0, 0.5]]
    node = {"op": "linear", "inputs": [0], "shape": [1], "tensors": [0], "ints": [], "floats": []}
    assert read["graph"] == {"nodes": [node], "output": 1}
    assert run_spec(read, np.ones((1, 10))).tolist() == [[0.5]]


def test_digits_model_decodes_bit_for_bit(packed_digits) -> None:
    read = read_spec(packed_digits.path)
    assert read["model"] == "digits-cnn" and read["input_shape"] == (1, 8, 8)
    norm = packed_digits.data.normalisation
    assert read["mean"] == norm.mean and read["std"] == norm.std
    codings = {e["key"]: (e["encoding"], e.get("coding")) for e in read["entries"]}
    assert codings["conv1.weight"] == (2, 2) and codings["fc2.weight"] == (1, 1)
    state = packed_digits.model.state_dict()
    assert list(read["tensors"]) == list(state)
    for key, tensor in state.items():
        _assert_bitwise(read["tensors"][key], tensor, key)


@pytest.mark.parametrize("index_format", ["csr", "gap"])
def test_other_encodings_and_dtypes_decode_bit_for_bit(tmp_path: Path, index_format: str):
    from torch import nn

    from admmsearch.packed._format import pack_model

    generator = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Linear(40, 30), nn.BatchNorm1d(30), nn.Linear(30, 5))
    with torch.no_grad():
        keep = torch.rand(30, 40, generator=generator) < 0.2
        levels = torch.tensor(0.037) * torch.arange(3.0, 34.0, 2.0)  # 3..33: needs a zero point
        picks = levels[torch.randint(16, (30, 40), generator=generator)]
        model[0].weight.copy_(torch.where(keep, picks, torch.zeros(())))
        model[2].weight.copy_(torch.randn(5, 30, generator=generator))  # raw values
    model[1].running_mean.add_(1.5)
    path = tmp_path / "m.admm"
    pack_model(model, ["0", "2"], path, index_format)
    read = read_spec(path)
    kinds = {e["key"]: e for e in read["entries"]}
    assert kinds["0.weight"]["encoding"] == (3 if index_format == "csr" else 2)
    assert (kinds["0.weight"]["coding"], kinds["0.weight"]["zero_stored"]) == (2, 1)
    assert kinds["2.weight"]["coding"] == 0
    assert kinds["1.num_batches_tracked"]["dtype"] == 4
    for key, tensor in model.state_dict().items():
        _assert_bitwise(read["tensors"][key], tensor, key)


def test_the_graph_computes_as_the_page_says(tmp_path: Path) -> None:
    """Networks of every operation: the graph read and run from the page alone gives the
    network's logits."""
    from nets import Conv1dNet, DSResNet, Inception, compress_

    from admmsearch.models import compressible_layers
    from admmsearch.packed._format import ModelMeta, pack_model

    for build, shape in ((DSResNet, (1, 12, 12)), (Inception, (3, 10, 10)), (Conv1dNet, (2, 32))):
        torch.manual_seed(0)
        model = build()
        compress_(model, seed=2)
        path = tmp_path / "net.admm"
        classes = int(model(torch.zeros(1, *shape)).shape[1])
        meta = ModelMeta("nets:any", {}, classes, shape)
        pack_model(model, list(compressible_layers(model)), path, meta=meta)
        read = read_spec(path)
        ops = {node["op"] for node in read["graph"]["nodes"]}
        x = torch.randn(6, *shape, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            want = model(x).numpy()
        assert np.abs(run_spec(read, x.numpy()) - want).max() < 1e-4, ops


def test_a_format_2_file_reads_without_a_graph(tmp_path: Path, packed_digits) -> None:
    import shutil

    from nets import as_format_2

    path = tmp_path / "old.admm"
    shutil.copy(packed_digits.path, path)
    as_format_2(path)
    read = read_spec(path)
    assert read["graph"] is None and list(read["tensors"]) == list(
        packed_digits.model.state_dict()
    )


def test_digits_graph_runs_from_the_page(packed_digits) -> None:
    read = read_spec(packed_digits.path)
    ops = [node["op"] for node in read["graph"]["nodes"]]
    assert ops == [
        "conv",
        "relu",
        "conv",
        "relu",
        "max_pool",
        "reshape",
        "linear",
        "relu",
        "linear",
    ]
    x = packed_digits.data.x_test[:50]
    with torch.no_grad():
        want = packed_digits.model(x).numpy()
    assert np.abs(run_spec(read, x.numpy()) - want).max() < 1e-4
