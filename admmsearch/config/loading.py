"""Reading a study file: YAML in, a :class:`StudyConfig` out, errors one line per bad field;
then the engine's settings a loaded study holds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import AdmmSearchError, ConfigError, quote
from ..registry import add_search_dir
from ..settings import PipelineSettings, TrainSettings
from .schema import StudyConfig

if TYPE_CHECKING:
    from ..pipeline import PipelineSettings
    from ..train import TrainSettings
from .units import check_layers, normalise_enqueue, resolve_layers

__all__ = [
    "MAX_NODES",
    "base_pipeline",
    "check_rungs",
    "dense_settings",
    "expanded_size",
    "load_study",
    "read_yaml",
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
                    None, None, f"key {quote(key)} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def get_single_node(self) -> yaml.Node | None:
        """The document's node graph, refused when its aliases expand it beyond
        :data:`MAX_NODES` (a "billion laughs" file of a few lines would otherwise take the
        memory and time of its whole expansion wherever a value is read or quoted)."""
        node = super().get_single_node()
        if node is not None and expanded_size(node) > MAX_NODES:
            raise _TooLarge(f"its aliases (*name) expand it to more than {MAX_NODES:,} values")
        return node


class _TooLarge(yaml.YAMLError):
    """A document whose aliases expand it beyond :data:`MAX_NODES`."""


#: The most values (YAML nodes, aliases expanded) a file admmsearch reads may hold.
MAX_NODES = 100_000


def expanded_size(root: yaml.Node) -> int:
    """How many nodes the document under ``root`` holds once every alias is expanded, counted
    on the composed graph (an alias shares its anchor's node) without expanding anything; a
    recursive alias counts as more than :data:`MAX_NODES`."""
    sizes: dict[int, int] = {}
    ancestors: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children = _children(node)
        if done:
            ancestors.discard(id(node))
            sizes[id(node)] = min(MAX_NODES + 1, 1 + sum(sizes[id(c)] for c in children))
        elif id(node) in ancestors:
            return MAX_NODES + 1
        elif id(node) not in sizes:
            ancestors.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


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
    return StudyConfig.parse(data, str(path))


def validate_study(path: str | Path) -> tuple[StudyConfig, list[str]]:
    """Load a study file and check it against its model's layers, and that its training
    hooks import and take their arguments, before any training.

    Enqueued params are normalised to the types of their search space (``4.0`` for an integer
    choice becomes ``4``).

    Returns:
        The config and the names of the compressible layers it compresses.
    """
    from ..hooks import load_recipe  # imports torch, as building the model does

    config = load_study(path)
    try:
        layers = resolve_layers(config)
        check_layers(config, layers)
        check_rungs(config)
        load_recipe(config.training)
    except AdmmSearchError as exc:
        raise type(exc)(f"{path}: {exc}") from exc
    return normalise_enqueue(config, layers), layers


def check_rungs(config: StudyConfig) -> None:
    """Check that each rung of ``search.rungs`` trains the pipeline as written longer than the
    rung below (:func:`admmsearch.fidelity.idle_rung`): a rung whose stages round to the same
    epochs would spend its promotions' epochs repeating the rung below.

    Raises:
        ConfigError: names ``search.rungs``, the idle rung and what would make it train.
    """
    from ..fidelity import RungSchedule, idle_rung, rung_pipeline, trial_epochs

    r = config.search.rungs
    if r is None:
        return
    rungs, base = RungSchedule(eta=r.eta, count=r.count), base_pipeline(config)
    rung = idle_rung(base, rungs)
    if rung is None:
        return
    below = trial_epochs(rung_pipeline(base, rungs.fraction(rung - 1)))
    ways = ["fewer rungs (count)"] if r.count > 2 else []
    ways += ["a smaller eta"] if r.eta > 2 else []
    raise ConfigError(
        f"search.rungs: rung {rung} would train exactly as rung {rung - 1} does ({below} "
        f"epochs: its retraining and quantization stages round to the same epochs), so its "
        f"promotions would add nothing; give {', '.join([*ways, 'longer stages'])}"
    )


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
    except _TooLarge as exc:
        raise ConfigError(f"{path}: {exc}; write the values out instead") from None
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


# --- the engine's settings of a study ---


def dense_settings(config: StudyConfig) -> TrainSettings:
    """How to train the dense model when no checkpoint is given (``dense.train``)."""
    return config.dense.train


def base_pipeline(config: StudyConfig) -> PipelineSettings:
    """Every trial's pipeline before its knobs are applied: the study's compression stages,
    seed and training hooks; ``pretrain`` is None because trials start from the dense model
    (trained once with :func:`dense_settings`, or a checkpoint)."""
    return PipelineSettings(
        **dict(config.pipeline), pretrain=None, seed=config.seed, training=config.training
    )
