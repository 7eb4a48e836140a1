"""A study file (YAML) -> a validated, typed, frozen :class:`StudyConfig`.

The study file is parsed and checked once, here; everything downstream receives typed objects.
Errors name the file, every bad field by its dotted path, and the bad value::

    studies/x.yaml: 2 problems:
      search.keep.low: must be in (0, 1], got -1
      dataset.val_fractoin: unknown field

Most checks need only the file (:func:`load_study`). Layer names need the model, which is cheap
to build (:func:`resolve_layers`); :func:`validate_study` does both, so a malformed file is
rejected before any training.

A searchable setting (a *knob*) is written as a fixed value, a range ``{low, high, log, step}``
or ``{choices: [...]}``. :func:`knob_specs` lists every knob of a study under the Optuna
parameter name that :mod:`admmsearch.search.space` suggests it as: ``keep.<unit>``,
``bits.<unit>`` or ``clusters.<unit>`` per *unit* (a layer, or a group of tied layers), then the
global knobs ``rho_start``, ``rho_end``, ``admm_updates``, ``admm_epochs``,
``retrain_epochs``, ``lr``, ``admm_prune_epochs`` and ``progressive_steps``. Example::

    >>> c = StudyConfig.model_validate({"name": "x", "model": "digits-cnn", "dataset": "digits",
    ...                                 "search": {"keep": 0.5, "bits": {"choices": [4, None]}}})
    >>> sorted(n for n, s in knob_specs(c, ["fc1", "fc2"]).items() if is_searched(s))
    ['bits.fc1', 'bits.fc2']
"""

from .knobs import Choices, FloatRange, IntRange, contains, is_searched
from .loading import base_pipeline, dense_settings, load_study, validate_study
from .schema import GLOBAL_KNOBS, KNOB_TARGETS, StudyConfig
from .units import (
    UnitSpace,
    check_layers,
    knob_specs,
    normalise_enqueue,
    resolve_layers,
    study_data,
    unit_spaces,
)
from .values import OBJECTIVES, PRIOR_FAMILIES, SAMPLERS

__all__ = [
    "GLOBAL_KNOBS",
    "KNOB_TARGETS",
    "OBJECTIVES",
    "PRIOR_FAMILIES",
    "SAMPLERS",
    "Choices",
    "FloatRange",
    "IntRange",
    "StudyConfig",
    "UnitSpace",
    "base_pipeline",
    "check_layers",
    "contains",
    "dense_settings",
    "is_searched",
    "knob_specs",
    "load_study",
    "normalise_enqueue",
    "resolve_layers",
    "study_data",
    "unit_spaces",
    "validate_study",
]
