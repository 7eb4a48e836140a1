"""A study name already used in the storage: refused when the stored study has another
definition (Optuna would keep the first study's directions and mix incomparable trials)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import optuna
import sqlalchemy
from pydantic import ValidationError

from ..config import StudyConfig
from ..errors import ConfigError, StoreError
from ..preflight import store_file
from ..record import StudyAttr
from ..redact import redact_text, redact_url
from ..registry import one_line
from ..runtime import StorageLock
from ..settings import TrainingHooks
from .quiet import quiet_optuna

__all__ = ["DEFINITION", "check_reuse", "definition_differences"]

#: The sections of a study file that define its trials; a study resumed under the same name
#: must keep them (budget, sampler, constraints, workers and stores may change).
DEFINITION = (
    "model",
    "dataset",
    "seed",
    "dense",
    "objectives",
    "search",
    "pipeline",
    "training",
)
_DATASET_KEYS = ("name", "val_fraction", "limit_train", "root", "num_classes", "normalise")


def check_reuse(
    config: StudyConfig, layers: Sequence[str], storage: str, study: optuna.Study | None = None
) -> None:
    """Refuse to run a study under a name that already holds a study with another definition
    (:data:`DEFINITION`, and the compressed layers): Optuna would keep the first study's
    directions and mix incomparable trials.

    Args:
        study: the study if already open; else it is looked up in ``storage`` without creating
            anything (a missing SQLite file means no study).

    Raises:
        ConfigError: names the study, the storage, what differs, and how to start a new study.
    """
    if study is None:
        study = _existing(config.name, storage)
    if study is None:
        return
    differences = definition_differences(config, layers, study)
    if differences:
        raise ConfigError(
            f"study {config.name!r} already exists in {redact_url(storage)} with another "
            f"definition ({'; '.join(differences)}); to resume it, run the study file it was "
            "started with; to start a new study instead, change name: in this file (or use "
            "another storage)"
        )


def definition_differences(
    config: StudyConfig, layers: Sequence[str], study: optuna.Study
) -> list[str]:
    """What differs between ``config`` and the study stored under its name, one phrase each."""
    now_directions = [d.lower() for d in config.directions]
    stored_directions = [d.name.lower() for d in study.directions]
    recorded = study.user_attrs.get(StudyAttr.CONFIG)
    if recorded is None:  # not recorded (an older or foreign study): only its directions
        if stored_directions == now_directions:
            return []
        return [f"directions: stored {stored_directions}, now {now_directions}"]
    try:
        stored = StudyConfig.model_validate(recorded)
    except ValidationError:
        stored = None
    out = []
    old = _definition(stored) if stored is not None else _raw_definition(recorded)
    new = _definition(config)
    for key in DEFINITION:
        if old.get(key) != new[key]:
            out.append(_first_difference(key, old.get(key), new[key]))
    stored_layers = study.user_attrs.get(StudyAttr.LAYERS)
    if stored_layers is not None and list(stored_layers) != list(layers):
        out.append(f"layers: stored {list(stored_layers)}, now {list(layers)}")
    return out


def _definition(config: StudyConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    data["dataset"] = {k: data["dataset"].get(k) for k in _DATASET_KEYS}
    return {key: data[key] for key in DEFINITION}


def _raw_definition(recorded: Mapping[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(dict(recorded)))
    if isinstance(data.get("dataset"), Mapping):
        data["dataset"] = {k: data["dataset"].get(k) for k in _DATASET_KEYS}
    data.setdefault("training", TrainingHooks().model_dump(mode="json"))  # recorded before hooks
    return {key: data.get(key) for key in DEFINITION}


def _first_difference(path: str, old: Any, new: Any) -> str:
    """``search.keep.low: stored 0.05, now 0.1``: the first leaf where two values part."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in [*old, *(k for k in new if k not in old)]:
            if old.get(key) != new.get(key):
                return _first_difference(f"{path}.{key}", old.get(key), new.get(key))
    return f"{path}: stored {_short(old)}, now {_short(new)}"


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _existing(name: str, storage: str) -> optuna.Study | None:
    """The study ``name`` in ``storage``, or None; creates no file and no study.

    Opening a database storage creates Optuna's tables where they are missing, so on a server
    it is done under the storage lock: workers starting together would race to create them.
    """
    file = store_file(storage) if storage.startswith("sqlite:") else None
    if file is not None and not file.expanduser().exists():
        return None
    try:
        with nullcontext() if file is not None else StorageLock(storage), quiet_optuna():
            return optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # no study of that name
        return None
    except (ImportError, sqlalchemy.exc.SQLAlchemyError) as exc:
        reason = redact_text(one_line(exc), storage)
        raise StoreError(f"storage {redact_url(storage)}: cannot read it ({reason})") from None
