"""The activation arena: buffers alive at the same step never overlap, in-place and reshaped
values share their input's buffer only when nothing reads it later, chains need their largest
pair of buffers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from admmsearch.deploy._arena import ArenaPlan, Step, plan_arena


def test_a_chain_needs_its_largest_pair() -> None:
    sizes = [64, 1024, 1024, 2048, 512, 512, 64, 10]
    steps = [
        Step((0,)), Step((1,), "inplace"), Step((2,)), Step((3,)), Step((4,), "alias"),
        Step((5,)), Step((6,)),
    ]  # fmt: skip
    plan = plan_arena(sizes, steps, output=7)
    assert plan.floats == plan.peak == 1024 + 2048
    assert plan.offsets[1] == plan.offsets[2] and plan.offsets[4] == plan.offsets[5]


def test_a_residual_keeps_its_shortcut_alive() -> None:
    # x -> conv a -> relu -> conv b; add(b, x) -> relu: x lives until the add
    sizes = [100, 100, 100, 100, 100, 100]
    steps = [Step((0,)), Step((1,), "inplace"), Step((2,)), Step((3, 0), "inplace"),
             Step((4,), "inplace")]  # fmt: skip
    plan = plan_arena(sizes, steps, output=5)
    assert plan.floats == plan.peak == 300
    assert plan.offsets[0] not in (plan.offsets[1], plan.offsets[3])
    assert (
        plan.offsets[4] in (plan.offsets[3], plan.offsets[0])
        and plan.offsets[5] == plan.offsets[4]
    )


def test_in_place_is_refused_when_the_input_is_read_later() -> None:
    sizes = [10, 10, 10]
    plan = plan_arena(sizes, [Step((0,), "inplace"), Step((0, 1))], output=2)
    assert plan.offsets[1] != plan.offsets[0]


@st.composite
def graphs(draw) -> tuple[list[int], list[Step], int]:
    count = draw(st.integers(1, 12))
    sizes = [draw(st.integers(1, 50))]
    steps = []
    for index in range(count):
        kind = draw(st.sampled_from(["new", "inplace", "alias"]))
        reads = draw(st.lists(st.integers(0, index), min_size=1, max_size=3))
        steps.append(Step(tuple(reads), kind))
        sizes.append(sizes[reads[0]] if kind != "new" else draw(st.integers(1, 50)))
    return sizes, steps, count


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_no_two_live_buffers_overlap(graph) -> None:
    sizes, steps, output = graph
    plan = plan_arena(sizes, steps, output)
    _check(plan, sizes, steps, output)


def _check(plan: ArenaPlan, sizes: list[int], steps: list[Step], output: int) -> None:
    """Each value's data must be intact from the step that computes it to the last that reads
    it (through its reshapes): no later value written over it meanwhile."""
    root = list(range(len(sizes)))
    for index, step in enumerate(steps):
        if step.kind == "alias":
            root[index + 1] = root[step.inputs[0]]
    last = list(range(len(sizes)))
    last[root[output]] = len(steps) + 1
    for index, step in enumerate(steps):
        for value in step.inputs:
            last[root[value]] = max(last[root[value]], index + 1)
    assert plan.floats >= plan.peak
    for value in range(len(sizes)):
        assert plan.offsets[value] + sizes[value] <= plan.floats
        if root[value] != value:
            assert plan.offsets[value] == plan.offsets[root[value]]
            continue
        for later in range(value + 1, len(sizes)):
            in_place = later == last[value] and steps[later - 1].kind == "inplace"
            if root[later] != later or later > last[value] or in_place:
                continue  # written after the value's last read, or by that reader in place
            low, high = plan.offsets[later], plan.offsets[later] + sizes[later]
            assert high <= plan.offsets[value] or low >= plan.offsets[value] + sizes[value]
