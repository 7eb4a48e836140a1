"""How long a trial trains at each rung of successive halving, and the epochs it adds.

A study with ``search.rungs`` runs each setting short first (rung 0) and continues the best at
longer rungs, each ``eta`` times longer than the one below, up to the top rung: the study's
pipeline as written. :func:`rung_pipeline` scales every training stage to a rung;
:func:`trial_epochs` says what a trial at a rung adds; :func:`rung_chain` is the pipeline and
the retraining steps that take a setting from rung 0 to a rung, as its trials ran it. Plain
functions of the settings (no torch): the study's schedule, the trial and ``compress`` of an
exported rung trial use them alike.

Example: three rungs with ``eta = 3`` run a pipeline of 3 ADMM + 9 retraining epochs as 1 + 1
(rung 0), then continued to 3 retraining epochs (rung 1), then to 9 (rung 2)::

    >>> rungs = RungSchedule(eta=3, count=3)
    >>> [rungs.fraction(r) for r in range(3)]
    [0.1111111111111111, 0.3333333333333333, 1.0]
    >>> [scaled_epochs(9, rungs.fraction(r)) for r in range(3)]
    [1, 3, 9]
"""

from __future__ import annotations

from dataclasses import dataclass

from .settings import PipelineSettings, TrainSettings

__all__ = [
    "RungSchedule",
    "added_retraining",
    "idle_rung",
    "rung_chain",
    "rung_pipeline",
    "scaled_epochs",
    "trial_epochs",
]


@dataclass(frozen=True)
class RungSchedule:
    """``count`` rungs, each ``eta`` times longer than the one below; the top rung
    (``count - 1``) is the study's pipeline as written."""

    eta: int = 3
    count: int = 3

    @property
    def top(self) -> int:
        return self.count - 1

    def fraction(self, rung: int) -> float:
        """The share of the top rung's epochs a stage gets at ``rung``: eta ** (rung - top)."""
        return float(self.eta ** (rung - self.top))


def scaled_epochs(epochs: int, fraction: float) -> int:
    """A stage's epochs at a rung: ``round(epochs * fraction)``, at least 1 for a stage that
    trains at all (a stage of 0 epochs stays 0)."""
    return 0 if epochs == 0 else max(1, round(epochs * fraction))


def _scaled(s: TrainSettings, fraction: float) -> TrainSettings:
    return s.replace(epochs=scaled_epochs(s.epochs, fraction))


def rung_pipeline(p: PipelineSettings, fraction: float) -> PipelineSettings:
    """``p`` with every training stage's epochs scaled to ``fraction`` of their length (see
    :func:`scaled_epochs`); everything else (rho schedules, learning rates) as written."""
    stages: dict[str, object] = {}
    if p.admm_prune is not None:
        stages["admm_prune"] = p.admm_prune.replace(train=_scaled(p.admm_prune.train, fraction))
    if p.retrain is not None:
        stages["retrain"] = _scaled(p.retrain, fraction)
    if p.admm_quantize is not None:
        train = _scaled(p.admm_quantize.train, fraction)
        stages["admm_quantize"] = p.admm_quantize.replace(train=train)
    if p.quant_retrain is not None:
        stages["quant_retrain"] = p.quant_retrain.replace(
            train=_scaled(p.quant_retrain.train, fraction)
        )
    return p.replace(**stages)


def _retrain_epochs(p: PipelineSettings) -> int:
    return 0 if p.retrain is None else p.retrain.epochs


def trial_epochs(p: PipelineSettings, continues: PipelineSettings | None = None) -> int:
    """Training epochs a trial runs with pipeline ``p`` (the dense model, trained once per
    study, not counted): the prune phase's stages once per progressive step, the quantized
    retraining once per share; a trial that ``continues`` a lower rung's pipeline adds only
    its retraining beyond that rung's (once, after the last progressive step), and its
    quantization stages.

    >>> p = PipelineSettings.model_validate(
    ...     {"admm_prune": {"train": {"epochs": 3}}, "retrain": {"epochs": 9},
    ...      "admm_quantize": None, "quant_retrain": None}
    ... )
    >>> trial_epochs(p), trial_epochs(p, rung_pipeline(p, 1 / 3))
    (12, 6)
    """
    steps = p.progressive_steps
    if continues is None:
        admm = 0 if p.admm_prune is None else p.admm_prune.train.epochs
        prune = steps * (admm + _retrain_epochs(p))
    else:
        prune = _retrain_epochs(p) - _retrain_epochs(continues)
    quantize = 0 if p.admm_quantize is None else p.admm_quantize.train.epochs
    if p.quant_retrain is not None:
        quantize += p.quant_retrain.train.epochs * len(p.quant_retrain.shares)
    return prune + quantize


def rung_chain(
    p: PipelineSettings, rungs: RungSchedule, rung: int
) -> tuple[PipelineSettings, list[tuple[str, TrainSettings]]]:
    """How a setting with pipeline ``p`` reaches ``rung``: the pipeline its trials run (the
    prune phase of rung 0, the quantization stages of ``rung``) and the masked retraining each
    promotion added, in order, as ``(stage name, settings)``.

    >>> p = PipelineSettings.model_validate({"retrain": {"epochs": 9}})
    >>> pipeline, more = rung_chain(p, RungSchedule(eta=3, count=3), 2)
    >>> pipeline.retrain.epochs, [(name, s.epochs) for name, s in more]
    (1, [('retrain_rung1', 2), ('retrain_rung2', 6)])
    """
    levels = [rung_pipeline(p, rungs.fraction(r)) for r in range(rung + 1)]
    base = levels[-1].replace(admm_prune=levels[0].admm_prune, retrain=levels[0].retrain)
    more = []
    for r in range(1, rung + 1):
        step = added_retraining(levels[r], levels[r - 1])
        if step is not None:
            more.append((f"retrain_rung{r}", step))
    return base, more


def added_retraining(now: PipelineSettings, below: PipelineSettings) -> TrainSettings | None:
    """The masked retraining a promotion adds beyond its lower rung's: the retraining stage
    with the epochs between the two rungs (None: nothing to add)."""
    if now.retrain is None or below.retrain is None:
        return None
    added = now.retrain.epochs - below.retrain.epochs
    return now.retrain.replace(epochs=added) if added > 0 else None


def idle_rung(p: PipelineSettings, rungs: RungSchedule) -> int | None:
    """The first rung whose promotions would add nothing to ``p`` (its stages round to the
    same epochs as the rung below's: no retraining added, the quantization stages the same),
    or None when every rung trains longer than the one below.

    >>> p = PipelineSettings.model_validate({"retrain": {"epochs": 3}, "admm_quantize": None,
    ...                                      "quant_retrain": None})
    >>> idle_rung(p, RungSchedule(eta=3, count=2)), idle_rung(p, RungSchedule(eta=3, count=3))
    (None, 1)
    """
    levels = [rung_pipeline(p, rungs.fraction(r)) for r in range(rungs.count)]
    for r in range(1, rungs.count):
        high, low = levels[r], levels[r - 1]
        if high.replace(admm_prune=low.admm_prune) == low:
            return r
    return None
