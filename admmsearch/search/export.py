"""Export a finished trial's settings: choose the trial (by number or by a policy) and write
its settings document (:mod:`admmsearch.settings_file`).

Export checks its own work: the settings read back from the document must be exactly the
settings the trial ran with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import optuna

from ..config import GLOBAL_KNOBS, KNOB_TARGETS, StudyConfig, knob_specs
from ..errors import ConfigError, NoTrialError, quote
from ..fidelity import RungSchedule, rung_chain
from ..names import POLICIES
from ..plan import Plan
from ..record import Metric, TrialAttr, kib
from ..settings_file import FORMAT, applied_settings, settings_config
from .catalog import OpenedStudy
from .front import feasible, full_fidelity
from .space import TrialSettings, settings_from_params, without_float_noise

__all__ = [
    "EXPORTED_METRICS",
    "POLICIES",
    "choose_trial",
    "settings_document",
]

#: Metrics copied into the settings file (all of them are in the trial's MLflow run).
EXPORTED_METRICS = (
    Metric.VAL_ACCURACY,
    Metric.TEST_ACCURACY,
    Metric.DENSE_VAL_ACCURACY,
    Metric.DENSE_TEST_ACCURACY,
    Metric.ACCURACY_DROP,
    Metric.TEST_ACCURACY_DROP,
    Metric.STORAGE_BITS,
    Metric.PAYLOAD_BITS,
    Metric.HEADER_BITS,
    Metric.DATA_BITS,
    Metric.STORED_BITS,
    Metric.BIAS_BITS,
    Metric.OTHER_BITS,
    Metric.DENSE_WEIGHT_BITS,
    Metric.MODEL_DENSE_BITS,
    Metric.WEIGHT_RATIO_NO_INDEX,
    Metric.WEIGHT_RATIO_WITH_INDEX,
    Metric.COMPRESSION_RATIO,
    Metric.WEIGHT_SPARSITY,
)
_DONE = optuna.trial.TrialState.COMPLETE


# --- choosing a trial ---


def choose_trial(
    opened: OpenedStudy,
    *,
    number: int | None = None,
    policy: str | None = None,
    max_drop: float | None = None,
    max_storage_bits: float | None = None,
) -> tuple[optuna.trial.FrozenTrial, str]:
    """The trial to export and a line saying why it was chosen.

    ``number`` picks a trial; otherwise ``policy`` does, among the feasible trials at full
    fidelity (with successive halving, those of the top rung): ``max-compression`` is the
    smallest storage (the packed file) whose validation accuracy drop is at most ``max_drop``
    (default: the study's ``max_accuracy_drop``); ``max-accuracy`` is the best validation
    accuracy whose storage is at most ``max_storage_bits`` (default: the study's
    ``max_storage_bits``). With neither, the default is ``max-compression`` within the
    study's own ``max_accuracy_drop`` (``max_drop`` if given): the smallest feasible trial.

    Raises:
        NoTrialError: the trial is not a completed one, no completed trial meets the policy,
            or (by default) the study sets no ``max_accuracy_drop``.
        ConfigError: an unknown policy, or a policy without its bound.
    """
    if number is not None:
        return _numbered(opened.study, opened.config.name, number), "as asked"
    if policy is None:
        return _default(opened, max_drop)
    if policy == "max-compression":
        return _max_compression(opened, max_drop)
    if policy == "max-accuracy":
        return _max_accuracy(opened, max_storage_bits)
    raise ConfigError(f"--policy: unknown policy {quote(policy)}; known: " + ", ".join(POLICIES))


def _candidates(opened: OpenedStudy) -> list[optuna.trial.FrozenTrial]:
    """The completed, feasible trials at full fidelity that recorded their metrics."""
    study = opened.study
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(_DONE,))
        if TrialAttr.METRICS in t.user_attrs and feasible(t) and full_fidelity(t, study)
    ]


def _default(opened: OpenedStudy, max_drop: float | None) -> tuple[optuna.trial.FrozenTrial, str]:
    """``max-compression`` within the study's ``max_accuracy_drop``, saying so.

    Raises:
        NoTrialError: the study sets no ``max_accuracy_drop`` (and none is given), or no trial
            meets it.
    """
    name, bound = opened.config.name, opened.config.constraints.max_accuracy_drop
    if max_drop is None and bound is None:
        raise NoTrialError(
            f"study {quote(name)} sets no constraints.max_accuracy_drop, so there is no "
            "default trial to export; give --trial N or --policy with its bound"
        )
    trial, why = _max_compression(opened, max_drop)
    whose = "the study's max_accuracy_drop" if max_drop is None else "as asked"
    return trial, f"{why.replace('best of', 'smallest of', 1)}, {whose}"


def _max_compression(
    opened: OpenedStudy, max_drop: float | None
) -> tuple[optuna.trial.FrozenTrial, str]:
    bound = opened.config.constraints.max_accuracy_drop if max_drop is None else max_drop
    if bound is None:
        raise ConfigError("--policy max-compression needs --max-drop (the study sets none)")
    return _best(
        _candidates(opened),
        opened.config.name,
        lambda m: m[Metric.ACCURACY_DROP] <= bound + 1e-12,
        lambda m: (m[Metric.STORAGE_BITS], -m[Metric.VAL_ACCURACY]),
        f"accuracy drop <= {bound:g}",
        Metric.ACCURACY_DROP,
        _kind(opened),
    )


def _max_accuracy(
    opened: OpenedStudy, max_storage_bits: float | None
) -> tuple[optuna.trial.FrozenTrial, str]:
    limits = opened.config.constraints
    bound = limits.max_storage_bits if max_storage_bits is None else max_storage_bits
    if bound is None:
        raise ConfigError(
            "--policy max-accuracy needs --max-storage-kib (the study sets no max_storage_bits)"
        )
    return _best(
        _candidates(opened),
        opened.config.name,
        lambda m: m[Metric.STORAGE_BITS] <= bound,
        lambda m: (-m[Metric.VAL_ACCURACY], m[Metric.STORAGE_BITS]),
        f"storage <= {kib(bound):g} KiB",
        Metric.STORAGE_BITS,
        _kind(opened),
    )


def _numbered(study: optuna.Study, name: str, number: int) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise NoTrialError(
            f"--trial: study {quote(name)} has no trial {number} (trials 0 to {len(trials) - 1})"
        )
    trial = trials[number]
    if trial.state != _DONE or TrialAttr.METRICS not in trial.user_attrs:
        why = trial.user_attrs.get(TrialAttr.FAIL_REASON, "")
        raise NoTrialError(
            f"--trial: trial {number} of study {quote(name)} is "
            f"{trial.state.name.lower()}{f' ({why})' if why else ''}, "
            "not completed; only completed trials can be exported"
        )
    return trial


def _kind(opened: OpenedStudy) -> str:
    """What a policy chooses among: ``trial``, or ``top-rung trial`` with rungs (lower rungs
    are never exported by a policy)."""
    return "trial" if opened.config.search.rungs is None else "top-rung trial"


def _best(
    done: list[optuna.trial.FrozenTrial],
    name: str,
    meets: Callable[[dict], bool],
    rank: Callable[[dict], tuple],
    bound: str,
    closest: str,
    kind: str = "trial",
) -> tuple[optuna.trial.FrozenTrial, str]:
    chosen = [t for t in done if meets(t.user_attrs[TrialAttr.METRICS])]
    if not chosen:
        if not done:
            raise NoTrialError(f"study {quote(name)} has no completed feasible {kind} yet")
        near = min(done, key=lambda t: t.user_attrs[TrialAttr.METRICS][closest])
        value = near.user_attrs[TrialAttr.METRICS][closest]
        shown = (
            f"storage {kib(value):.3f} KiB"
            if closest == Metric.STORAGE_BITS
            else f"{closest.replace('_', ' ')} {value:.4f}"
        )
        raise NoTrialError(
            f"no completed {kind} of study {quote(name)} has {bound} "
            f"(closest: trial {near.number} with {shown})"
        )
    best = min(chosen, key=lambda t: rank(t.user_attrs[TrialAttr.METRICS]))
    plural = "" if len(chosen) == 1 else "s"
    return best, f"best of {len(chosen)} completed {kind}{plural} with {bound}"


# --- the settings document ---


def settings_document(
    opened: OpenedStudy, trial: optuna.trial.FrozenTrial, chosen_by: str
) -> dict[str, Any]:
    """Everything needed to apply the trial's settings once, as plain data."""
    config, layers = opened.config, opened.layers
    original = settings_from_params(trial.params, config, layers)
    resolved = config.resolved_dict()
    metrics = trial.user_attrs[TrialAttr.METRICS]
    doc = {
        "format": FORMAT,
        "study": config.name,
        "trial": trial.number,
        "chosen_by": chosen_by,
        "metrics": {k: _plain(metrics[k]) for k in EXPORTED_METRICS if k in metrics},
        # the input normalisation the trial's model expects (also in its packed file's header)
        "normalisation": trial.user_attrs.get(TrialAttr.NORMALISATION),
        "layers": original.plan.to_dict()["layers"],  # a plan file's layers: block
        "pipeline": _pipeline_with_knobs(resolved["pipeline"], config, layers, trial.params),
        "params": {k: _drawn(v) for k, v in trial.params.items()},
    }
    for key in ("seed", "model", "dataset", "device", "dense"):
        doc[key] = resolved[key]
    if config.training.named:
        doc["training"] = resolved["training"]
    if (rung := trial.user_attrs.get(TrialAttr.RUNG)) is not None and config.search.rungs:
        doc["rungs"] = {**config.search.rungs.model_dump(), "rung": rung}
    _check_replay(doc, original, trial.number)
    return doc


def _check_replay(doc: Mapping[str, Any], original: TrialSettings, number: int) -> None:
    """Export checks its own work: the settings read back from ``doc`` are the trial's, and
    so is what ``compress`` applies (for a rung's trial, its rung chain).

    Raises:
        ConfigError: they differ (a bug: please report it).
    """
    replayed, layers = settings_config(doc, source="export")
    pipeline, _ = applied_settings(doc, replayed, "export")
    rungs = doc.get("rungs")
    expected = original.pipeline
    if rungs is not None:
        chain = RungSchedule(eta=rungs["eta"], count=rungs["count"])
        expected = rung_chain(original.pipeline, chain, rungs["rung"])[0]
    applied = (Plan.from_dict({"layers": doc["layers"]}), pipeline)
    if settings_from_params({}, replayed, layers) != original or applied != (
        original.plan,
        expected,
    ):
        raise ConfigError(
            f"trial {number}: its settings do not survive export unchanged; please report "
            "this as a bug"
        )


def _pipeline_with_knobs(
    pipeline: Mapping[str, Any], config: StudyConfig, layers: list[str], params: Mapping[str, Any]
) -> dict[str, Any]:
    """The study's pipeline section with each global knob's value (searched or fixed) written
    into the stages it sets, as the trial ran it."""
    out = json.loads(json.dumps(pipeline))
    specs = knob_specs(config, layers)
    for knob in GLOBAL_KNOBS:
        if knob not in specs:
            continue
        value = params.get(knob, specs[knob])
        for stage, field in KNOB_TARGETS[knob].items():
            if not field:  # a field of the pipeline itself
                out[stage] = _drawn(value)
                continue
            if out.get(stage) is None:
                continue
            *path, last = field.split(".")
            node = out[stage]
            for part in path:
                node = node[part]
            node[last] = _drawn(value)
    return out


def _plain(value: Any) -> Any:
    """Numbers as YAML writes them plainly (numpy scalars and the like become Python ones)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value.item() if hasattr(value, "item") else value


def _drawn(value: Any) -> Any:
    """A drawn value as the trial ran it: a float without its noise
    (:func:`.space.without_float_noise`, as :func:`.space.suggest` rounds it)."""
    value = _plain(value)
    return without_float_noise(value) if isinstance(value, float) else value
