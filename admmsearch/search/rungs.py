"""Pareto-aware asynchronous successive halving: short trials first, the best continued longer.

A study with rungs runs each new setting at rung 0, a short version of its pipeline; the rungs
above are each ``eta`` times longer, the top rung being the study's pipeline as written. A
trial finished at rung ``r`` is *promoted* (continued at rung ``r + 1``) when it is among the
best ``1/eta`` of the trials finished at that rung, ranked by non-dominated sorting on the
study's objectives (Deb et al. 2002, NSGA-II), ties broken by each point's hypervolume
contribution (two objectives; storage on a log scale, as fronts are read) and then by crowding
distance: a small model that is less accurate survives when nothing smaller beats it. This is
the promotion rule of MOASHA (Schmucker et al. 2021, Syne Tune) on top of ASHA's asynchronous
schedule (Li et al. 2020): whenever a worker is free it takes the best promotable trial of the
highest rung, else starts a new setting, so no worker waits for a rung to fill. A study that
plans its number of screens and has no deadline screens them all first (``Limits.screens_first``),
so that its promotions choose among every screened setting.

Everything lives in the Optuna storage, so workers on PostgreSQL share it and a resumed study
continues it: each rung of a setting is an Optuna trial of its own, with user attributes
``rung``, ``continues`` (the lower-rung trial it continues) and ``epochs`` (the training epochs
it adds). A promoted trial continues from its lower rung's pruned model (the same masks, more
masked retraining) rather than starting again, and runs the quantization stages at its own
length; only the epochs it adds count against the budget (:mod:`admmsearch.fidelity`: how long
each rung trains). Which trials a study can still start is decided under the storage lock
(:func:`next_job`, called by :mod:`.schedule`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..fidelity import RungSchedule

__all__ = [
    "Job",
    "Limits",
    "RungTrial",
    "crowding_distances",
    "hypervolume_contributions",
    "next_job",
    "nondominated_ranks",
    "promotable",
    "promotion_order",
    "screening_quota",
]


# -- ranking ------------------------------------------------------------------------------


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def nondominated_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """The non-domination rank of each point (0: on the first front), all objectives
    minimised (Deb et al. 2002, fast non-dominated sorting).

    >>> nondominated_ranks([(1, 5), (2, 2), (5, 1), (3, 3), (6, 6)])
    [0, 0, 0, 1, 2]
    """
    ranks = [-1] * len(points)
    rank, left = 0, set(range(len(points)))
    while left:
        front = {i for i in left if not any(_dominates(points[j], points[i]) for j in left)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def crowding_distances(points: Sequence[Sequence[float]], ranks: Sequence[int]) -> list[float]:
    """Each point's crowding distance within its front: the sum over objectives of the gap
    between its neighbours, each objective scaled to its range on the front; a front's
    extreme points get infinity (Deb et al. 2002, section III-B).

    >>> crowding_distances([(1, 5), (2, 2), (5, 1)], [0, 0, 0])
    [inf, 2.0, inf]
    """
    out = [0.0] * len(points)
    for rank in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == rank]
        for k in range(len(points[members[0]]) if members else 0):
            order = sorted(members, key=lambda i: points[i][k])
            span = points[order[-1]][k] - points[order[0]][k]
            out[order[0]] = out[order[-1]] = math.inf
            for left, mid, right in zip(order, order[1:], order[2:], strict=False):
                gap = points[right][k] - points[left][k]
                out[mid] += gap / span if span > 0 else 0.0
    return out


def hypervolume_contributions(
    points: Sequence[Sequence[float]], ranks: Sequence[int], reference: Sequence[float]
) -> list[float]:
    """Each point's exclusive hypervolume contribution within its front, two objectives
    minimised: the area that it alone dominates inside the box below ``reference`` (the
    measure of SMS-EMOA, Beume et al. 2007). A point that is not better than the reference in
    both objectives contributes 0.

    >>> hypervolume_contributions([(1, 5), (2, 2), (5, 1)], [0, 0, 0], (6, 6))
    [1.0, 9.0, 1.0]
    """
    out = [0.0] * len(points)
    for rank in set(ranks):
        members = sorted(
            (i for i, r in enumerate(ranks) if r == rank), key=lambda i: tuple(points[i])
        )
        for k, i in enumerate(members):
            right = points[members[k + 1]][0] if k + 1 < len(members) else reference[0]
            up = points[members[k - 1]][1] if k > 0 else reference[1]
            width = float(min(right, reference[0]) - points[i][0])
            height = float(min(up, reference[1]) - points[i][1])
            out[i] = max(0.0, width) * max(0.0, height)
    return out


@dataclass(frozen=True)
class RungTrial:
    """A trial as the schedule sees it.

    Attributes:
        number: the Optuna trial number.
        rung: its rung.
        continues: the lower-rung trial it continues (None at rung 0).
        state: ``"running"``, ``"complete"`` or ``"other"`` (failed, pruned, waiting).
        values: its objectives, minimised (None until complete).
        violation: how far it breaks the study's constraints (0: feasible).
        hopeless: it breaks a constraint by so far that a longer run cannot mend it.
        epochs: the training epochs it adds.
    """

    number: int
    rung: int
    continues: int | None
    state: str
    values: tuple[float, ...] | None = None
    violation: float = 0.0
    hopeless: bool = False
    epochs: int = 0


def promotion_order(
    trials: Sequence[RungTrial], reference: Sequence[float] | None = None
) -> list[RungTrial]:
    """Complete trials best first: the feasible trials of the first front, by (two
    objectives and a ``reference`` point) hypervolume contribution, then crowding distance
    (larger first); then the infeasible trials that are not hopeless, by their violation
    (smaller first); then the dominated feasible trials, by rank and the same tie-breaks;
    then the hopeless ones.

    Crowding distance gives both ends of a front infinity, so it always continues the least
    compressed setting; the hypervolume contribution measures what a point adds to the front
    the study is judged by, so a nearly dense setting that is barely more accurate adds little.
    A dominated trial reaches the top rung's front only by overtaking the trial that dominates
    it, which goes up first; a trial that breaks the accuracy constraint by less than the
    hopeless margin may meet it after the longer training (a short rung's accuracy is lower),
    and then extends the front. So the near misses go up before the dominated.

    >>> near_miss = RungTrial(2, 0, None, "complete", (-0.84, 5.2), violation=0.002)
    >>> trials = [RungTrial(0, 0, None, "complete", (-0.85, 6.0)),
    ...           RungTrial(1, 0, None, "complete", (-0.84, 6.1)), near_miss]
    >>> [t.number for t in promotion_order(trials)]
    [0, 2, 1]
    """
    done = [t for t in trials if t.state == "complete" and t.values is not None]
    feasible = [t for t in done if t.violation <= 0]
    points = [t.values for t in feasible]
    ranks = nondominated_ranks(points)
    crowding = crowding_distances(points, ranks)
    two = reference is not None and len(reference) == 2
    gains = hypervolume_contributions(points, ranks, reference) if two else [0.0] * len(points)
    order = sorted(
        range(len(feasible)),
        key=lambda i: (ranks[i], -gains[i], -crowding[i], feasible[i].number),
    )
    infeasible = sorted(
        (t for t in done if t.violation > 0), key=lambda t: (t.violation, t.number)
    )
    first = [feasible[i] for i in order if ranks[i] == 0]
    dominated = [feasible[i] for i in order if ranks[i] > 0]
    near = [t for t in infeasible if not t.hopeless]
    return first + near + dominated + [t for t in infeasible if t.hopeless]


def promotable(
    trials: Sequence[RungTrial], rung: int, eta: int, reference: Sequence[float] | None = None
) -> list[RungTrial]:
    """The trials of ``rung`` that may go up now, best first: among the best
    ``floor(finished / eta)`` of the rung (:func:`promotion_order`), not promoted yet and not
    hopeless."""
    at_rung = [t for t in trials if t.rung == rung]
    promoted = {t.continues for t in trials if t.continues is not None}
    finished = len([t for t in at_rung if t.state == "complete"])
    best = promotion_order(at_rung, reference)[: finished // eta]
    return [t for t in best if t.number not in promoted and not t.hopeless]


# -- the schedule -------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What a free worker runs next: a new setting at rung 0 (``continues`` None), or the
    promotion of trial ``continues`` to ``rung``."""

    rung: int
    continues: RungTrial | None = None


@dataclass(frozen=True)
class Limits:
    """What the study may still spend: trials and epochs left (None: no limit), new
    settings left to screen at rung 0 (None: no limit), and what a new setting costs.
    ``screens_first``: with a number of screens left, screen them all before promoting
    anything (see :func:`next_job`)."""

    trials: int | None = None
    epochs: int | None = None
    screens: int | None = None
    new_epochs: int = 0
    screens_first: bool = False


def next_job(
    trials: Sequence[RungTrial],
    rungs: RungSchedule,
    limits: Limits,
    promotion_epochs: Mapping[int, int],
    reference: Sequence[float] | None = None,
) -> Job | None:
    """ASHA's choice, highest rung first: promote the best promotable trial whose promotion
    fits what is left; else screen a new setting while the quota of screens lasts; else
    (the quota spent) promote the best remaining trial of the highest rung that fits, so the
    budget's last epochs go to the settings most worth training. None: nothing fits.

    With ``limits.screens_first`` and a quota (a number of screens left), the quota's
    settings are screened before any promotion: the number of settings the budget pays for is
    then known in advance, so promoting early gains nothing in time (no worker waits either
    way) and would choose among the first few screens only. The promotions then choose among
    every screened setting, as synchronous successive halving does (Jamieson and Talwalkar
    2016).

    Args:
        trials: every trial of the study, as the schedule sees it.
        rungs: the rungs.
        limits: what is left to spend.
        promotion_epochs: the epochs each trial's promotion would add, by trial number.
        reference: the hypervolume reference point of the trials' values
            (:func:`promotion_order`; None: crowding distance alone breaks ties).
    """
    if limits.trials is not None and limits.trials <= 0:
        return None

    def fits(epochs: int) -> bool:
        return limits.epochs is None or epochs <= limits.epochs

    screening = (limits.screens is None or limits.screens > 0) and fits(limits.new_epochs)
    if screening and limits.screens_first and limits.screens is not None:
        return Job(0)
    for rung in range(rungs.top - 1, -1, -1):
        for trial in promotable(trials, rung, rungs.eta, reference):
            if fits(promotion_epochs.get(trial.number, 0)):
                return Job(rung + 1, trial)
    if screening:
        return Job(0)
    return _last_promotion(trials, rungs, fits, promotion_epochs, reference)


def _last_promotion(trials, rungs, fits, promotion_epochs, reference) -> Job | None:
    """Once no new setting may start: the best not yet promoted trial of the highest rung
    below the top whose promotion fits (hopeless ones never)."""
    if any(t.state == "running" for t in trials):
        return None  # wait: a running trial may become the better candidate
    promoted = {t.continues for t in trials if t.continues is not None}
    for rung in range(rungs.top - 1, -1, -1):
        order = promotion_order([t for t in trials if t.rung == rung], reference)
        for trial in order:
            if trial.number not in promoted and not trial.hopeless:
                if fits(promotion_epochs.get(trial.number, 0)):
                    return Job(rung + 1, trial)
    return None


def screening_quota(rungs: RungSchedule, budget: float, per_setting: Sequence[float]) -> int:
    """How many settings to screen at rung 0 so that, with the best ``1/eta`` of each rung
    continued, the whole schedule costs about ``budget`` (trials or epochs).

    Args:
        per_setting: what one setting costs at each rung: ``[rung 0, added at rung 1, ...]``.

    >>> screening_quota(RungSchedule(eta=3, count=2), 74, [2, 16])
    10
    """
    cost = sum(c / rungs.eta**r for r, c in enumerate(per_setting))
    return max(1, math.floor(budget / cost)) if cost > 0 else 1
