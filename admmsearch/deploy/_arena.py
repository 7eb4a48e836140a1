"""Static memory plan for a graph's activations: one arena, buffers reused once dead.

Every value of a graph (:mod:`admmsearch.graph`) needs a buffer from the step that computes it
to the last step that reads it. :func:`plan_arena` gives each value an offset in one arena of
floats so that buffers alive at the same step never overlap: a reshape shares its input's
buffer, an operation computed entry by entry (activations, batch_norm, add) writes over an input
that no later step reads, and the rest get buffers placed greedily, largest first, at the lowest
offset free during their lifetime (the usual first-fit heuristic of static planners such as
TFLite Micro's greedy planner). :attr:`ArenaPlan.peak`, the most floats alive at one step, is a
lower bound of any plan; for a chain of layers it is the largest pair of consecutive buffers.

Example: a chain input (64) -> conv (1024) -> relu -> pool (256) -> linear (10):

    >>> plan = plan_arena([64, 1024, 1024, 256, 10],
    ...                   [Step((0,), "new"), Step((1,), "inplace"), Step((2,), "new"),
    ...                    Step((3,), "new")], output=4)
    >>> plan.floats, plan.peak, plan.offsets[1] == plan.offsets[2]
    (1280, 1280, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ArenaPlan", "Step", "plan_arena"]


@dataclass(frozen=True)
class Step:
    """One node as the planner sees it: the values it reads and how its output is stored.

    ``kind`` is ``"new"`` (a buffer of its own, never one of its inputs'), ``"inplace"`` (may
    take over an input's buffer when nothing reads that input later; same size) or
    ``"alias"`` (is its first input's buffer: a reshape).
    """

    inputs: tuple[int, ...]
    kind: str = "new"


@dataclass(frozen=True)
class ArenaPlan:
    """Offsets (floats) per value, the arena's size, and the most floats alive at one step."""

    offsets: tuple[int, ...]
    floats: int
    peak: int


def plan_arena(sizes: Sequence[int], steps: Sequence[Step], output: int) -> ArenaPlan:
    """Plan one arena for values ``0 .. len(steps)`` (value 0 the input, ``i + 1`` step ``i``'s).

    Args:
        sizes: floats per value.
        steps: one per node, in execution order.
        output: the value that must survive the last step.

    Raises:
        ValueError: a step reads a value not computed before it.
    """
    last = _last_reads(steps, output)
    owner = _storages(sizes, steps, last)
    groups: dict[int, list[int]] = {}
    for value, storage in enumerate(owner):
        groups.setdefault(storage, []).append(value)
    spans = {s: (min(vs), max(last[v] for v in vs)) for s, vs in groups.items()}
    offsets = _place({s: sizes[s] for s in groups}, spans)
    peak = max(
        sum(sizes[s] for s, (begin, end) in spans.items() if begin <= t <= end)
        for t in range(len(steps) + 1)
    )
    return ArenaPlan(
        tuple(offsets[owner[v]] for v in range(len(sizes))),
        max((offsets[s] + sizes[s] for s in groups), default=0),
        peak,
    )


def _last_reads(steps: Sequence[Step], output: int) -> list[int]:
    """The last step (its value's number) reading each value; aliases extend their source's."""
    last = list(range(len(steps) + 1))
    last[output] = len(steps) + 1
    for index, step in enumerate(steps):
        if any(v > index for v in step.inputs):
            raise ValueError(f"step {index} reads a value not computed before it")
        for value in step.inputs:
            last[value] = max(last[value], index + 1)
    for index in reversed(range(len(steps))):
        if steps[index].kind == "alias":
            source = steps[index].inputs[0]
            last[source] = max(last[source], last[index + 1])
    return last


def _storages(sizes: Sequence[int], steps: Sequence[Step], last: list[int]) -> list[int]:
    """Which buffer each value lives in, named by the first value that lived there."""
    owner = [0]
    for index, step in enumerate(steps):
        value = chosen = index + 1
        if step.kind == "alias":
            chosen = owner[step.inputs[0]]
        elif step.kind == "inplace":
            for source in step.inputs:
                members = [v for v in range(value) if owner[v] == owner[source]]
                if sizes[source] == sizes[value] and max(last[v] for v in members) <= value:
                    chosen = owner[source]
                    break
        owner.append(chosen)
    return owner


def _place(sizes: dict[int, int], spans: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Greedy first fit, largest buffer first: the lowest offset free during its lifetime."""
    offsets: dict[int, int] = {}
    for storage in sorted(sizes, key=lambda s: (-sizes[s], spans[s])):
        begin, end = spans[storage]
        busy = sorted(
            (offsets[o], offsets[o] + sizes[o])
            for o in offsets
            if spans[o][0] <= end and begin <= spans[o][1]
        )
        at = 0
        for low, high in busy:
            if at + sizes[storage] <= low:
                break
            at = max(at, high)
        offsets[storage] = at
    return offsets
