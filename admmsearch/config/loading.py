"""Reading a study file: YAML in, a :class:`StudyConfig` out, errors one line per bad field;
then the conversions of a loaded study to the engine's settings."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from ..errors import AdmmSearchError, ConfigError
from ..registry import add_search_dir
from .schema import StudyConfig

if TYPE_CHECKING:
    from ..pipeline import PipelineSettings
    from ..train import TrainSettings
from .units import check_layers, normalise_enqueue, resolve_layers

__all__ = [
    "base_pipeline",
    "dense_settings",
    "load_study",
    "read_yaml",
    "report_errors",
    "validate_study",
]


class _StudyLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a number (as YAML 1.2 does) and rejects repeated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StudyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file; its folder is where ``module:function`` and
    ``file.py:function`` user code is looked for (after ``sys.path``, before the current folder).

    Raises:
        ConfigError: the file is missing, not UTF-8 YAML or not a mapping, or has bad fields;
            the message names the file and every bad field with its value.
    """
    path = Path(path)
    data = read_yaml(path, "study file")
    add_search_dir(path.parent)
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_report(path, exc)) from None


def validate_study(path: str | Path) -> tuple[StudyConfig, list[str]]:
    """Load a study file and check it against its model's layers, before any training.

    Enqueued params are normalised to the types of their search space (``4.0`` for an integer
    choice becomes ``4``).

    Returns:
        The config and the names of the compressible layers it compresses.
    """
    config = load_study(path)
    try:
        layers = resolve_layers(config)
        check_layers(config, layers)
    except AdmmSearchError as exc:
        raise type(exc)(f"{path}: {exc}") from exc
    return normalise_enqueue(config, layers), layers


def read_yaml(path: str | Path, what: str) -> dict[str, Any]:
    """Read the YAML mapping in ``path``, the one reader of every file admmsearch reads (study,
    plan, settings): numbers like ``1e-3`` are numbers (as in YAML 1.2), a repeated key is
    refused, and so is a file that is not UTF-8 text.

    Args:
        path: the file.
        what: what the file is, for messages (``"plan file"``).

    Raises:
        ConfigError: one line naming the file: missing, unreadable, not UTF-8 text, not YAML
            (with line and column), or not a mapping.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a {what}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); a {what} is YAML text"
        ) from None
    try:
        data = yaml.load(text, Loader=_StudyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        kind = "an empty file" if data is None else type(data).__name__
        raise ConfigError(f"{path}: expected a mapping in the {what}, got {kind}")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``line L, column C: what`` from PyYAML's multi-line message."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return str(exc)
    what = ", ".join(t for t in (getattr(exc, "context", None), exc.problem) if t)
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}"


def _report(path: Path, exc: ValidationError) -> str:
    return report_errors(str(path), exc)


def report_errors(
    source: str, exc: ValidationError, rename: Mapping[str, str] | None = None
) -> str:
    """One line per bad field: ``dotted.path: what is wrong, got value``, after ``source``.

    ``rename`` maps a dotted prefix to the name the reader knows it by (when the data was
    rearranged before validation).
    """
    lines = [_line(error) for error in exc.errors(include_url=False)]
    for old, new in (rename or {}).items():
        lines = [new + line[len(old) :] if line.startswith(old) else line for line in lines]
    lines = list(dict.fromkeys(lines))
    if len(lines) == 1:
        return f"{source}: {lines[0]}"
    return f"{source}: {len(lines)} problems:\n" + "\n".join(f"  {line}" for line in lines)


_PHRASES = (
    (re.compile(r"^Input should be"), "must be"),
    (re.compile(r"a valid dictionary( or instance of \w+)?"), "a mapping"),
    (re.compile(r"a valid tuple"), "a list"),
    (re.compile(r"^(Tuple|List|Dictionary) should"), "must"),
    (re.compile(r" after validation, not \d+"), ""),
)


def _line(error: Mapping[str, Any]) -> str:
    where = ""
    for part in error["loc"]:
        if isinstance(part, int):
            where += f"[{part}]"
        elif not part.startswith("~") and part != "[key]":
            where += f".{part}" if where else part
    if error["type"] == "extra_forbidden":
        text = "unknown field"
    elif error["type"] == "missing":
        text = "required field is missing"
    else:
        text = error["msg"].removeprefix("Value error, ")
        for pattern, new in _PHRASES:
            text = pattern.sub(new, text)
        if not isinstance(error.get("input"), Mapping):
            text += f", got {error['input']!r}"
    return f"{where}: {text}" if where else text


# --- conversions to the engine's settings ---


def dense_settings(config: StudyConfig) -> TrainSettings:
    """How to train the dense model when no checkpoint is given."""
    return config.dense.train.settings()


def base_pipeline(config: StudyConfig) -> PipelineSettings:
    """Every trial's pipeline before its knobs are applied; ``pretrain`` is None because trials
    start from the dense model (trained once with :func:`dense_settings`, or a checkpoint)."""
    from ..pipeline import PipelineSettings

    p = config.pipeline
    return PipelineSettings(
        pretrain=None,
        admm_prune=None if p.admm_prune is None else p.admm_prune.settings(),
        retrain=None if p.retrain is None else p.retrain.settings(),
        admm_quantize=None if p.admm_quantize is None else p.admm_quantize.settings(),
        quant_retrain=None if p.quant_retrain is None else p.quant_retrain.settings(),
        progressive_steps=p.progressive_steps,
        seed=config.seed,
        index_format=p.index_format,
        fold_batchnorm=p.fold_batchnorm,
    )
