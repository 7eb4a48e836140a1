"""What a study has done, as people read it: its state and budget, the facts ``show`` lists,
its front or closest trials, its failures, and the summary ``run`` closes with. Plain data
(mappings and lists) that the command line prints as a table or JSON.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
import pandas as pd
from pydantic import ValidationError

from ..config import StudyConfig
from ..config.schema import ConstraintsConfig
from ..record import Metric, StudyAttr, TrialAttr, kib
from ..redact import redact_url
from .catalog import OpenedStudy, study_names
from .feasibility import infeasible_note
from .front import front_frame, front_records
from .schedule import Budget, Schedule, epochs_text, spent

__all__ = [
    "budget_text",
    "describe",
    "failed_trials",
    "prior_trials",
    "run_summary",
    "seeded_trials",
    "state_counts",
    "study_report",
    "study_rows",
    "study_schedule",
    "study_state",
    "timeout_note",
    "unused_epochs",
]

_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
#: ``list``'s whole-number columns that a study may leave empty.
_GAPPY_COUNTS = ("budget", "epoch_budget", "unused_epochs")


def study_schedule(study: optuna.Study, config: StudyConfig) -> Schedule:
    """The study's schedule with the budget its last run worked to (``--trials`` and
    ``--epochs`` of a resume may raise the file's), else the study file's."""
    attrs, b = study.user_attrs, config.budget
    trials = attrs.get(StudyAttr.BUDGET, b.trials)
    epochs = attrs.get(StudyAttr.EPOCH_BUDGET, b.epochs)
    return Schedule(config, list(attrs.get(StudyAttr.LAYERS, [])), Budget(trials, epochs))


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return {state: counts.get(state, 0) for state in _STATES}


def study_state(study: optuna.Study, schedule: Schedule) -> str:
    """running (a trial is running), finished (the budget spent: nothing left to run) or
    stopped (can be resumed); ``stopped (timeout)`` when its last run ended at its timeout."""
    if any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        return "running"
    if schedule.finished(study):
        return "finished"
    return "stopped (timeout)" if study.user_attrs.get(StudyAttr.STOPPED_BY_TIMEOUT) else "stopped"


def budget_text(study: optuna.Study, schedule: Schedule) -> str:
    """What the study spent of its budget: ``10 of 10 trials``, ``62 of 74 epochs (12
    trials)``; ``no limit`` where it has none (a timeout alone)."""
    now, b = spent(study.get_trials(deepcopy=False)), schedule.budget
    parts = []
    if b.trials is not None:
        parts.append(f"{now.trials} of {b.trials} trials")
    if b.epochs is not None:
        parts.append(f"{now.epochs} of {b.epochs} epochs")
    if not parts:
        return f"{now.trials} trials, {now.epochs} epochs (no limit)"
    if b.trials is None:
        parts.append(f"{now.trials} trials")
    return ", ".join(parts)


def timeout_note(study: optuna.Study, schedule: Schedule) -> str | None:
    """How the last run's timeout stopped the study, or None when it did not."""
    note = study.user_attrs.get(StudyAttr.STOPPED_BY_TIMEOUT)
    if not note or study_state(study, schedule) != "stopped (timeout)":
        return None
    return (
        f"the last run stopped at its timeout ({note['timeout_s']:g} s, {note['at']}) with "
        f"{budget_text(study, schedule)} spent; run it again to go on"
    )


def describe(opened: OpenedStudy) -> list[tuple[str, str]]:
    """Key facts of a study, in reading order, for ``show``."""
    study, config = opened.study, opened.config
    schedule = study_schedule(study, config)
    counts = ", ".join(f"{n} {s.lower()}" for s, n in state_counts(study).items() if n)
    objectives = zip(config.objectives, config.directions, strict=True)
    state = study_state(study, schedule)
    left = _unused(study, schedule) if state == "finished" else ""
    facts = [
        ("study", config.name),
        ("state", state),
        ("storage", redact_url(opened.storage)),
        ("tracking", redact_url(opened.tracking_uri)),
        ("model / dataset", f"{config.model.name} / {config.dataset.name}"),
        ("layers", ", ".join(opened.layers)),
        ("objectives", ", ".join(f"{o} ({d})" for o, d in objectives)),
        ("sampler", config.sampler.name),
        ("budget", budget_text(study, schedule) + left),
        ("trials", counts or "none yet"),
    ]
    if schedule.rungs is not None:
        r = schedule.rungs
        facts.append(("rungs", f"{r.count} (eta {r.eta}); the front is rung {r.top}'s"))
    if note := timeout_note(study, schedule):
        facts.append(("stopped", note))
    return facts + _first_trial_facts(study) + _dense_facts(study)


def _dense_facts(study: optuna.Study) -> list[tuple[str, str]]:
    dense = study.user_attrs.get(StudyAttr.DENSE, {})
    if not dense:
        return []
    text = (
        f"val {dense['val_accuracy']:.4f}, test {dense['test_accuracy']:.4f}, "
        f"{kib(dense['storage_bits']):.1f} KiB"
    )
    return [("dense model", text)]


def _first_trial_facts(study: optuna.Study) -> list[tuple[str, str]]:
    """The ``prior trials`` and ``seeded trials`` lines of :func:`describe`, where there are."""
    facts = []
    if priors := prior_trials(study):
        text = ", ".join(f"{n} ({family}, {kib:.3f} KiB)" for n, family, kib in priors)
        facts.append(("prior trials", text + " (family, storage target)"))
    if seeded := seeded_trials(study):
        text = ", ".join(f"{n} ({kib:.3f} KiB budget)" for n, kib in seeded)
        facts.append(("seeded trials", text + " (from the sensitivity pass)"))
    return facts


def prior_trials(study: optuna.Study) -> list[tuple[int, str, float]]:
    """(trial number, family, storage target in KiB) of every trial from a zero-cost prior."""
    return [
        (
            t.number,
            str(t.user_attrs[TrialAttr.PRIOR].get("family")),
            float(t.user_attrs[TrialAttr.PRIOR].get("target_kib") or float("nan")),
        )
        for t in study.get_trials(deepcopy=False)
        if isinstance(t.user_attrs.get(TrialAttr.PRIOR), dict)
    ]


def seeded_trials(study: optuna.Study) -> list[tuple[int, float]]:
    """(trial number, storage budget in KiB) of every trial seeded from the sensitivity pass."""
    return [
        (t.number, float(t.user_attrs[TrialAttr.SEEDED].get("budget_kib", float("nan"))))
        for t in study.get_trials(deepcopy=False)
        if isinstance(t.user_attrs.get(TrialAttr.SEEDED), dict)
    ]


def failed_trials(study: optuna.Study) -> list[tuple[int, str]]:
    """(trial number, reason) of every failed or pruned trial: the recorded reason, else what
    the trial's attributes tell (interrupted, lost with its worker), else that none was kept."""
    bad = (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    return [(t.number, _reason(t)) for t in study.get_trials(deepcopy=False, states=bad)]


def _reason(trial: optuna.trial.FrozenTrial) -> str:
    if reason := trial.user_attrs.get(TrialAttr.FAIL_REASON):
        return str(reason)
    if trial.user_attrs.get(TrialAttr.INTERRUPTED):
        return "interrupted (Ctrl-C or the worker stopped); its params were queued again"
    if trial.system_attrs.get("fail_reason"):  # Optuna's own, e.g. a lost heartbeat
        return str(trial.system_attrs["fail_reason"]).strip().splitlines()[0]
    return f"{trial.state.name.lower()}, no reason recorded"


def study_report(opened: OpenedStudy, every: bool = False) -> dict[str, Any]:
    """What ``show`` prints: the facts, the front (or, with no feasible trial, why not and
    the closest trials), the failures and, with ``every``, every trial."""
    config = opened.config
    report: dict[str, Any] = {"facts": dict(describe(opened))}
    objectives = list(config.objectives)
    if any(t.state.name == "COMPLETE" for t in opened.study.get_trials(deepcopy=False)):
        report["front"], report["note"] = front_records(
            opened.study, objectives, config.constraints
        )
    else:
        report["front"], report["note"] = [], _no_front(opened)
    report["failures"] = [{"trial": n, "reason": r} for n, r in failed_trials(opened.study)]
    if every:
        report["trials"] = _every_trial(opened.study)
    return report


def _no_front(opened: OpenedStudy) -> str:
    """Why there is no front: no completed trial (``yet`` only while there is budget left)."""
    schedule = study_schedule(opened.study, opened.config)
    return "no trial completed" + ("" if schedule.finished(opened.study) else " yet")


def _every_trial(study: optuna.Study) -> list[dict[str, Any]]:
    """:func:`.front.all_trial_records`, a failed or pruned trial's reason as ``failures``
    gives it (what its attributes tell where none was recorded)."""
    from .front import all_trial_records

    records = all_trial_records(study)
    for record, trial in zip(records, study.get_trials(deepcopy=False), strict=True):
        if trial.state in (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED):
            record["reason"] = _reason(trial)
    return records


def study_rows(storage: str) -> pd.DataFrame:
    """One row per study in ``storage``: trial counts, state and the ends of its front."""
    rows = []
    for name in study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        recorded = study.user_attrs.get(StudyAttr.CONFIG) or {}
        objectives = list(recorded.get("objectives") or [])
        row: dict[str, Any] = {"study": name, **_budget_columns(study, recorded)}
        row.update({k.lower(): v for k, v in state_counts(study).items()})
        row.update(_front_ends(study, objectives))
        row["unmet"] = _unmet(study, recorded.get("constraints"))
        rows.append(row)
    frame = pd.DataFrame(rows)
    # counts with gaps stay integers (pandas would print a budget of 6 as 6.0)
    return frame.astype({c: "Int64" for c in _GAPPY_COUNTS if c in frame})


def _front_ends(study: optuna.Study, objectives: list[str]) -> dict[str, Any]:
    """The front's size, its most accurate point and its smallest point."""
    ends: dict[str, Any] = {"front": 0, "best_val_accuracy": None, "smallest_kib": None}
    if not objectives:
        return ends
    frame = front_frame(study, objectives)
    if frame.empty:
        return ends
    ends["front"] = len(frame)
    ends["best_val_accuracy"] = round(float(frame[Metric.VAL_ACCURACY].max()), 4)
    if frame[Metric.STORAGE_BITS].notna().any():
        ends["smallest_kib"] = round(kib(float(frame[Metric.STORAGE_BITS].min())), 2)
    return ends


def _unmet(study: optuna.Study, constraints: Any) -> str | None:
    """For ``list``: the constraints no completed trial meets, with the closest trial of each
    (:func:`admmsearch.feasibility.infeasible_note`), or None."""
    try:
        limits = ConstraintsConfig.model_validate(constraints or {})
    except ValidationError:
        return None
    note = infeasible_note(study, limits)
    return None if note is None else note.removeprefix("no trial meets the constraints: ")


def _budget_columns(study: optuna.Study, recorded: Any) -> dict[str, Any]:
    """A study's state, what it spent, its budget and, finished, the epochs it left unused
    (:func:`unused_epochs`), as ``list`` shows them (its recorded study file validated; a
    study an older admmsearch recorded shows what it can)."""
    now = spent(study.get_trials(deepcopy=False))
    try:
        schedule = study_schedule(study, StudyConfig.model_validate(recorded))
    except ValidationError:
        return {"state": "unknown", "finished": now.trials, "epochs": now.epochs}
    b, state = schedule.budget, study_state(study, schedule)
    return {
        "state": state,
        "finished": now.trials,
        "budget": b.trials,
        "epochs": now.epochs,
        "epoch_budget": b.epochs,
        "unused_epochs": unused_epochs(study, schedule) if state == "finished" else None,
    }


def run_summary(
    study: optuna.Study, config: StudyConfig, seconds: float, why: str | None
) -> dict[str, Any]:
    """What ``run`` closes with: trials finished by state, the seconds this run took, the
    epochs spent in all, and why it stopped (``why``, else the budget or the timeout)."""
    schedule = study_schedule(study, config)
    counts = state_counts(study)
    words = {"COMPLETE": "complete", "FAIL": "failed", "PRUNED": "pruned"}
    states = ", ".join(f"{counts[s]} {word}" for s, word in words.items())
    now = spent(study.get_trials(deepcopy=False))
    if why is None:
        why = _stop_reason(study, schedule)
    facts = {"finished": now.trials, "states": states, "seconds": seconds, "epochs": now.epochs}
    return {**facts, "why": why}


def unused_epochs(study: optuna.Study, schedule: Schedule) -> int | None:
    """Epochs of its budget a study leaves because nothing it could still run fits them (a
    new setting reserves its most epochs; with rungs, the screens are capped); None when its
    trials or its epochs ran out, or it has no epoch budget. Meant for a finished study."""
    now, b = spent(study.get_trials(deepcopy=False)), schedule.budget
    if b.epochs is None or now.epochs >= b.epochs:
        return None
    if b.trials is not None and now.trials >= b.trials:
        return None
    return b.epochs - now.epochs


def _unused(study: optuna.Study, schedule: Schedule) -> str:
    """:func:`unused_epochs` as ``show`` and ``run`` say it: ``; the 4 epochs left fit no
    further trial``; empty when there are none."""
    left = unused_epochs(study, schedule)
    if left is None:
        return ""
    return f"; the {epochs_text(left)} left {'fits' if left == 1 else 'fit'} no further trial"


def _stop_reason(study: optuna.Study, schedule: Schedule) -> str:
    spent_text = budget_text(study, schedule)
    if schedule.finished(study):
        return f"budget spent ({spent_text}{_unused(study, schedule)})"
    if note := study.user_attrs.get(StudyAttr.STOPPED_BY_TIMEOUT):
        return f"--timeout ({note['timeout_s']:g} s) with budget left ({spent_text})"
    return f"stopped with budget left ({spent_text})"
