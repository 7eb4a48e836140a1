"""The network's graph from ``torch.fx``: traced, normalised to :data:`~admmsearch.graph.OPS`,
and checked against the network itself.

:func:`trace_graph` traces the network (after BatchNorm folding, as it is packed), runs it once
on a seeded random batch of two samples to learn every value's shape (``ShapeProp``), and maps
each traced call to a recorded operation: modules (``nn.Conv2d``, ``nn.ReLU6``, ...), functions
(``F.relu``, ``torch.cat``, ``operator.add``, ...) and tensor methods (``x.flatten(1)``,
``x.view(n, -1)``, ``x.mean((2, 3))``). Dropout, identity and ``contiguous`` disappear (their
output is their input); reshapes that keep the batch axis become ``reshape``. A call outside the
list becomes an ``unsupported`` node named with its module path, so that the C export can say
what to change. The graph is then run by :func:`run_graph` (PyTorch's own functions, one per
recorded operation) on the same batch: a graph whose output differs from the network's (an
in-place operation on a value read again later, say) is not recorded.

Example::

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    >>> keys = list(net.state_dict())
    >>> [node.op for node in trace_graph(net, (1, 4, 4), keys).nodes]
    ['conv', 'relu', 'reshape', 'linear']
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ..registry import one_line
from ..tracing import symbolic_trace
from ._graph import GraphNode, NetworkGraph
from ._tracing_ops import Mapped, map_function, map_method, map_module

__all__ = ["BATCH", "run_graph", "trace_graph"]

#: Samples in the batch a network is traced and checked with (two, so that an operation mixing
#: the samples of a batch shows).
BATCH = 2


def trace_graph(model: nn.Module, input_shape: Sequence[int], keys: Sequence[str]) -> NetworkGraph:
    """The graph of ``model`` for inputs of one sample's ``input_shape``; never raises.

    Args:
        model: the network as it is packed (BatchNorm folded or not); not changed (it runs
            once in eval mode, its modules' training flags restored).
        input_shape: one sample's shape, channels first.
        keys: the packed file's tensor keys in order (the state_dict's); nodes name their
            tensors by index into this list.

    Returns:
        The graph, or :meth:`NetworkGraph.absent` saying why there is none: ``torch.fx``
        cannot trace the network, or the traced graph does not reproduce it ("" when there is
        no input shape).
    """
    if not input_shape:
        return NetworkGraph.absent("")
    try:
        traced = symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: no graph
        return NetworkGraph.absent(f"torch.fx cannot trace the network: {one_line(exc)}")
    x = _example(model, input_shape)
    try:
        with _evaluating(model), torch.no_grad():
            ShapeProp(traced).propagate(x)
            expected = model(x)
    except Exception as exc:  # noqa: BLE001 - user code: any failure is named in one line
        return NetworkGraph.absent(f"the traced network does not run: {one_line(exc)}")
    graph = _Builder(traced, {k: i for i, k in enumerate(keys)}).build()
    if graph.recorded and not graph.unsupported:
        return _verified(graph, model, keys, x, expected)
    return graph


def run_graph(graph: NetworkGraph, tensors: Sequence[Tensor], x: Tensor) -> Tensor:
    """Run a recorded graph on a batch ``x`` ``(N, *input_shape)`` with PyTorch's functions.

    This is what each recorded operation means; the C kernels compute the same.

    Raises:
        ValueError: the graph has an unsupported node.
    """
    values = [x]
    for node in graph.nodes:
        inputs = [values[i] for i in node.inputs]
        out = _EVAL[node.op](node, inputs, [tensors[t] for t in node.tensors])
        values.append(out.reshape(len(x), *node.shape))
    return values[graph.output]


def _example(model: nn.Module, input_shape: Sequence[int]) -> Tensor:
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    return torch.randn(BATCH, *input_shape, generator=generator).to(device)


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode inside, every module's own training flag back after."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _verified(
    graph: NetworkGraph, model: nn.Module, keys: Sequence[str], x: Tensor, expected: Tensor
) -> NetworkGraph:
    state = model.state_dict()
    try:
        with torch.no_grad():
            got = run_graph(graph, [state[k] for k in keys], x)
    except Exception as exc:  # noqa: BLE001 - a graph that does not run is not recorded
        return NetworkGraph.absent(f"the traced graph does not run: {one_line(exc)}")
    if not isinstance(expected, Tensor) or got.shape != expected.shape:
        return NetworkGraph.absent("the traced graph's output is not the network's")
    gap = float((got - expected).abs().max()) if got.numel() else 0.0
    if not gap <= 1e-4 * (1.0 + float(expected.abs().max())):
        return NetworkGraph.absent(
            f"the traced graph does not reproduce the network (logits differ by {gap:.3g}; an "
            "in-place operation on a value read again later?)"
        )
    return graph


class _Builder:
    """Walks the traced nodes in order, numbering values and mapping each call to an op."""

    def __init__(self, traced: fx.GraphModule, index: dict[str, int]) -> None:
        self.traced, self.index = traced, index
        self.values: dict[fx.Node, int] = {}
        self.nodes: list[GraphNode] = []
        self.output: int | None = None
        self.problem = ""

    def build(self) -> NetworkGraph:
        for node in self.traced.graph.nodes:
            self._visit(node)
            if self.problem:
                return NetworkGraph.absent(self.problem)
        if self.output is None:
            return NetworkGraph.absent("the network returns no tensor")
        return NetworkGraph(tuple(self.nodes), self.output)

    def _visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            if self.values:
                self.problem = "the network takes more than one input"
            self.values[node] = 0
        elif node.op == "output":
            result = node.args[0]
            if not isinstance(result, fx.Node) or result not in self.values:
                self.problem = "the network does not return one tensor"
            else:
                self.output = self.values[result]
        elif node.op.startswith("call_") and _tensor_shape(node) is not None:
            self._call(node)

    def _call(self, node: fx.Node) -> None:
        mapped, shape = self._map(node), _tensor_shape(node)
        if mapped.op != "unsupported" and (shape[0] != BATCH or not _float32(node)):
            mapped = Mapped.unsupported("mixes the samples of a batch, or is not float32")
        data = [self.values.get(arg) for arg in mapped.inputs]
        tensors = [self.index.get(key) for key in mapped.keys]
        if mapped.op != "unsupported" and None in data:
            mapped = Mapped.unsupported("reads a tensor that is not a value of the graph")
        elif mapped.op != "unsupported" and None in tensors:
            mapped = Mapped.unsupported("its tensors are not in the state_dict")
        if mapped.op == "alias":
            self.values[node] = data[0]
            return
        name = ""
        if mapped.op == "unsupported":
            data = [self.values[a] for a in node.all_input_nodes if a in self.values]
            why = f": {mapped.why}" if mapped.why else ""
            name, tensors = f"{_where(node)} ({_what(node, self.traced)}{why})", []
        node_record = GraphNode(
            mapped.op,
            tuple(data),
            tuple(shape[1:]),
            tuple(tensors),
            mapped.ints,
            mapped.floats,
            name,
        )
        self.nodes.append(node_record)
        self.values[node] = len(self.nodes)

    def _map(self, node: fx.Node) -> Mapped:
        shapes = {arg: _tensor_shape(arg) for arg in (*node.all_input_nodes, node)}
        if node.op == "call_module":
            module = self.traced.get_submodule(str(node.target))
            return map_module(module, str(node.target), node, shapes)
        if node.op == "call_method":
            return map_method(str(node.target), node, shapes)
        return map_function(node.target, node, shapes)


def _tensor_shape(node: object) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def _float32(node: fx.Node) -> bool:
    return node.meta["tensor_meta"].dtype == torch.float32


def _where(node: fx.Node) -> str:
    """The module path of a call: the module's own, or the innermost module it is made in."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    paths = [entry[0] for entry in stack.values() if entry and entry[0]]
    return paths[-1] if paths else "forward"


def _what(node: fx.Node, traced: fx.GraphModule) -> str:
    if node.op == "call_module":
        return type(traced.get_submodule(str(node.target))).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    module = getattr(node.target, "__module__", None) or ""
    module = _PUBLIC.get(module, module.lstrip("_"))
    name = getattr(node.target, "__name__", str(node.target))
    return f"{module}.{name}" if module else name


# where torch's compiled functions are documented, for the names of unsupported calls
_PUBLIC = {"torch._C._nn": "torch.nn.functional", "torch._C._VariableFunctions": "torch"}


# --- what each recorded operation computes (PyTorch's functions) ---


def _conv(node: GraphNode, inputs: list[Tensor], tensors: list[Tensor]) -> Tensor:
    (x,), d = inputs, inputs[0].dim() - 2
    stride, dilation, before, after = (node.ints[i * d : (i + 1) * d] for i in range(4))
    pads = [p for axis in reversed(range(d)) for p in (before[axis], after[axis])]
    conv = F.conv1d if d == 1 else F.conv2d
    bias = tensors[1] if len(tensors) > 1 else None
    return conv(F.pad(x, pads), tensors[0], bias, stride, 0, dilation, node.ints[-1])


def _pool(node: GraphNode, inputs: list[Tensor], tensors: list[Tensor]) -> Tensor:
    (x,), d = inputs, inputs[0].dim() - 2
    kernel, stride, padding = (node.ints[i * d : (i + 1) * d] for i in range(3))
    if node.op == "max_pool":
        return (F.max_pool1d if d == 1 else F.max_pool2d)(x, kernel, stride, padding)
    pool = F.avg_pool1d if d == 1 else F.avg_pool2d
    return pool(x, kernel, stride, padding, count_include_pad=bool(node.ints[-1]))


def _batch_norm(node: GraphNode, inputs: list[Tensor], tensors: list[Tensor]) -> Tensor:
    mean, var, *affine = tensors
    weight, bias = affine or (None, None)
    return F.batch_norm(inputs[0], mean, var, weight, bias, False, 0.0, node.floats[0])


def _linear(node: GraphNode, inputs: list[Tensor], tensors: list[Tensor]) -> Tensor:
    return F.linear(inputs[0], tensors[0], tensors[1] if len(tensors) > 1 else None)


def _unsupported(node: GraphNode, inputs: list[Tensor], tensors: list[Tensor]) -> Tensor:
    raise ValueError(f"unsupported operation {node.name}")


_EVAL = {
    "conv": _conv,
    "linear": _linear,
    "relu": lambda node, xs, ts: torch.relu(xs[0]),
    "relu6": lambda node, xs, ts: F.relu6(xs[0]),
    "sigmoid": lambda node, xs, ts: torch.sigmoid(xs[0]),
    "tanh": lambda node, xs, ts: torch.tanh(xs[0]),
    "hardswish": lambda node, xs, ts: F.hardswish(xs[0]),
    "max_pool": _pool,
    "avg_pool": _pool,
    "global_avg_pool": lambda node, xs, ts: xs[0].mean(dim=tuple(range(2, xs[0].dim()))),
    "reshape": lambda node, xs, ts: xs[0],
    "add": lambda node, xs, ts: operator.add(*xs),
    "concat": lambda node, xs, ts: torch.cat(xs, dim=1),
    "batch_norm": _batch_norm,
    "unsupported": _unsupported,
}
