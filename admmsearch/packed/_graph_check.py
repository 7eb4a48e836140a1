"""What each recorded operation computes from its inputs' shapes, checked against the graph.

Code generated from a graph (:mod:`admmsearch.c_network`) sizes its buffers and loops from the
recorded shapes, so before generating anything :func:`check_graph` recomputes every node's
output shape from its inputs, its tensors and its attributes (PyTorch's rules, as in
``torch.nn.Conv2d``'s documentation: ``out = (in + pad_before + pad_after - dilation *
(kernel - 1) - 1) // stride + 1``) and refuses a graph that disagrees anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ._graph import ELEMENTWISE, GraphNode, NetworkGraph

__all__ = ["check_graph", "window"]

Shape = tuple[int, ...]


def check_graph(
    graph: NetworkGraph,
    input_shape: Shape,
    tensor_shapes: Sequence[Shape],
    keys: Sequence[str],
) -> None:
    """Recompute every supported node's output shape; unsupported nodes are taken as recorded.

    Raises:
        ValueError: naming the node (number, operation, module path) and what does not fit.
    """
    shapes = graph.shapes(input_shape)
    for index, node in enumerate(graph.nodes):
        if min(node.shape, default=1) < 1:
            raise ValueError(f"graph node {index} has an empty shape {list(node.shape)}")
        if node.op == "unsupported":
            continue
        inputs = [shapes[i] for i in node.inputs]
        tensors = [tuple(tensor_shapes[t]) for t in node.tensors]
        where = f"graph node {index} ({node.op} {node.label(keys)})"
        try:
            want = _RULES[node.op](node, inputs, tensors)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if tuple(want) != node.shape:
            raise ValueError(f"{where} records shape {list(node.shape)}, computes {list(want)}")


def window(size: int, kernel: int, stride: int, dilation: int, before: int, after: int) -> int:
    """Output positions of a sliding window along one axis (PyTorch's rule, floor mode).

    Example: 8 positions, kernel 3, stride 2, padding 1 on both sides: ``(8 + 2 - 2 - 1) // 2
    + 1 = 4``.

    Raises:
        ValueError: the window does not fit the padded axis, or stride or dilation is 0.
    """
    span = size + before + after - dilation * (kernel - 1) - 1
    if span < 0 or stride < 1 or dilation < 1 or kernel < 1:
        raise ValueError(
            f"a window of {kernel} (stride {stride}, dilation {dilation}) does not fit "
            f"{size} positions padded by {before} and {after}"
        )
    return span // stride + 1


def _spatial(shape: Shape, ints: tuple[int, ...], per_axis: int, extra: int) -> int:
    """The spatial axes ``d`` (1 or 2), checking ``len(ints) == per_axis * d + extra``."""
    axes = len(shape) - 1
    if axes not in (1, 2) or len(ints) != per_axis * axes + extra:
        raise ValueError(f"input {list(shape)} with {len(ints)} attributes")
    return axes


def _bias(tensors: list[Shape], channels: int) -> None:
    if len(tensors) > 1 and tensors[1] != (channels,):
        raise ValueError(f"bias {list(tensors[1])} for {channels} outputs")


def _conv(node: GraphNode, inputs: list[Shape], tensors: list[Shape]) -> Shape:
    (shape,), weight = inputs, tensors[0]
    d = _spatial(shape, node.ints, 4, 1)
    stride, dilation, before, after = (node.ints[i * d : (i + 1) * d] for i in range(4))
    groups = node.ints[-1]
    fits = len(weight) == d + 2 and groups >= 1 and weight[0] % groups == 0
    if not fits or weight[1] * groups != shape[0]:
        raise ValueError(
            f"weight {list(weight)} does not fit input {list(shape)}, {groups} groups"
        )
    _bias(tensors, weight[0])
    sizes = zip(shape[1:], weight[2:], stride, dilation, before, after, strict=True)
    return (weight[0], *(window(*axis) for axis in sizes))


def _linear(node: GraphNode, inputs: list[Shape], tensors: list[Shape]) -> Shape:
    (shape,), weight = inputs, tensors[0]
    if len(weight) != 2 or weight[1] != shape[-1]:
        raise ValueError(f"weight {list(weight)} does not fit input {list(shape)}")
    _bias(tensors, weight[0])
    return (*shape[:-1], weight[0])


def _pool(node: GraphNode, inputs: list[Shape], tensors: list[Shape]) -> Shape:
    (shape,) = inputs
    d = _spatial(shape, node.ints, 3, int(node.op == "avg_pool"))
    kernel, stride, padding = (node.ints[i * d : (i + 1) * d] for i in range(3))
    if any(2 * p > k for p, k in zip(padding, kernel, strict=True)):
        raise ValueError(f"padding {list(padding)} above half the kernel {list(kernel)}")
    sizes = zip(shape[1:], kernel, stride, padding, strict=True)
    return (shape[0], *(window(n, k, s, 1, p, p) for n, k, s, p in sizes))


def _global_avg_pool(node: GraphNode, inputs: list[Shape], tensors: list[Shape]) -> Shape:
    (shape,) = inputs
    if len(shape) < 2 or node.shape[:1] != shape[:1] or node.numel != shape[0]:
        raise ValueError(f"pools {list(shape)} into {list(node.shape)}")
    return node.shape


def _reshape(node: GraphNode, inputs: list[Shape], tensors: list[Shape]) -> Shape:
    if math.prod(inputs[0]) != node.numel:
        raise ValueError(f"reshapes {list(inputs[0])} into {list(node.shape)}")
    return node.shape


def _add(node: GraphNode, inputs: list[Shape], tensors: list[Shape]) -> Shape:
    if inputs[0] != inputs[1]:
        raise ValueError(f"adds {list(inputs[0])} and {list(inputs[1])}")
    return inputs[0]


def _concat(node: GraphNode, inputs: list[Shape], tensors: list[Shape]) -> Shape:
    if len({shape[1:] for shape in inputs}) != 1 or min(len(s) for s in inputs) < 1:
        raise ValueError(f"concatenates {[list(s) for s in inputs]} along the channels")
    return (sum(shape[0] for shape in inputs), *inputs[0][1:])


def _batch_norm(node: GraphNode, inputs: list[Shape], tensors: list[Shape]) -> Shape:
    (shape,) = inputs
    if len(shape) < 1 or any(t != shape[:1] for t in tensors):
        raise ValueError(f"statistics {[list(t) for t in tensors]} for input {list(shape)}")
    if not (math.isfinite(node.floats[0]) and node.floats[0] > 0):
        raise ValueError(f"eps {node.floats[0]} is not a positive number")
    return shape


def _same(node: GraphNode, inputs: list[Shape], tensors: list[Shape]) -> Shape:
    return inputs[0]


_RULES: dict[str, Callable[[GraphNode, list[Shape], list[Shape]], Shape]] = {
    "conv": _conv,
    "linear": _linear,
    "max_pool": _pool,
    "avg_pool": _pool,
    "global_avg_pool": _global_avg_pool,
    "reshape": _reshape,
    "add": _add,
    "concat": _concat,
    "batch_norm": _batch_norm,
    **dict.fromkeys(ELEMENTWISE, _same),
}
