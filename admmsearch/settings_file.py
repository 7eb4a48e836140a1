"""The exported settings file (``admmsearch export``): one trial's settings, to apply once.

A settings file is a small study of its own with nothing left to search: the model, data and
dense training of the study, the trial's pipeline (its rho schedule, epochs and learning rates
written in), its training hooks if any, and the trial's plan: its ``layers:`` block is a plan
file's (:class:`~admmsearch.plan.Plan`; keep ratio and bits or clusters per layer), read by the
same rules. The trial's metrics come along, so that ``compress`` can show how close a
reproduction came. Editing a layer's keep ratio or bits and running ``compress`` applies the
edited setting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Strict, ValidationError

from .config import StudyConfig, base_pipeline, check_layers
from .config.loading import read_yaml
from .config.schema import RungsConfig
from .errors import ConfigError
from .fidelity import RungSchedule, rung_chain
from .plan import Plan
from .registry import add_search_dir
from .settings import PipelineSettings, TrainSettings
from .validation import bound, report_errors

__all__ = [
    "FORMAT",
    "ExportedRung",
    "SettingsFile",
    "applied_settings",
    "read_settings",
    "settings_config",
    "write_settings",
]

FORMAT = "admmsearch-settings/1"


@dataclass(frozen=True)
class SettingsFile:
    """A settings file read and checked: its fixed study and layers, the plan and pipeline it
    applies, the masked retraining a trial of a longer rung added (``(stage name, settings)``,
    in order; see :func:`admmsearch.fidelity.rung_chain`), and the document itself (study,
    trial, exported metrics)."""

    config: StudyConfig
    layers: list[str]
    plan: Plan
    pipeline: PipelineSettings
    document: Mapping[str, Any]
    more_retraining: tuple[tuple[str, TrainSettings], ...] = ()


class ExportedRung(RungsConfig):
    """A trial of successive halving: the study's rungs and the trial's own (``rungs:``)."""

    rung: Annotated[int, Strict(), bound(0, 7)]


def applied_settings(
    doc: Mapping[str, Any], config: StudyConfig, source: str
) -> tuple[PipelineSettings, tuple[tuple[str, TrainSettings], ...]]:
    """The pipeline a document's trial ran and the retraining its promotions added: the
    study's pipeline as written, or for a trial of a rung (``rungs:``) the chain of
    :func:`admmsearch.fidelity.rung_chain`.

    Raises:
        ConfigError: a bad ``rungs:`` section, its field named.
    """
    pipeline = base_pipeline(config)
    if doc.get("rungs") is None:
        return pipeline, ()
    try:
        r = ExportedRung.model_validate(doc["rungs"])
    except ValidationError as exc:
        raise ConfigError(report_errors(f"{source}: rungs", exc)) from None
    if r.rung >= r.count:
        raise ConfigError(f"{source}: rungs.rung: must be below rungs.count ({r.count})")
    base, more = rung_chain(pipeline, RungSchedule(eta=r.eta, count=r.count), r.rung)
    return base, tuple(more)


def write_settings(doc: Mapping[str, Any], path: Path | None) -> str:
    """The document as YAML (or JSON when ``path`` ends in .json); written to ``path`` if given."""
    if path is not None and path.suffix == ".json":
        text = json.dumps(doc, indent=2) + "\n"
    else:
        header = (
            f"# admmsearch settings: trial {doc['trial']} of study {doc['study']} "
            f"({doc['chosen_by']}).\n# Apply with: admmsearch compress "
            f"{path.name if path else 'SETTINGS.yaml'}\n"
        )
        text = header + "".join(_yaml_section(key, value) for key, value in doc.items())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return text


def _yaml_section(key: str, value: Any) -> str:
    """One top-level entry; per-layer settings and stage settings one line each, for reading.

    Only a mapping is written in that style: a null (``normalisation`` of a study that does not
    normalise) written so would be ``{normalisation: null}``, which is no YAML after the block
    entries before it.
    """
    sections = ("layers", "pipeline", "model", "dataset", "dense", "normalisation", "training")
    sections += ("rungs",)
    flow = None if key in sections and isinstance(value, Mapping) else False
    return yaml.safe_dump({key: value}, sort_keys=False, width=120, default_flow_style=flow)


def read_settings(path: Path) -> SettingsFile:
    """Read and validate a settings file.

    User code the file names (``module:function``) is looked for in the file's folder too.

    Raises:
        ConfigError: missing file, not UTF-8 YAML/JSON, wrong format, or bad fields (each
            named).
    """
    doc = read_yaml(path, "settings file")
    add_search_dir(path.parent)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(
            f"{path}: not an admmsearch settings file (expected format: {FORMAT}; "
            "make one with `admmsearch export`)"
        )
    config, layers = settings_config(doc, source=str(path))
    plan = Plan.from_dict({"layers": doc["layers"]}, str(path))
    pipeline, more = applied_settings(doc, config, str(path))
    return SettingsFile(config, layers, plan, pipeline, doc, more)


def settings_config(doc: Mapping[str, Any], source: str) -> tuple[StudyConfig, list[str]]:
    """The study a settings document describes: its layers fixed by its plan, nothing searched.

    The ``layers:`` block is read as a plan file's (:meth:`Plan.from_dict`), so both accept
    and refuse the same settings.

    Raises:
        ConfigError: a required field is missing or a field is bad; each named.
    """
    for key in ("study", "layers", "pipeline", "model", "dataset"):
        if key not in doc:
            raise ConfigError(f"{source}: {key}: required field is missing")
    layers = doc["layers"]
    if not isinstance(layers, dict) or not layers:
        raise ConfigError(f"{source}: layers: must map each layer to its settings")
    plan = Plan.from_dict({"layers": layers}, source)
    study = {
        "name": doc["study"],
        "seed": doc.get("seed", 0),
        "model": doc["model"],
        "dataset": doc["dataset"],
        "device": doc.get("device", "cpu"),
        "dense": doc.get("dense", {}),
        "layers": list(plan.layers),
        "pipeline": doc["pipeline"],
        "training": doc.get("training", {}),
        "search": {"keep": 1.0, "bits": None, "layers": plan.to_dict()["layers"]},
        "budget": {"trials": 1},
    }
    try:
        config = StudyConfig.model_validate(study)
    except ValidationError as exc:
        raise ConfigError(report_errors(source, exc)) from None
    names = list(plan.layers)
    try:
        check_layers(config, names)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config, names
