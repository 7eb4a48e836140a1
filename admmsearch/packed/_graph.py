"""The network's graph as a packed file records it: operations, their inputs and attributes.

A packed file (format 3) says not only which tensors a network has but what it computes with
them, so that a runtime with no Python (the C export, :mod:`admmsearch.c_network`) can run it.
The graph is traced by ``torch.fx`` (:mod:`admmsearch.tracing`) after BatchNorm folding and
normalised to a short list of operations, :data:`OPS`. Values are numbered: value 0 is the
network's input, value ``i + 1`` the output of node ``i``; a node reads earlier values only, so
the node order is an execution order. Shapes are one sample's (no batch axis), channels first.

Attributes per operation (``d`` is the number of spatial axes, 1 or 2; tensors are indices of
the file's tensor entries):

============== ============================ =================================================
op             tensors                      ints (floats)
============== ============================ =================================================
conv           weight[, bias]               stride×d, dilation×d, pad before×d, pad after×d,
                                            groups
linear         weight[, bias]               (applies to the last axis)
relu, relu6,   -                            -
sigmoid, tanh,
hardswish
max_pool       -                            kernel×d, stride×d, padding×d
avg_pool       -                            kernel×d, stride×d, padding×d, count_include_pad
global_avg_pool -                           - (the mean over every axis after the first)
reshape        -                            - (the data unchanged, the shape is the node's)
add            -                            - (two inputs of one shape)
concat         -                            - (along the first axis, the channels)
batch_norm     mean, var[, weight, bias]    (eps): ``(x - mean) / sqrt(var + eps) * w + b``
unsupported    -                            - ; its name says what and where it is
============== ============================ =================================================

``docs/FORMAT.md`` ("Graph") gives the bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._binio import ByteReader, ByteWriter, Malformed

__all__ = ["ELEMENTWISE", "OPS", "GraphNode", "NetworkGraph"]

OPS = (
    "unsupported",
    "conv",
    "linear",
    "relu",
    "relu6",
    "sigmoid",
    "tanh",
    "hardswish",
    "max_pool",
    "avg_pool",
    "global_avg_pool",
    "reshape",
    "add",
    "concat",
    "batch_norm",
)
#: One input, one output of its shape, computed entry by entry.
ELEMENTWISE = ("relu", "relu6", "sigmoid", "tanh", "hardswish")
_MANY = range(1, 1 << 16)  # "one or more" in the arity table
# op -> the allowed counts of (inputs, tensors, ints, floats)
_ARITY: dict[str, tuple[range | tuple[int, ...], ...]] = {
    "conv": ((1,), (1, 2), (5, 9), (0,)),
    "linear": ((1,), (1, 2), (0,), (0,)),
    "max_pool": ((1,), (0,), (3, 6), (0,)),
    "avg_pool": ((1,), (0,), (4, 7), (0,)),
    "global_avg_pool": ((1,), (0,), (0,), (0,)),
    "reshape": ((1,), (0,), (0,), (0,)),
    "add": ((2,), (0,), (0,), (0,)),
    "concat": (_MANY, (0,), (0,), (0,)),
    "batch_norm": ((1,), (2, 4), (0,), (1,)),
    **{op: ((1,), (0,), (0,), (0,)) for op in ELEMENTWISE},
}


@dataclass(frozen=True)
class GraphNode:
    """One operation: what it is, the values it reads, its output's shape and attributes."""

    op: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    tensors: tuple[int, ...] = ()
    ints: tuple[int, ...] = ()
    floats: tuple[float, ...] = ()
    name: str = ""  # unsupported only: what it is and its module path

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def label(self, keys: Sequence[str]) -> str:
        """What to call the node: its module path (its first tensor's key without the last
        part), its description when unsupported, else its operation."""
        if self.op == "unsupported":
            return self.name
        if self.tensors:
            return keys[self.tensors[0]].rpartition(".")[0] or self.op
        return self.op

    def write(self, out: ByteWriter) -> None:
        """Append the node's bytes (docs/FORMAT.md, "Graph")."""
        out.varint(OPS.index(self.op))
        for values in (self.inputs, self.shape, self.tensors, self.ints):
            out.varint(len(values))
            for value in values:
                out.varint(value)
        out.varint(len(self.floats))
        out.floats(self.floats)
        if self.op == "unsupported":
            out.text(self.name)

    @classmethod
    def read(cls, src: ByteReader, what: str) -> GraphNode:
        """Parse one node; raises Malformed naming ``what`` and the field."""
        code = src.varint(f"{what}'s operation")
        if code >= len(OPS):
            raise Malformed(f"{what} has unknown operation code {code}")
        fields = [
            tuple(src.varint(f"{what}'s {part}") for _ in range(src.varint(f"{what}'s {part}")))
            for part in ("inputs", "shape", "tensors", "ints")
        ]
        floats = src.floats(src.varint(f"{what}'s float count"), f"{what}'s floats")
        name = src.text(f"{what}'s name") if code == 0 else ""
        return cls(OPS[code], *fields, floats=tuple(floats), name=name)

    def check(self, value: int, tensor_count: int) -> None:
        """Raise ValueError when the node reads a later value, an absent tensor, or has the
        wrong number of inputs or attributes for its operation; ``value`` is its own number."""
        if any(i >= value for i in self.inputs):
            raise ValueError(f"reads value {max(self.inputs)}, not computed before it")
        if any(t >= tensor_count for t in self.tensors):
            raise ValueError(f"names tensor {max(self.tensors)} of {tensor_count}")
        if self.op == "unsupported":
            return
        counts = (len(self.inputs), len(self.tensors), len(self.ints), len(self.floats))
        for part, count, allowed in zip(
            ("inputs", "tensors", "ints", "floats"), counts, _ARITY[self.op], strict=True
        ):
            if count not in allowed:
                raise ValueError(f"{self.op} with {count} {part}")


@dataclass(frozen=True)
class NetworkGraph:
    """The recorded graph, or why none is recorded (``missing``).

    Attributes:
        nodes: the operations in execution order.
        output: the value the network returns (its logits).
        recorded: False when the file holds no graph; ``missing`` then says why (the file
            predates format 3, ``torch.fx`` could not trace the network; "" when the packer
            was given no input shape).
    """

    nodes: tuple[GraphNode, ...] = ()
    output: int = 0
    recorded: bool = True
    missing: str = ""

    @classmethod
    def absent(cls, why: str) -> NetworkGraph:
        return cls((), 0, False, why)

    @property
    def unsupported(self) -> tuple[str, ...]:
        """What each operation outside :data:`OPS` is, with its module path."""
        return tuple(node.name for node in self.nodes if node.op == "unsupported")

    def shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Every value's shape: the input's, then each node's output."""
        return [tuple(input_shape), *(node.shape for node in self.nodes)]

    def consumers(self) -> list[list[int]]:
        """For each value, the nodes that read it (a node reading it twice counts once)."""
        readers: list[list[int]] = [[] for _ in range(len(self.nodes) + 1)]
        for index, node in enumerate(self.nodes):
            for value in dict.fromkeys(node.inputs):
                readers[value].append(index)
        return readers

    def write(self, out: ByteWriter) -> None:
        """Append the graph section (docs/FORMAT.md, "Graph")."""
        out.put("B", int(self.recorded))
        if not self.recorded:
            out.text(self.missing)
            return
        out.varint(len(self.nodes))
        for node in self.nodes:
            node.write(out)
        out.varint(self.output)

    @classmethod
    def read(cls, src: ByteReader, tensor_count: int) -> NetworkGraph:
        """Parse and check the graph section; raises Malformed naming the node and field."""
        kind = int(src.one("B", "the graph kind"))
        if kind == 0:
            return cls.absent(src.text("why no graph is recorded"))
        if kind != 1:
            raise Malformed(f"unknown graph kind {kind}")
        count = src.varint("the node count")
        nodes = tuple(GraphNode.read(src, f"graph node {i}") for i in range(count))
        output = src.varint("the graph's output")
        for index, node in enumerate(nodes):
            try:
                node.check(index + 1, tensor_count)
            except ValueError as exc:
                raise Malformed(f"graph node {index} ({node.op}) {exc}") from None
        if output > len(nodes):
            raise Malformed(f"the graph's output is value {output} of {len(nodes) + 1}")
        return cls(nodes, output)
