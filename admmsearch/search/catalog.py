"""Finding studies that already exist and summarising them: what ``list``, ``show`` and
``pareto`` read.

A study is named by its study file or by its name alone. By name, the study's own record is
enough: ``prepare`` keeps the resolved study file and the compressed layers in the study's user
attributes, so nothing else has to be at hand to read a study back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from pydantic import ValidationError

from ..config import StudyConfig, validate_study
from ..config.schema import ConstraintsConfig
from ..errors import ConfigError, StoreError, StudyNotFoundError, quote
from ..locations import resolve_storage, resolve_tracking
from ..record import Metric, StudyAttr, TrialAttr, kib
from ..redact import redact_text, redact_url
from ..runtime import driver_reason
from ..validation import report_errors
from .feasibility import infeasible_note
from .front import feasible, front_frame, study_space, trial_plan
from .origin import trial_origin
from .quiet import quiet_optuna
from .study import finished_count

__all__ = [
    "OpenedStudy",
    "all_trials_table",
    "describe",
    "failed_trials",
    "is_study_file",
    "open_existing",
    "prior_trials",
    "seeded_trials",
    "state_counts",
    "study_names",
    "study_budget",
    "study_rows",
    "study_state",
    "timeout_note",
]

_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass(frozen=True)
class OpenedStudy:
    """An existing study with the config it was run with and where its records live."""

    study: optuna.Study
    config: StudyConfig
    layers: list[str]
    storage: str
    tracking_uri: str


def is_study_file(ref: str) -> bool:
    """A reference names a study file when it looks like one or a file by that name exists."""
    return ref.endswith((".yaml", ".yml")) or Path(ref).is_file()


def study_names(storage: str) -> list[str]:
    """Names of the studies in ``storage``; none when a SQLite file does not exist yet (it is
    not created just by looking)."""
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///") :]).exists():
        return []
    try:
        return sorted(optuna.study.get_all_study_names(storage=storage))
    except Exception as exc:  # noqa: BLE001 - any storage failure is reported the same way
        reason = redact_text(driver_reason(exc), storage)
        raise StoreError(f"storage {redact_url(storage)}: cannot read it ({reason})") from None


def open_existing(
    ref: str, *, storage: str | None = None, tracking_uri: str | None = None
) -> OpenedStudy:
    """Load the study that ``ref`` (a study file or a study name) names, without running it.

    Raises:
        ConfigError: the study file is missing or malformed.
        StudyNotFoundError: no study of that name in the storage; the message lists those there.
    """
    file_config = None
    if is_study_file(ref):
        file_config, _ = validate_study(Path(ref))
        name = file_config.name
    else:
        name = ref
    url = resolve_storage(file_config, storage)
    names = study_names(url)
    if name not in names:
        there = ", ".join(names) if names else "none"
        raise StudyNotFoundError(
            f"no study named {quote(name)} in storage {redact_url(url)} (studies there: {there})"
        )
    with quiet_optuna():
        study = optuna.load_study(study_name=name, storage=url)
    recorded = study.user_attrs.get(StudyAttr.CONFIG)
    if recorded is None:
        raise StudyNotFoundError(
            f"study {quote(name)} in {redact_url(url)} was not made by "
            "admmsearch (it has no recorded study file)"
        )
    config = file_config or _recorded_config(name, recorded)
    layers = list(study.user_attrs.get(StudyAttr.LAYERS, []))
    return OpenedStudy(study, config, layers, url, resolve_tracking(file_config, tracking_uri))


def _recorded_config(name: str, recorded: Any) -> StudyConfig:
    """The study file a study recorded when it started, validated by this admmsearch.

    Raises:
        ConfigError: it no longer validates (a setting was renamed or removed since); the
            message names the fields and says to open the study by an updated study file.
    """
    try:
        return StudyConfig.model_validate(recorded)
    except ValidationError as exc:
        problems = report_errors(f"study {quote(name)}: its recorded study file", exc)
        raise ConfigError(
            f"{problems.splitlines()[0]} (recorded by an older admmsearch; name the study by "
            "its study file, updated, instead of by its name)"
        ) from None


def study_budget(study: optuna.Study, configured: int | None) -> int | None:
    """The trial budget the study's last run worked to (a resume with ``--trials`` raises the
    study file's), else ``configured``."""
    return study.user_attrs.get(StudyAttr.BUDGET, configured)


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return {state: counts.get(state, 0) for state in _STATES}


def study_state(study: optuna.Study, budget: int | None) -> str:
    """running (a trial is running), finished (budget spent) or stopped (can be resumed);
    ``stopped (timeout)`` when its last run ended at its timeout before the budget."""
    if any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        return "running"
    if budget is not None and finished_count(study) >= budget:
        return "finished"
    return "stopped (timeout)" if study.user_attrs.get(StudyAttr.STOPPED_BY_TIMEOUT) else "stopped"


def timeout_note(study: optuna.Study, budget: int | None) -> str | None:
    """How the last run's timeout stopped the study, or None when it did not."""
    note = study.user_attrs.get(StudyAttr.STOPPED_BY_TIMEOUT)
    if not note or study_state(study, budget) != "stopped (timeout)":
        return None
    of = f" of {budget}" if budget else ""
    return (
        f"the last run stopped at its timeout ({note['timeout_s']:g} s, {note['at']}) with "
        f"{note['finished']}{of} trials finished; run it again to go on"
    )


def study_rows(storage: str) -> pd.DataFrame:
    """One row per study in ``storage``: trial counts, state and the ends of its front."""
    rows = []
    for name in study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        recorded = study.user_attrs.get(StudyAttr.CONFIG) or {}
        budget = study_budget(study, (recorded.get("budget") or {}).get("trials"))
        objectives = list(recorded.get("objectives") or [])
        row: dict[str, Any] = {
            "study": name,
            "state": study_state(study, budget),
            "finished": finished_count(study),
            "budget": budget,
        }
        row.update({k.lower(): v for k, v in state_counts(study).items()})
        row.update(_front_ends(study, objectives))
        row["unmet"] = _unmet(study, recorded.get("constraints"))
        rows.append(row)
    return pd.DataFrame(rows)


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


def describe(opened: OpenedStudy) -> list[tuple[str, str]]:
    """Key facts of a study, in reading order, for ``show``."""
    study, config = opened.study, opened.config
    dense = study.user_attrs.get(StudyAttr.DENSE, {})
    counts = state_counts(study)
    budget = study_budget(study, config.budget.trials)
    facts = [
        ("study", config.name),
        ("state", study_state(study, budget)),
        ("storage", redact_url(opened.storage)),
        ("tracking", redact_url(opened.tracking_uri)),
        ("model / dataset", f"{config.model.name} / {config.dataset.name}"),
        ("layers", ", ".join(opened.layers)),
        (
            "objectives",
            ", ".join(
                f"{o} ({d})" for o, d in zip(config.objectives, config.directions, strict=True)
            ),
        ),
        ("sampler", config.sampler.name),
        (
            "trials",
            f"{finished_count(study)} finished of {budget if budget else 'no limit'}; "
            + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n),
        ),
    ]
    if note := timeout_note(study, budget):
        facts.append(("stopped", note))
    facts += _first_trial_facts(study)
    if dense:
        facts.append(
            (
                "dense model",
                f"val {dense['val_accuracy']:.4f}, "
                f"test {dense['test_accuracy']:.4f}, "
                f"{kib(dense['storage_bits']):.1f} KiB",
            )
        )
    return facts


def _first_trial_facts(study: optuna.Study) -> list[tuple[str, str]]:
    """The ``prior trials`` and ``seeded trials`` lines of :func:`describe`, where there are."""
    facts = []
    if priors := prior_trials(study):
        text = ", ".join(f"{n} ({family}, {kib:g} KiB)" for n, family, kib in priors)
        facts.append(("prior trials", text + " (family, storage target)"))
    if seeded := seeded_trials(study):
        text = ", ".join(f"{n} ({kib:g} KiB budget)" for n, kib in seeded)
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


def all_trials_table(study: optuna.Study, objectives: list[str]) -> pd.DataFrame:
    """Every trial of ``study``, whatever its state, for ``show --all``: ``trial``, ``state``
    (lower case), ``origin``, ``rung``, ``epochs``, ``val_accuracy``, ``storage_kib``, any
    other of the study's ``objectives`` (``compression_ratio_with_index``), ``feasible``
    (None unless complete), ``layers`` (its per-layer settings, as the front's table gives
    them) and ``fail_reason`` (of failed and pruned trials, as :func:`failed_trials` gives it).
    """
    space = study_space(study)
    others = [o for o in objectives if o not in (Metric.VAL_ACCURACY, Metric.STORAGE_BITS)]
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = _trial_line(t, space)
        done = t.state == optuna.trial.TrialState.COMPLETE and t.values is not None
        values = dict(zip(objectives, t.values, strict=True)) if done else {}
        rows.append({**row, **{o: values.get(o) for o in others}})
    columns = [*_TRIAL_COLUMNS[:7], *others, *_TRIAL_COLUMNS[7:]]
    table = pd.DataFrame(rows, columns=columns)
    return table.astype({"rung": "Int64", "epochs": "Int64"})


_TRIAL_COLUMNS = (
    "trial",
    "state",
    "origin",
    "rung",
    "epochs",
    "val_accuracy",
    "storage_kib",
    "feasible",
    "layers",
    "fail_reason",
)


def _trial_line(trial: optuna.trial.FrozenTrial, space: Any) -> dict[str, Any]:
    """One row of :func:`all_trials_table`."""
    metrics = trial.user_attrs.get(TrialAttr.METRICS) or {}
    done = trial.state == optuna.trial.TrialState.COMPLETE
    bits = metrics.get(Metric.STORAGE_BITS)
    accuracy = metrics.get(Metric.VAL_ACCURACY)
    plan = trial_plan(trial, space)
    bad = trial.state in (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    return {
        "trial": trial.number,
        "state": trial.state.name.lower(),
        "origin": trial_origin(trial.user_attrs),
        "rung": trial.user_attrs.get(TrialAttr.RUNG),
        "epochs": trial.user_attrs.get(TrialAttr.EPOCHS),
        "val_accuracy": None if accuracy is None else round(float(accuracy), 4),
        "storage_kib": None if bits is None else round(kib(float(bits)), 3),
        "feasible": feasible(trial) if done else None,
        "layers": None if plan is None else plan.compact(),
        "fail_reason": _reason(trial) if bad else None,
    }
