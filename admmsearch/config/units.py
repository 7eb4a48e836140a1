"""Units: a layer, or a group of layers tied to one setting, and the checks that need the
layer names (:func:`resolve_layers` builds the model to get them)."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, LayerError, RegistryError, quote
from ..names import DATASET_SHAPES
from .knobs import Choices, IntRange, contains, is_searched, normalise
from .schema import GLOBAL_KNOBS, LayerOverride, SearchConfig, StudyConfig

if TYPE_CHECKING:  # the data module imports torch; a study file is read without it
    from ..data import DataSplits

__all__ = [
    "UnitSpace",
    "check_layers",
    "knob_specs",
    "normalise_enqueue",
    "resolve_layers",
    "study_data",
    "unit_spaces",
]


@dataclass(frozen=True)
class UnitSpace:
    """The search space of one unit: a layer, or a group of layers that share a setting.

    Attributes:
        name: the layer or group name, used in parameter names.
        layers: the compressible layers the unit's setting applies to, in model order.
        keep: the keep-ratio knob (a fixed value, range or choices).
        quantizer: ``"bits"`` or ``"clusters"``: which LayerPlan field ``levels`` sets.
        levels: the bits or clusters knob; a value of None means no quantization.
        structured: prune whole filters / rows.
    """

    name: str
    layers: tuple[str, ...]
    keep: Any
    quantizer: str
    levels: Any
    structured: bool

    @property
    def keep_param(self) -> str:
        return f"keep.{self.name}"

    @property
    def levels_param(self) -> str:
        return f"{self.quantizer}.{self.name}"


def unit_spaces(config: StudyConfig, layers: Sequence[str]) -> list[UnitSpace]:
    """The units of a study over ``layers``, in model order (a group where its first layer is).

    Raises:
        ConfigError: a group names no layer, shares a layer with another or is named like one.
    """
    members = _group_members(config.search.groups, list(layers))
    owner = {layer: group for group, tied in members.items() for layer in tied}
    names = dict.fromkeys(owner.get(layer, layer) for layer in layers)
    return [_unit_space(config.search, n, members.get(n, (n,))) for n in names]


def knob_specs(config: StudyConfig, layers: Sequence[str]) -> dict[str, Any]:
    """Every knob of the study by its Optuna parameter name, fixed ones included, in order."""
    specs: dict[str, Any] = {}
    for unit in unit_spaces(config, layers):
        specs[unit.keep_param] = unit.keep
        specs[unit.levels_param] = unit.levels
    for knob in GLOBAL_KNOBS:
        if (spec := getattr(config.search, knob)) is not None:
            specs[knob] = spec
    return specs


def _group_members(groups: Mapping[str, Sequence[str]], layers: list[str]) -> dict[str, tuple]:
    """Expand each group's names and globs into layers; a layer may sit in one group only."""
    owner: dict[str, str] = {}
    members = {}
    for group, patterns in groups.items():
        where = f"search.groups.{group}"
        if group in layers:
            raise ConfigError(f"{where}: a group cannot have the name of a layer")
        found = set()
        for pattern in patterns:
            matched = {n for n in layers if fnmatch.fnmatchcase(n, pattern)}
            if not matched:
                raise ConfigError(
                    f"{where}: {quote(pattern)} matches no layer; valid: {_list(layers)}"
                )
            found |= matched
        for layer in found:
            if layer in owner:
                raise ConfigError(
                    f"{where}: layer {quote(layer)} is already in group {quote(owner[layer])}"
                )
            owner[layer] = group
        members[group] = tuple(n for n in layers if n in found)
    return members


def _unit_space(search: SearchConfig, name: str, layers: tuple[str, ...]) -> UnitSpace:
    override = search.layers.get(name, LayerOverride())
    quantizer, levels = _quantization(search, override)
    return UnitSpace(
        name=name,
        layers=layers,
        keep=search.keep if override.keep is None else override.keep,
        quantizer=quantizer,
        levels=levels,
        structured=search.structured if override.structured is None else override.structured,
    )


def _quantization(search: SearchConfig, override: LayerOverride) -> tuple[str, Any]:
    """bits or clusters for a unit: its own choice if it made one, else the study's."""
    given = override.model_fields_set
    if override.clusters is not None:
        return "clusters", override.clusters
    if "clusters" in given or "bits" in given:
        return "bits", override.bits if "bits" in given else search.bits
    if search.clusters is not None:
        return "clusters", search.clusters
    return "bits", search.bits


# --- checks that need the layer names ---


def check_layers(config: StudyConfig, layers: Sequence[str]) -> None:
    """Check that groups, per-layer settings and enqueued params name real layers and knobs.

    Raises:
        ConfigError: names the field, the bad name and the valid ones.
    """
    layers = list(layers)
    units = unit_spaces(config, layers)
    owner = {layer: u.name for u in units for layer in u.layers if layer != u.name}
    valid = [u.name for u in units]
    for name in config.search.layers:
        where = f"search.layers.{name}"
        if name in owner:
            raise ConfigError(
                f"{where}: layer {quote(name)} is tied in group {quote(owner[name])}"
            )
        if name not in valid:
            raise ConfigError(f"{where}: not a compressible layer or group; valid: {_list(valid)}")
    _check_enqueue(config.enqueue, knob_specs(config, layers))


def _check_enqueue(enqueue: Sequence[Mapping[str, Any]], specs: Mapping[str, Any]) -> None:
    """Every enqueued name must be a searched knob and every value one it can take.

    Raises:
        ConfigError: one line naming every bad ``enqueue[i].<param>``, then the searched ones.
    """
    searched = [name for name, spec in specs.items() if is_searched(spec)]
    problems, unknown = [], False
    for i, params in enumerate(enqueue):
        for name, value in params.items():
            where = f"enqueue[{i}].{name}"
            if name not in searched:
                unknown = True
                why = "is fixed in this study" if name in specs else "is not a parameter"
                problems.append(f"{where}: {why}")
            elif not contains(specs[name], normalise(specs[name], value)):
                problems.append(f"{where}: {quote(value)} is outside {_describe(specs[name])}")
    if problems:
        searched_too = [f"searched: {_list(searched)}"] if unknown else []
        raise ConfigError("; ".join(problems + searched_too))


def normalise_enqueue(config: StudyConfig, layers: Sequence[str]) -> StudyConfig:
    """The study with every enqueued value in its knob's own type (``4.0`` -> ``4`` for an
    integer choice), so that a queued trial runs exactly the settings a suggested one would.

    Call it after :func:`check_layers`, which refuses values no knob can take.
    """
    specs = knob_specs(config, layers)
    enqueue = tuple(
        {name: normalise(specs[name], value) for name, value in params.items()}
        for params in config.enqueue
    )
    return config.model_copy(update={"enqueue": enqueue})


def _describe(spec: Any) -> str:
    if isinstance(spec, Choices):
        return f"choices {list(spec.choices)}"
    if not is_searched(spec):
        return f"fixed value {quote(spec)}"
    step = f" in steps of {spec.step}" if spec.step not in (None, 1) else ""
    kind = " (integers" + step + ")" if isinstance(spec, IntRange) else step and f" ({step[1:]})"
    return f"range [{spec.low}, {spec.high}]{kind}"


def _list(names: Sequence[str]) -> str:
    return ", ".join(names) or "none"


def resolve_layers(config: StudyConfig) -> list[str]:
    """Build the model (seeded, leaving the global RNG alone) and name its compressible layers.

    The built-in datasets' shapes are known, so only other datasets get loaded for their shape.

    Raises:
        LayerError: a ``layers`` pattern matches no compressible layer.
        ConfigError, RegistryError, DatasetError: the model or dataset cannot be built.
    """
    import torch

    from ..models import compressible_layers, create_model

    shape, classes = _input_spec(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        try:
            model = create_model(
                config.model.name, num_classes=classes, input_shape=shape, **config.model.kwargs
            )
        except RegistryError as exc:
            if ":" in config.model.name:  # user code that does not import: says so itself
                raise
            raise ConfigError(
                f"model.name: {exc}, torchvision:<name> or package.module:function"
            ) from None
    try:
        layers = list(compressible_layers(model, config.layers))
    except LayerError as exc:
        raise LayerError(f"layers: {exc}") from None
    if not layers:
        raise LayerError(
            f"model {quote(config.model.name)} has no layer admmsearch can compress: none of its "
            "modules is a convolution or linear layer with a weight, so there is nothing to "
            "prune or quantize"
        )
    return layers


def _input_spec(config: StudyConfig) -> tuple[tuple[int, ...], int]:
    d = config.dataset
    if d.name in DATASET_SHAPES:  # known: layers resolve without loading the data
        shape, classes = DATASET_SHAPES[d.name]
        return shape, d.num_classes or classes
    data = study_data(config)
    return data.input_shape, data.num_classes


def study_data(config: StudyConfig) -> DataSplits:
    """The study's dataset, loaded and checked with its options and seed (the one place a
    study's data is loaded: the study, ``compress`` and a settings file's reproduction).

    Raises:
        DatasetError, RegistryError, UserCodeError: the data cannot be loaded or is bad.
    """
    from ..data import load_dataset

    d = config.dataset
    return load_dataset(d.name, seed=config.seed, **d.load_options())
