"""The search space of a study: one Optuna trial -> a per-layer Plan and that trial's pipeline.

:func:`suggest` is the only place in admmsearch that calls ``trial.suggest_*``. What it suggests,
and under which parameter names, comes from the study file (see
:func:`admmsearch.config.knob_specs`); a *unit* is a layer, or a group of layers tied to one
setting:

====================  ============================================================
``keep.<unit>``       kept fraction of the weights, in (0, 1]; 1.0 means not pruned
``bits.<unit>``       bits of the kept weights; None means float32 (no quantization)
``clusters.<unit>``   learned centroids instead of bits, where the study clusters
``rho_start``         rho schedule of both ADMM stages: rho at the stage's start (also
                      ``rho_end``, and ``admm_updates``: Z/U updates over the stage)
``admm_epochs``       epochs of both ADMM stages
``retrain_epochs``    epochs of the masked retraining
``lr``                learning rate of both ADMM stages and of the retraining
``admm_prune_epochs`` epochs of the ADMM pruning stage alone; 0 is magnitude pruning
                      followed by masked retraining (not with ``admm_epochs``)
``progressive_steps`` 1: one-shot pruning; s > 1: the keep ratios reached in s steps,
                      each an ADMM pruning and a retraining stage (Ye et al. 2019)
====================  ============================================================

A knob fixed in the study file is applied to every trial but never suggested, so it is not among
a trial's params. Replaying a finished trial's params with :func:`settings_from_params` rebuilds
exactly the settings it ran with; this is how export and ``compress`` reproduce a trial.

Example::

    study = optuna.create_study(directions=config.directions)
    trial = study.ask()
    settings = suggest(trial, config, layers)
    ...
    assert settings_from_params(trial.params, config, layers) == settings
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from ..config import (
    KNOB_TARGETS,
    Choices,
    FloatRange,
    IntRange,
    StudyConfig,
    UnitSpace,
    base_pipeline,
    contains,
    is_searched,
    knob_specs,
    unit_spaces,
)
from ..errors import ConfigError, quote
from ..plan import LayerPlan, Plan
from ..settings import PipelineSettings

__all__ = [
    "SIGNIFICANT_DIGITS",
    "TrialSettings",
    "param_names",
    "settings_from_params",
    "suggest",
    "without_float_noise",
]

#: Significant digits a drawn float keeps: Optuna's step arithmetic (``low + k * step``) and
#: the priors' sums leave noise in the 16th or 17th (``0.03497000000000001``), which would be
#: written into settings files, plans and MLflow params; 12 keeps every digit a person means.
SIGNIFICANT_DIGITS = 12


@dataclass(frozen=True)
class TrialSettings:
    """What one trial runs: the per-layer plan, and the pipeline with the trial's knobs set."""

    plan: Plan
    pipeline: PipelineSettings


def suggest(
    trial: optuna.trial.BaseTrial, config: StudyConfig, layers: Sequence[str]
) -> TrialSettings:
    """Suggest every searched knob of ``config`` on ``trial`` and build the trial's settings.

    Args:
        trial: a live ``optuna.Trial``, or a ``FixedTrial`` to replay known params.
        config: the validated study.
        layers: the compressible layers of the model (from ``resolve_layers``).
    """
    values = {name: _draw(trial, name, spec) for name, spec in knob_specs(config, layers).items()}
    unit_of = {layer: unit for unit in unit_spaces(config, layers) for layer in unit.layers}
    plan = Plan(layers={layer: _layer_plan(unit_of[layer], values) for layer in layers})
    return TrialSettings(plan, _with_knobs(base_pipeline(config), values))


def settings_from_params(
    params: Mapping[str, Any], config: StudyConfig, layers: Sequence[str]
) -> TrialSettings:
    """Rebuild a trial's settings from its ``params`` (``FrozenTrial.params``).

    Raises:
        ConfigError: a param is missing, unknown, or outside its search space; the study file
            no longer describes the space the trial was drawn from.
    """
    specs = {n: s for n, s in knob_specs(config, layers).items() if is_searched(s)}
    missing = [name for name in specs if name not in params]
    unknown = [name for name in params if name not in specs]
    if missing or unknown:
        raise ConfigError(
            f"params do not match the study's search space (missing: {_list(missing)}; "
            f"not searched: {_list(unknown)}); was the study file changed since the trial ran?"
        )
    for name, value in params.items():
        if not contains(specs[name], value):
            raise ConfigError(
                f"params.{name}: {quote(value)} is outside this study's search space"
            )
    return suggest(optuna.trial.FixedTrial(dict(params)), config, layers)


def param_names(config: StudyConfig, layers: Sequence[str]) -> list[str]:
    """The names of the params a trial of ``config`` gets, in suggestion order."""
    return [name for name, spec in knob_specs(config, layers).items() if is_searched(spec)]


def without_float_noise(value: float) -> float:
    """``value`` rounded to :data:`SIGNIFICANT_DIGITS` significant digits.

    Example:
        >>> without_float_noise(0.03497000000000001), without_float_noise(0.1 + 0.2)
        (0.03497, 0.3)
    """
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _draw(trial: optuna.trial.BaseTrial, name: str, spec: Any) -> Any:
    """A knob's value for this trial: suggested when searched (a float without its noise,
    :func:`without_float_noise`), else the fixed value itself."""
    if isinstance(spec, FloatRange):
        value = trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)
        return without_float_noise(value)
    if isinstance(spec, IntRange):
        return trial.suggest_int(name, spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, Choices):
        return trial.suggest_categorical(name, list(spec.choices))
    return spec


def _layer_plan(unit: UnitSpace, values: Mapping[str, Any]) -> LayerPlan:
    levels = {unit.quantizer: values[unit.levels_param]}
    return LayerPlan(keep=values[unit.keep_param], structured=unit.structured, **levels)


def _with_knobs(pipeline: PipelineSettings, values: Mapping[str, Any]) -> PipelineSettings:
    """The pipeline with each global knob written into the stages it targets (if enabled)."""
    stages: dict[str, Any] = {}
    for knob, targets in KNOB_TARGETS.items():
        if knob not in values:
            continue
        for stage, field in targets.items():
            if not field:  # a field of the pipeline itself
                stages[stage] = values[knob]
                continue
            current = stages.get(stage, getattr(pipeline, stage))
            if current is not None:
                stages[stage] = _replace_at(current, field.split("."), values[knob])
    return pipeline.replace(**stages)


def _replace_at(settings: Any, path: Sequence[str], value: Any) -> Any:
    """A copy of the frozen settings ``settings`` with the field at ``path`` set to ``value``."""
    head, *rest = path
    new = _replace_at(getattr(settings, head), rest, value) if rest else value
    return settings.replace(**{head: new})


def _list(names: Sequence[str]) -> str:
    return ", ".join(names) or "none"
