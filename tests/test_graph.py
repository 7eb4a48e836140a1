"""The network's graph: traced by torch.fx into the recorded operations (modules, functions and
tensor methods), checked against the network, written into the packed file and read back, and
refused when damaged."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from nets import Conv1dNet, DSResNet, Inception, compress_, leaky, mlp
from torch import nn

from admmsearch.errors import PackError
from admmsearch.fold import fold_batchnorm
from admmsearch.models import compressible_layers, create_model
from admmsearch.packed import _format as packing
from admmsearch.packed._binio import ByteReader, ByteWriter, Malformed
from admmsearch.packed._format import ModelMeta, pack_model, read_model_file
from admmsearch.packed._graph import GraphNode, NetworkGraph
from admmsearch.packed._graph_check import check_graph
from admmsearch.packed._tracing import run_graph, trace_graph

NETS = {
    "ds-resnet": (DSResNet, (1, 12, 12)),
    "inception": (Inception, (3, 10, 10)),
    "conv1d": (Conv1dNet, (2, 32)),
    "mlp": (mlp, (20,)),
}


def _traced(build, shape, fold: bool = False) -> tuple[nn.Module, NetworkGraph]:
    torch.manual_seed(0)
    model = build()
    compress_(model, seed=3)
    if fold:
        fold_batchnorm(model)
    return model, trace_graph(model, shape, list(model.state_dict()))


def _ops(graph: NetworkGraph) -> list[str]:
    return [node.op for node in graph.nodes]


def test_each_network_traces_to_its_operations() -> None:
    _, ds = _traced(*NETS["ds-resnet"])
    block = ["conv", "batch_norm", "relu6"]
    tail = ["conv", "batch_norm", "add", "relu6", "global_avg_pool", "reshape", "linear"]
    assert _ops(ds) == block * 4 + tail
    assert _ops(_traced(*NETS["ds-resnet"], fold=True)[1]) == ["conv", "relu6"] * 4 + [
        "conv", "add", "relu6", "global_avg_pool", "reshape", "linear"
    ]  # fmt: skip
    _, inception = _traced(*NETS["inception"])
    assert _ops(inception) == [
        "conv", "hardswish", "conv", "sigmoid", "concat", "max_pool", "conv", "tanh",
        "avg_pool", "reshape", "linear",
    ]  # fmt: skip
    _, conv1d = _traced(*NETS["conv1d"])
    assert _ops(conv1d) == [
        "conv", "batch_norm", "relu", "conv", "tanh", "max_pool", "avg_pool",
        "global_avg_pool", "linear",
    ]  # fmt: skip
    _, perceptron = _traced(*NETS["mlp"])  # Flatten on flat inputs is a reshape; dropout goes
    assert _ops(perceptron) == ["reshape", "linear", "relu", "linear", "sigmoid", "linear"]


def test_attributes_are_pytorchs() -> None:
    _, inception = _traced(*NETS["inception"])
    dilated, pool, same, avg = (inception.nodes[i] for i in (2, 5, 6, 8))
    assert dilated.ints == (1, 1, 2, 2, 2, 2, 2, 2, 1)  # stride, dilation, before, after, groups
    assert pool.ints == (3, 3, 2, 2, 1, 1) and pool.shape == (10, 5, 5)
    assert same.ints == (1, 1, 1, 1, 1, 1, 1, 1, 1)  # padding="same" for a 3x3 kernel
    assert avg.ints == (2, 2, 2, 2, 1, 1, 0) and avg.shape == (8, 3, 3)
    _, ds = _traced(*NETS["ds-resnet"])
    depthwise = ds.nodes[3]
    assert depthwise.ints[-1] == 6 and depthwise.shape == (6, 6, 6)
    assert ds.nodes[1].floats == (pytest.approx(1e-5),) and len(ds.nodes[1].tensors) == 4


@pytest.mark.parametrize("name", list(NETS))
def test_the_recorded_graph_computes_what_the_network_does(name: str) -> None:
    model, graph = _traced(*NETS[name])
    state = model.state_dict()
    x = torch.randn(5, *NETS[name][1], generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = run_graph(graph, list(state.values()), x)
        assert torch.allclose(got, model(x), atol=1e-5, rtol=1e-5)
    shapes = [tuple(t.shape) for t in state.values()]
    check_graph(graph, NETS[name][1], shapes, list(state))


def test_functions_and_methods_are_recognised() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 2, 3, 3))
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = F.conv2d(x, self.weight, None, 1, 1)
            x = F.max_pool2d(F.relu6(x), 2)
            x = F.avg_pool2d(x.relu(), 2, 1, 1, count_include_pad=True)
            x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
            return F.linear(x.contiguous(), self.fc.weight, self.fc.bias)

    model = Functional()
    graph = trace_graph(model, (2, 6, 6), list(model.state_dict()))
    assert _ops(graph) == [
        "conv", "relu6", "max_pool", "relu", "avg_pool", "global_avg_pool", "reshape", "linear"
    ]  # fmt: skip
    assert graph.nodes[0].tensors == (0,) and graph.nodes[-1].tensors == (1, 2)


def test_operations_outside_the_list_are_named_with_their_module_path() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 4), nn.GELU())
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.body(x) * 2 + 1.0)

    model = Odd()
    graph = trace_graph(model, (4,), list(model.state_dict()))
    assert graph.recorded and graph.unsupported == (
        "body.1 (GELU)",
        "forward (operator.mul)",
        "forward (operator.add: alpha or a constant operand)",
    )
    _, small = _traced(leaky, (1, 8, 8))
    assert small.unsupported == ("1 (LeakyReLU)",)


def test_a_network_that_cannot_be_recorded_says_why() -> None:
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    assert "torch.fx cannot trace" in trace_graph(Branchy(), (3,), []).missing

    class Sneaky(nn.Module):  # relu in place on a value read again: fx cannot see it
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            y = self.fc(x)
            return y + F.relu(y, inplace=True)

    graph = trace_graph(Sneaky(), (3,), ["fc.weight", "fc.bias"])
    assert not graph.recorded and "does not reproduce the network" in graph.missing
    assert trace_graph(Sneaky(), (), []) == NetworkGraph.absent("")


def test_tracing_leaves_the_network_as_it_was() -> None:
    model = DSResNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert trace_graph(model, (1, 12, 12), list(before)).recorded
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_graph_travels_in_the_packed_file(tmp_path: Path) -> None:
    model, graph = _traced(*NETS["inception"])
    path = tmp_path / "i.admm"
    pack_model(
        model, list(compressible_layers(model)), path, meta=ModelMeta("x:y", {}, 5, (3, 10, 10))
    )
    read = read_model_file(path)
    assert read.graph == graph and read.version == 3
    model, graph = _traced(leaky, (1, 8, 8))
    pack_model(model, ["0"], path, meta=ModelMeta("x:y", {}, 3, (1, 8, 8)))
    assert read_model_file(path).graph == graph
    pack_model(model, ["0"], path)  # no input shape, no graph
    assert read_model_file(path).graph == NetworkGraph.absent("")


def test_reference_networks_record_their_graph(tmp_path: Path) -> None:
    for name, shape in (("digits-cnn", (1, 8, 8)), ("vgg16", (3, 32, 32))):
        model = create_model(name, num_classes=10, input_shape=shape).eval()
        fold_batchnorm(model)
        graph = trace_graph(model, shape, list(model.state_dict()))
        assert graph.recorded and not graph.unsupported and "batch_norm" not in _ops(graph)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "00"), (5, "05"), (127, "7f"), (300, "ac02"), (2**32 - 1, "ffffffff0f")],
)
def test_varints(value: int, encoded: str) -> None:
    out = ByteWriter()
    out.varint(value)
    assert out.buffer.hex() == encoded
    assert ByteReader(bytes(out.buffer)).varint("v") == value


def test_bad_varints_are_refused() -> None:
    with pytest.raises(Malformed, match="not a varint"):
        ByteReader(bytes.fromhex("ffffffff10")).varint("the count")  # 2**32
    with pytest.raises(Malformed, match="header ends inside the count"):
        ByteReader(bytes.fromhex("ff")).varint("the count")
    with pytest.raises(ValueError, match="does not fit"):
        ByteWriter().varint(-1)


def _with_graph(data: bytes, path: Path, graph: NetworkGraph) -> None:
    """Write the packed file ``data`` with another graph section (checksum made valid): a file
    crafted on purpose."""
    _, version, header_bytes, payload_bytes = struct.unpack_from("<6sHIQ", data)
    meta, streams, _ = packing._parse_header(ByteReader(data, 20, 20 + header_bytes))
    header = packing._header(meta, streams, graph)
    payload = data[20 + header_bytes : 20 + header_bytes + payload_bytes]
    body = struct.pack("<6sHIQ", b"ADMMPK", version, len(header), len(payload)) + header + payload
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (GraphNode("relu", (1,), (3,)), "reads value 1, not computed before it"),
        (GraphNode("linear", (0,), (3,), (7,)), "names tensor 7 of 2"),
        (GraphNode("add", (0,), (3,)), "add with 1 inputs"),
        (GraphNode("conv", (0,), (3,), (0,), (1, 1, 1)), "conv with 3 ints"),
        (GraphNode("batch_norm", (0,), (3,), (0, 1)), "batch_norm with 0 floats"),
    ],
)
def test_a_damaged_graph_is_refused(tmp_path: Path, node: GraphNode, message: str) -> None:
    model = nn.Linear(3, 3)
    path = tmp_path / "m.admm"
    pack_model(model, [""], path, meta=ModelMeta("x:y", {}, 3, (3,)))
    data = path.read_bytes()
    _with_graph(data, path, NetworkGraph((node,), 1))
    with pytest.raises(PackError, match=f"graph node 0 .*{message}"):
        read_model_file(path)
    _with_graph(data, path, NetworkGraph((GraphNode("relu", (0,), (3,)),), 2))
    with pytest.raises(PackError, match="the graph's output is value 2 of 2"):
        read_model_file(path)


def test_a_graph_whose_shapes_disagree_is_refused_by_the_check() -> None:
    model, graph = _traced(*NETS["conv1d"])
    state = model.state_dict()
    first = graph.nodes[0]
    bad = NetworkGraph((GraphNode(first.op, first.inputs, (8, 17), first.tensors, first.ints),
                        *graph.nodes[1:]), graph.output)  # fmt: skip
    with pytest.raises(
        ValueError,
        match=r"graph node 0 \(conv conv1\) records shape \[8, 17\], computes \[8, 16\]",
    ):
        check_graph(bad, (2, 32), [tuple(t.shape) for t in state.values()], list(state))
