"""``admm_predict`` in C, generated from a packed file's graph: one kernel call per operation.

Every network made of the graph's operations (:data:`admmsearch.graph.OPS`) gets the same
code path: the values live in one static arena planned from the graph
(:func:`admmsearch.arena.plan_arena`), each node becomes one call of a kernel of
:mod:`admmsearch.c_runtime` with its shapes written in, and convolution and linear layers walk
their weights straight from the compressed streams (``admm_walk``), so RAM is the arena plus
the stack. With ``ADMM_DECODE_LAYERS`` set, each layer is decoded whole into a buffer of the
largest layer's size first, and the kernels walk that buffer instead (faster where RAM allows).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..packed import ELEMENTWISE, GraphNode, NetworkGraph, PackedFile, check_graph
from ._arena import ArenaPlan, Step, plan_arena
from ._c_runtime import KERNELS, MATH_KERNELS

__all__ = ["CNetwork", "inference_problems", "network_source"]

_IN_PLACE = (*ELEMENTWISE, "batch_norm", "add")


@dataclass(frozen=True)
class CNetwork:
    """The generated network: its C text, the kernels it calls, its arena plan."""

    source: str
    kernels: tuple[str, ...]
    plan: ArenaPlan
    operations: int

    @property
    def uses_math(self) -> bool:
        return any(name in MATH_KERNELS for name in self.kernels)


def inference_problems(packed: PackedFile, graph: NetworkGraph) -> list[str]:
    """Why ``admm_predict`` cannot be generated for this file and graph; empty when it can.

    Each problem is one phrase: why no graph is recorded, each unsupported operation with its
    module path, a tensor the kernels need that is not a float32 array, an output that is not
    one logit per class.
    """
    if not graph.recorded:
        return [graph.missing or "the file records no graph (packed without an input shape)"]
    if graph.unsupported:
        return [f"unsupported operation {name}" for name in graph.unsupported]
    problems = []
    for node in graph.nodes:
        for at, tensor in enumerate(node.tensors):
            weight = at == 0 and node.op in ("conv", "linear")
            problems += _tensor_problem(packed, packed.streams[tensor].key, node.op, weight)
    out = math.prod(graph.shapes(packed.meta.input_shape)[graph.output])
    if out != packed.meta.num_classes:
        problems.append(f"the output has {out} values for {packed.meta.num_classes} classes")
    return problems


def _tensor_problem(packed: PackedFile, key: str, op: str, weight: bool) -> list[str]:
    """A weight may be compressed or raw; every other tensor the kernels read as floats."""
    stream, tensor = next(s for s in packed.streams if s.key == key), packed.state[key]
    if stream.encoding != "raw":
        return [] if weight else [f"{key} ({op}) is compressed; only weights may be"]
    if stream.dtype != torch.float32 or not bool(torch.isfinite(tensor).all()):
        return [f"{key} ({op}) is not a finite float32 tensor"]
    return []


def network_source(packed: PackedFile, graph: NetworkGraph, names: dict[str, str]) -> CNetwork:
    """The C text of the arena, the shapes and ``admm_predict`` for a graph without problems.

    Args:
        packed: the file read back.
        graph: its graph, for which :func:`inference_problems` found nothing.
        names: the C identifier of each tensor's array, by key.

    Raises:
        ValueError: a recorded shape disagrees with what its node computes (a damaged graph).
    """
    keys = [s.key for s in packed.streams]
    check_graph(graph, packed.meta.input_shape, [s.shape for s in packed.streams], keys)
    shapes = graph.shapes(packed.meta.input_shape)
    plan = plan_arena([math.prod(s) for s in shapes], _steps(graph.nodes), graph.output)
    context = _Context(packed, shapes, plan, names)
    decls, body = [], []
    for index, node in enumerate(graph.nodes):
        decl, code = _EMIT[node.op](context, index, node)
        decls += decl
        body.append(f"    /* {index}. {_describe(node, keys, shapes)} */\n{code}")
    text = _predict(context, decls, body, graph)
    return CNetwork(text, _kernels(text), plan, len(graph.nodes))


def _steps(nodes: Sequence[GraphNode]) -> list[Step]:
    kinds = {"reshape": "alias", **dict.fromkeys(_IN_PLACE, "inplace")}
    return [Step(node.inputs, kinds.get(node.op, "new")) for node in nodes]


def _describe(node: GraphNode, keys: list[str], shapes: list[tuple[int, ...]]) -> str:
    given = ", ".join("x".join(map(str, shapes[i])) for i in node.inputs)
    label = node.label(keys)
    name = node.op if label == node.op else f"{node.op} {label}"
    return f"{name}: {given} -> {'x'.join(map(str, node.shape))}"


def _kernels(text: str) -> tuple[str, ...]:
    """The kernels ``text`` calls, with the ones they call, in :data:`KERNELS` order."""
    used = {name for name in KERNELS if f"{name}(" in text}
    while True:
        more = {n for n in KERNELS for u in used if n != u and f"{n}(" in KERNELS[u]} - used
        if not more:
            return tuple(name for name in KERNELS if name in used)
        used |= more


@dataclass(frozen=True)
class _Context:
    packed: PackedFile
    shapes: list[tuple[int, ...]]
    plan: ArenaPlan
    names: dict[str, str]

    def value(self, index: int) -> str:
        return f"a + {self.plan.offsets[index]}"

    def tensor(self, node: GraphNode, at: int) -> str:
        """The C array of the node's ``at``-th tensor, or 0 when it has none there."""
        return (
            self.names[self.packed.streams[node.tensors[at]].key]
            if at < len(node.tensors)
            else "0"
        )

    def weights(self, node: GraphNode) -> str:
        """The call that starts walking the node's weight (a compressed layer or a float array)."""
        stream = self.packed.streams[node.tensors[0]]
        coded = [s.key for s in self.packed.streams if s.encoding != "raw"]
        if stream.key in coded:
            return f"admm_weights(&w, {coded.index(stream.key)}, 0, {stream.numel}u)"
        return f"admm_weights(&w, -1, {self.names[stream.key]}, {stream.numel}u)"


def _planar(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(channels, height, width)`` of a (C, L) or (C, H, W) value; 1-D is height 1."""
    return (shape[0], 1, shape[1]) if len(shape) == 2 else (shape[0], shape[1], shape[2])


def _axes(values: Sequence[int], fill: int) -> tuple[int, int]:
    """Per-axis attributes as (height, width); a 1-D node's height gets ``fill``."""
    return (fill, values[0]) if len(values) == 1 else (values[0], values[1])


def _conv(ctx: _Context, index: int, node: GraphNode) -> tuple[list[str], str]:
    source = ctx.shapes[node.inputs[0]]
    d = len(source) - 1
    weight = ctx.packed.streams[node.tensors[0]].shape
    stride, dilation, before = (node.ints[i * d : (i + 1) * d] for i in range(3))
    fields = [
        *_planar(source), *_planar(node.shape), *_axes(weight[2:], 1), *_axes(stride, 1),
        *_axes(dilation, 1), *_axes(before, 0), node.ints[-1],
    ]  # fmt: skip
    decl = f"static const admm_conv_shape admm_node{index} = {{{', '.join(map(str, fields))}}};"
    code = (
        f"    if ({ctx.weights(node)}\n        || admm_conv(&admm_node{index}, &w, "
        f"{ctx.tensor(node, 1)}, {ctx.value(node.inputs[0])}, {ctx.value(index + 1)}))\n"
        "        return -1;"
    )
    return [decl], code


def _linear(ctx: _Context, index: int, node: GraphNode) -> tuple[list[str], str]:
    n_out, n_in = ctx.packed.streams[node.tensors[0]].shape
    rows = math.prod(ctx.shapes[node.inputs[0]]) // n_in
    code = (
        f"    if ({ctx.weights(node)}\n        || admm_linear({rows}L, {n_in}, {n_out}, &w, "
        f"{ctx.tensor(node, 1)}, {ctx.value(node.inputs[0])}, {ctx.value(index + 1)}))\n"
        "        return -1;"
    )
    return [], code


def _pool(ctx: _Context, index: int, node: GraphNode) -> tuple[list[str], str]:
    source = ctx.shapes[node.inputs[0]]
    d = len(source) - 1
    kernel, stride, padding = (node.ints[i * d : (i + 1) * d] for i in range(3))
    average = node.op == "avg_pool"
    fields = [
        *_planar(source), *_planar(node.shape)[1:], *_axes(kernel, 1), *_axes(stride, 1),
        *_axes(padding, 0), node.ints[-1] if average else 0,
    ]  # fmt: skip
    decl = f"static const admm_pool_shape admm_node{index} = {{{', '.join(map(str, fields))}}};"
    code = (
        f"    admm_pool(&admm_node{index}, {int(average)}, {ctx.value(node.inputs[0])}, "
        f"{ctx.value(index + 1)});"
    )
    return [decl], code


def _global_avg_pool(ctx: _Context, index: int, node: GraphNode) -> tuple[list[str], str]:
    source = ctx.shapes[node.inputs[0]]
    plane = math.prod(source[1:])
    x, y = ctx.value(node.inputs[0]), ctx.value(index + 1)
    return [], f"    admm_global_avg_pool({x}, {y}, {source[0]}, {plane}L);"


def _elementwise(ctx: _Context, index: int, node: GraphNode) -> tuple[list[str], str]:
    x, y = ctx.value(node.inputs[0]), ctx.value(index + 1)
    return [], f"    admm_{node.op}({x}, {y}, {node.numel}L);"


def _reshape(ctx: _Context, index: int, node: GraphNode) -> tuple[list[str], str]:
    return [], "    /* the same buffer */"


def _add(ctx: _Context, index: int, node: GraphNode) -> tuple[list[str], str]:
    a, b = (ctx.value(i) for i in node.inputs)
    return [], f"    admm_add({a}, {b}, {ctx.value(index + 1)}, {node.numel}L);"


def _concat(ctx: _Context, index: int, node: GraphNode) -> tuple[list[str], str]:
    lines, at = [], ctx.plan.offsets[index + 1]
    for value in node.inputs:
        size = math.prod(ctx.shapes[value])
        lines.append(f"    admm_copy({ctx.value(value)}, a + {at}, {size}L);")
        at += size
    return [], "\n".join(lines)


def _batch_norm(ctx: _Context, index: int, node: GraphNode) -> tuple[list[str], str]:
    source = ctx.shapes[node.inputs[0]]
    stats = ", ".join(ctx.tensor(node, at) for at in range(4))
    eps = float(np.float32(node.floats[0])).hex()
    x, y = ctx.value(node.inputs[0]), ctx.value(index + 1)
    plane = math.prod(source[1:])
    return [], f"    admm_batch_norm({x}, {y}, {source[0]}, {plane}L, {stats},\n        {eps}f);"


_EMIT: dict[str, Callable[[_Context, int, GraphNode], tuple[list[str], str]]] = {
    "conv": _conv,
    "linear": _linear,
    "max_pool": _pool,
    "avg_pool": _pool,
    "global_avg_pool": _global_avg_pool,
    "reshape": _reshape,
    "add": _add,
    "concat": _concat,
    "batch_norm": _batch_norm,
    **dict.fromkeys(ELEMENTWISE, _elementwise),
}

_WEIGHTS = r"""
#if ADMM_DECODE_LAYERS
static float admm_w[ADMM_MAX_LAYER_NUMEL];
#endif

/* Start walking a weight: admm_layers[layer], or the float array raw when layer < 0. */
static int admm_weights(admm_walk *w, int layer, const float *raw, uint32_t numel)
{
    if (layer < 0)
        return admm_walk_floats(w, raw, numel);
#if ADMM_DECODE_LAYERS
    if (admm_decode_layer(&admm_layers[layer], admm_w))
        return -1;
    return admm_walk_floats(w, admm_w, numel);
#else
    return admm_walk_layer(w, &admm_layers[layer]);
#endif
}
"""

_INPUT = r"""
/* One raw sample into the arena, normalised as the network was trained. */
static void admm_input(const float *input, float *x)
{
    long i;
    for (i = 0; i < ADMM_INPUT_SIZE; ++i)
#if ADMM_NORMALISE
        x[i] = (input[i] - admm_mean[i / ADMM_PLANE % ADMM_CHANNELS])
               / admm_std[i / ADMM_PLANE % ADMM_CHANNELS];
#else
        x[i] = input[i];
#endif
}

static int admm_output(const float *y, float *logits)
{
    int i, best = 0;
    for (i = 0; i < ADMM_NUM_CLASSES; ++i) {
        logits[i] = y[i];
        if (y[i] > y[best])
            best = i;
    }
    return best;
}
"""


_SHAPES_NOTE = "/* Shapes of the nodes, fields as in admm_conv_shape and admm_pool_shape. */"


def _predict(ctx: _Context, decls: list[str], body: list[str], graph: NetworkGraph) -> str:
    walks = any(node.op in ("conv", "linear") for node in graph.nodes)
    lines = [
        "\n/* ---- the network, from the graph recorded in the file ---- */",
        "static float admm_arena[ADMM_ARENA_FLOATS];",
        *([_SHAPES_NOTE] if decls else []),
        *decls,
        (_WEIGHTS if walks else "") + _INPUT,
        "int admm_predict(const float *input, float *logits)\n{",
        "    float *const a = admm_arena;",
        *(["    admm_walk w;"] if walks else []),
        f"    admm_input(input, {ctx.value(0)});",
        *body,
        f"    return admm_output({ctx.value(graph.output)}, logits);\n}}\n",
    ]
    return "\n".join(lines)
