"""Finding studies that already exist and opening them to read: what ``list``, ``show``,
``pareto`` and ``export`` start from (:mod:`.report` summarises them).

A study is named by its study file or by its name alone. By name, the study's own record is
enough: ``prepare`` keeps the resolved study file and the compressed layers in the study's user
attributes, so nothing else has to be at hand to read a study back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from pydantic import ValidationError

from ..config import StudyConfig, validate_study
from ..errors import ConfigError, StoreError, StudyNotFoundError, quote
from ..locations import resolve_storage, resolve_tracking
from ..record import StudyAttr
from ..redact import redact_text, redact_url
from ..runtime import driver_reason
from ..validation import report_errors
from .quiet import quiet_optuna

__all__ = ["OpenedStudy", "is_study_file", "open_existing", "study_names"]


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
