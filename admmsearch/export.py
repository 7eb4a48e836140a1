"""Export a finished trial's settings, and apply exported settings once, without search.

A settings file is a small study of its own with nothing left to search: the model, data and
dense training of the study, the trial's pipeline (its rho schedule, epochs and learning rates
written in) and one fixed setting per layer (keep ratio and bits or clusters), plus the trial's
metrics so that ``compress`` can show how close a reproduction came. Editing a layer's keep
ratio or bits in the file and running ``compress`` applies the edited setting.

Export checks its own work: the settings read back from the document must be exactly the
settings the trial ran with.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from pydantic import ValidationError
from torch import nn

from .catalog import OpenedStudy
from .config import GLOBAL_KNOBS, KNOB_TARGETS, StudyConfig, check_layers, knob_specs
from .config.loading import read_yaml, report_errors
from .data import load_dataset
from .errors import ConfigError, NoTrialError
from .front import feasible
from .names import POLICIES
from .objective import build_model, dense_model, packed_meta, trial_metrics
from .packing import PackInfo, encode_model
from .pipeline import PipelineHooks, PipelineResult, run_pipeline
from .preflight import check_checkpoint, check_device
from .registry import add_search_dir
from .search_space import TrialSettings, settings_from_params

__all__ = [
    "POLICIES",
    "Reproduction",
    "choose_trial",
    "read_settings",
    "reproduce",
    "settings_config",
    "settings_document",
    "write_settings",
]

FORMAT = "admmsearch-settings/1"
#: Metrics copied into the settings file (all of them are in the trial's MLflow run).
EXPORTED_METRICS = (
    "val_accuracy",
    "test_accuracy",
    "dense_val_accuracy",
    "dense_test_accuracy",
    "accuracy_drop",
    "test_accuracy_drop",
    "storage_bits_with_index",
    "payload_bits",
    "header_bits",
    "data_bits",
    "stored_bits",
    "bias_bits",
    "other_bits",
    "dense_weight_bits",
    "model_dense_bits",
    "weight_ratio_no_index",
    "weight_ratio_with_index",
    "compression_ratio_with_index",
    "weight_sparsity",
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

    ``number`` picks a trial; otherwise ``policy`` does: ``max-compression`` is the smallest
    storage (the packed file) whose validation accuracy drop is at most ``max_drop`` (default: the
    study's ``max_accuracy_drop``); ``max-accuracy`` is the best validation accuracy whose
    storage is at most ``max_storage_bits`` (default: the study's ``max_storage_bits``).

    Raises:
        NoTrialError: the trial is not a completed one, or no completed trial meets the policy.
        ConfigError: neither a trial nor a policy, or a policy without its bound.
    """
    study, name = opened.study, opened.config.name
    if number is not None:
        return _numbered(study, name, number), f"trial {number}, as asked"
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(_DONE,))
        if "metrics" in t.user_attrs and feasible(t)
    ]
    limits = opened.config.constraints
    if policy == "max-compression":
        bound = limits.max_accuracy_drop if max_drop is None else max_drop
        if bound is None:
            raise ConfigError("--policy max-compression needs --max-drop (the study sets none)")
        return _best(
            done,
            name,
            lambda m: m["accuracy_drop"] <= bound + 1e-12,
            lambda m: (m["storage_bits_with_index"], -m["val_accuracy"]),
            f"accuracy drop <= {bound:g}",
            "accuracy_drop",
            min,
        )
    if policy == "max-accuracy":
        bound = limits.max_storage_bits if max_storage_bits is None else max_storage_bits
        if bound is None:
            raise ConfigError(
                "--policy max-accuracy needs --max-storage-kib "
                "(the study sets no max_storage_bits)"
            )
        return _best(
            done,
            name,
            lambda m: m["storage_bits_with_index"] <= bound,
            lambda m: (-m["val_accuracy"], m["storage_bits_with_index"]),
            f"storage <= {bound / 8192:g} KiB",
            "storage_bits_with_index",
            min,
        )
    if policy is None:
        raise ConfigError("give --trial N or --policy (one of: " + ", ".join(POLICIES) + ")")
    raise ConfigError(f"--policy: unknown policy {policy!r}; known: " + ", ".join(POLICIES))


def _numbered(study: optuna.Study, name: str, number: int) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise NoTrialError(
            f"--trial: study {name!r} has no trial {number} (trials 0 to {len(trials) - 1})"
        )
    trial = trials[number]
    if trial.state != _DONE or "metrics" not in trial.user_attrs:
        why = trial.user_attrs.get("fail_reason", "")
        raise NoTrialError(
            f"--trial: trial {number} of study {name!r} is "
            f"{trial.state.name.lower()}{f' ({why})' if why else ''}, "
            "not completed; only completed trials can be exported"
        )
    return trial


def _best(
    done: list[optuna.trial.FrozenTrial],
    name: str,
    meets: Callable[[dict], bool],
    rank: Callable[[dict], tuple],
    bound: str,
    closest: str,
    pick: Callable,
) -> tuple[optuna.trial.FrozenTrial, str]:
    chosen = [t for t in done if meets(t.user_attrs["metrics"])]
    if not chosen:
        if not done:
            raise NoTrialError(f"study {name!r} has no completed feasible trial yet")
        near = pick(done, key=lambda t: t.user_attrs["metrics"][closest])
        value = near.user_attrs["metrics"][closest]
        shown = (
            f"storage {value / 8192:.3f} KiB"
            if closest.startswith("storage")
            else f"{closest.replace('_', ' ')} {value:.4f}"
        )
        raise NoTrialError(
            f"no completed trial of study {name!r} has {bound} "
            f"(closest: trial {near.number} with {shown})"
        )
    best = min(chosen, key=lambda t: rank(t.user_attrs["metrics"]))
    return best, f"best of {len(chosen)} completed trials with {bound}"


# --- the settings document ---


def settings_document(
    opened: OpenedStudy, trial: optuna.trial.FrozenTrial, chosen_by: str
) -> dict[str, Any]:
    """Everything needed to apply the trial's settings once, as plain data."""
    config, layers = opened.config, opened.layers
    original = settings_from_params(trial.params, config, layers)
    resolved = config.resolved_dict()
    metrics = trial.user_attrs["metrics"]
    doc = {
        "format": FORMAT,
        "study": config.name,
        "trial": trial.number,
        "chosen_by": chosen_by,
        "metrics": {k: _plain(metrics[k]) for k in EXPORTED_METRICS if k in metrics},
        # the input normalisation the trial's model expects (also in its packed file's header)
        "normalisation": trial.user_attrs.get("normalisation"),
        "layers": _layer_settings(original),
        "pipeline": _pipeline_with_knobs(resolved["pipeline"], config, layers, trial.params),
        "params": {k: _plain(v) for k, v in trial.params.items()},
    }
    for key in ("seed", "model", "dataset", "device", "dense"):
        doc[key] = resolved[key]
    replayed, replayed_layers = settings_config(doc, source="export")
    if settings_from_params({}, replayed, replayed_layers) != original:
        raise ConfigError(
            f"trial {trial.number}: its settings do not survive export "
            "unchanged; please report this as a bug"
        )
    return doc


def _layer_settings(settings: TrialSettings) -> dict[str, dict[str, Any]]:
    out = {}
    for name, lp in settings.plan.layers.items():
        entry: dict[str, Any] = {"keep": 1.0 if lp.keep is None else lp.keep}
        if lp.clusters is not None:
            entry["clusters"] = lp.clusters
        else:
            entry["bits"] = lp.bits
        if lp.structured:
            entry["structured"] = True
        out[name] = entry
    return out


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
            if out.get(stage) is None:
                continue
            *path, last = field.split(".")
            node = out[stage]
            for part in path:
                node = node[part]
            node[last] = _plain(value)
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
    sections = ("layers", "pipeline", "model", "dataset", "dense", "normalisation")
    flow = None if key in sections and isinstance(value, Mapping) else False
    return yaml.safe_dump({key: value}, sort_keys=False, width=120, default_flow_style=flow)


def read_settings(path: Path) -> tuple[StudyConfig, list[str], dict[str, Any]]:
    """Read and validate a settings file; returns its fixed study, layers and the document.

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
    return config, layers, doc


def settings_config(doc: Mapping[str, Any], source: str) -> tuple[StudyConfig, list[str]]:
    """The study a settings document describes: its layers fixed, nothing searched."""
    for key in ("study", "layers", "pipeline", "model", "dataset"):
        if key not in doc:
            raise ConfigError(f"{source}: {key}: required field is missing")
    layers = doc["layers"]
    if not isinstance(layers, dict) or not layers:
        raise ConfigError(f"{source}: layers: must map each layer to its settings")
    study = {
        "name": doc["study"],
        "seed": doc.get("seed", 0),
        "model": doc["model"],
        "dataset": doc["dataset"],
        "device": doc.get("device", "cpu"),
        "dense": doc.get("dense", {}),
        "layers": list(layers),
        "pipeline": doc["pipeline"],
        "search": {"keep": 1.0, "bits": None, "layers": layers},
        "budget": {"trials": 1},
    }
    try:
        config = StudyConfig.model_validate(study)
    except ValidationError as exc:
        raise ConfigError(report_errors(source, exc, rename={"search.layers": "layers"})) from None
    names = list(layers)
    try:
        check_layers(config, names)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config, names


# --- applying settings once ---


@dataclass(frozen=True)
class Reproduction:
    """The result of applying settings once: the pipeline's figures, the compressed model and
    its packed file's bytes (the model rebuilds from them alone)."""

    result: PipelineResult
    metrics: dict[str, float]
    model: nn.Module
    packed: bytes
    info: PackInfo


def reproduce(
    config: StudyConfig,
    layers: list[str],
    *,
    cache_dir: Path,
    device: str | None = None,
    on_epoch: Callable[[str, int, float], None] | None = None,
) -> Reproduction:
    """Run the fixed study's pipeline once from its (cached) dense model, like a trial does.

    The result's ``dense`` stage reports the seconds spent getting the dense model (training
    it, or reading the cache or checkpoint).
    """
    if device is not None:
        config = config.model_copy(update={"device": device})
    check_device(config.device, "--device" if device is not None else "device")
    d = config.dataset
    data = load_dataset(
        d.name,
        val_fraction=d.val_fraction,
        seed=config.seed,
        root=d.root,
        download=d.download,
        limit_train=d.limit_train,
        num_classes=d.num_classes,
        normalise=d.normalise,
    )
    check_checkpoint(config, data)
    dense = dense_model(config, data, cache_dir, layers)
    settings = settings_from_params({}, config, layers)
    model = build_model(config, data)
    model.load_state_dict(dense.state)
    result = run_pipeline(
        model,
        data,
        settings.plan,
        settings.pipeline,
        layer_patterns=list(layers),
        device=config.device,
        hooks=PipelineHooks(on_epoch=on_epoch),
    )
    first, *rest = result.stages
    result = dataclasses.replace(
        result, stages=(dataclasses.replace(first, seconds=dense.seconds), *rest)
    )
    model = model.to(torch.device("cpu"))
    meta = packed_meta(config, data, result)
    packed, info = encode_model(model, layers, settings.pipeline.index_format, meta)
    metrics = {
        k: float(v)
        for k, v in trial_metrics(result, dense, info).items()
        if isinstance(v, int | float) and math.isfinite(float(v))
    }
    return Reproduction(result, metrics, model, packed, info)
