"""Where the next prior trial goes: a search for the knee of the front over the storage grid.

A front's hypervolume (storage against accuracy) is made at its compressed end: a point that
keeps the accuracy at 30x dominates the area of every point that keeps it at 8x. Priors placed
evenly over the whole storage range (``search.priors.placement: grid``) spend most trials on
settings that compress little, or so much that no retraining mends them. With ``placement:
knee`` each prior trial is placed when a worker is about to start a new setting, from the
outcomes of the priors before it, on the same log-spaced grid of ``search.priors.targets``
storage targets (index 0 the smallest storage):

1. The first goes to the middle of the grid.
2. While the knee is not bracketed, bisect: the most compressed target that met the study's
   constraints (*feasible*) and the least compressed one below it that did not bound an
   interval, and the next target is the middle of the untried targets inside it. A running
   prior counts as feasible (so a second worker looks further down rather than waiting).
3. Once no untried target lies inside, the knee is found: the remaining priors go first to
   the targets above the knee (less compressed) that no prior has tried, nearest first, each
   with a family that met the constraints at the knee; then they try the other families at
   the knee, then at the infeasible target just below it (a family that keeps its accuracy
   there extends the front), then at the targets above the knee, nearest first.

Step 3 fills the targets above the knee before more families try the knee itself because of
where a front's hypervolume is made: a point's share of it is its compression times the
accuracy it keeps above the reference, so a point a little less compressed than the knee that
loses almost nothing adds more area than a second point at the knee, where the short rung-0
result sits near the constraint. Measured with ``benchmarks/bench_front.py`` (README, "Front
quality": the fourth prior moved from another family at the knee to the target above it).

Which family probes a target: in a study, the one whose prior there keeps the most
validation accuracy when the dense model is pruned to it with no training
(:mod:`.oneshot`; the ``rank`` argument), so that a family weak at that storage does not make
the target look past the knee. On LeNet-5 / Fashion-MNIST the families taking turns had sent
ERK to probe 38x on every seed, and the study's front stopped at 24x (README, "Front
quality"). Without a ranking the families take turns (round-robin over
``search.priors.families``). A target is feasible when any family met the constraints there,
infeasible when every family tried there failed to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Placed", "next_placement"]

#: A prior trial's outcome as the knee search reads it.
OUTCOMES = ("feasible", "infeasible", "pending", "failed")


@dataclass(frozen=True)
class Placed:
    """A prior trial already placed: its family, its index on the target grid and its outcome
    (one of :data:`OUTCOMES`; ``failed``: it errored, so it says nothing of the target)."""

    family: str
    target: int
    outcome: str


def next_placement(
    placed: Sequence[Placed],
    families: Sequence[str],
    grid: int,
    rank: Callable[[int], Sequence[str]] | None = None,
) -> tuple[str, int] | None:
    """The ``(family, target index)`` of the next prior (see the module's text); None when
    every family has tried every target of a grid of ``grid`` targets. ``rank(target)``, where
    given, orders the families at a target best first (above the knee, the family that met
    the constraints at the knee still goes first); without it they take turns.

    >>> next_placement([], ["global", "lamp"], 8)
    ('global', 3)
    >>> next_placement([Placed("global", 3, "feasible")], ["global", "lamp"], 8)
    ('lamp', 1)
    >>> next_placement([Placed("global", 3, "infeasible")], ["global", "lamp"], 8)
    ('lamp', 5)
    >>> knee = [Placed("global", 3, "feasible"), Placed("lamp", 1, "infeasible"),
    ...         Placed("lamp", 2, "infeasible")]
    >>> next_placement(knee, ["global", "lamp"], 8)  # the knee is 3: above it, with global
    ('global', 4)
    >>> next_placement(knee, ["global", "lamp"], 4)  # nothing above it: lamp at the knee
    ('lamp', 3)
    >>> lamp_first = lambda target: ["lamp", "global"]
    >>> next_placement([], ["global", "lamp"], 8, lamp_first)
    ('lamp', 3)
    >>> next_placement([Placed("lamp", 3, "feasible")], ["global", "lamp"], 8, lamp_first)
    ('lamp', 1)
    """
    tried = {(p.family, p.target) for p in placed}
    if grid < 1 or not families or len(tried) >= grid * len(families):
        return None
    turn = _rotation(families, len(placed))

    def order(target: int) -> Sequence[str]:
        return turn if rank is None else rank(target)

    feasible = {p.target for p in placed if p.outcome in ("feasible", "pending")}
    infeasible = {p.target for p in placed if p.outcome == "infeasible"} - feasible
    if not feasible and not infeasible:
        return _first_family(order((grid - 1) // 2), (grid - 1) // 2, tried)
    knee = min(feasible) if feasible else grid
    below = max((t for t in infeasible if t < knee), default=-1)
    inside = [t for t in range(below + 1, knee) if not any(p.target == t for p in placed)]
    if inside:
        middle = inside[(len(inside) - 1) // 2]
        return _first_family(order(middle), middle, tried)
    above = [t for t in range(knee + 1, grid) if not any(p.target == t for p in placed)]
    if above:  # none when no target is feasible yet (knee == grid)
        winner = next(
            p.family for p in placed if p.target == knee and p.outcome in ("feasible", "pending")
        )
        return _first_family([winner, *order(above[0])], above[0], tried)
    after = [knee, below, *range(knee + 1, grid)] if knee < grid else [below]
    after += [t for t in range(grid) if t not in after]  # then anything left, any family
    for target in after:
        if 0 <= target < grid and (pick := _first_family(order(target), target, tried)):
            return pick
    return None


def _rotation(families: Sequence[str], turn: int) -> list[str]:
    """The families in round-robin order starting with the one whose turn it is."""
    start = turn % len(families)
    return [*families[start:], *families[:start]]


def _first_family(
    order: Sequence[str], target: int, tried: set[tuple[str, int]]
) -> tuple[str, int] | None:
    family = next((f for f in order if (f, target) not in tried), None)
    return None if family is None else (family, target)
