"""Checks made before a study starts: everything that can be known to fail is refused before
any study, MLflow run, folder or training is created.

:func:`admmsearch.study.prepare` runs them in this order: the stores and the folders a study
writes (:func:`check_stores`: they exist or can be made, take files, do not clash, and the
study's MLflow experiment is not deleted), the device (:func:`check_device`), the data (loaded
and checked by :func:`admmsearch.data.load_dataset`, then :func:`check_splits`), the model on a
batch of that data (:func:`check_model`), the dense checkpoint (:func:`check_checkpoint`), the
constraints (:func:`check_constraints`) and a study of the same name with another definition
(:func:`check_reuse`). The study file itself, its layers and
its enqueued params were checked when it was loaded (:func:`admmsearch.config.validate_study`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import torch
from pydantic import ValidationError

from .cache import build_model, packed_meta, read_checkpoint
from .config import StudyConfig
from .data import DataSplits
from .errors import AdmmSearchError, ConfigError, DatasetError, StoreError, UserCodeError
from .fold import fold_batchnorm
from .locations import check_clash, writable_folder
from .packing import smallest_file_bits
from .record import StudyAttr
from .redact import redact_text, redact_url
from .registry import one_line
from .settings import TrainingHooks
from .tracking import check_experiment
from .workers import StorageLock

__all__ = [
    "DEFINITION",
    "check_checkpoint",
    "check_constraints",
    "check_device",
    "check_model",
    "check_reuse",
    "check_splits",
    "check_store_folder",
    "check_stores",
    "definition_differences",
]

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


def check_device(device: str, field: str = "device") -> None:
    """Refuse a device this machine does not have.

    Raises:
        ConfigError: names ``field``; ``cuda`` without a CUDA device, ``cuda:N`` beyond the
            devices present, or ``mps`` without Apple's Metal backend.
    """
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if count == 0:
            raise ConfigError(f"{field}: {device} asked, but no CUDA device is available here")
        if index >= count:
            raise ConfigError(
                f"{field}: {device} asked, but this machine has {count} CUDA device(s)"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{field}: mps asked, but Apple's Metal backend is not available here")


def check_store_folder(url: str, what: str) -> None:
    """An SQLite database or a file store must be in a folder that exists: admmsearch does not
    create folders for stores (a typo would scatter them, even at the file system root).

    Args:
        url: an Optuna storage URL or MLflow tracking URI; servers are not checked here.
        what: ``"storage"`` or ``"tracking URI"``, for the message.

    Raises:
        StoreError: names the store (password masked) and the missing folder.
    """
    file = _store_file(url)
    if file is None:
        return
    folder = file.expanduser().parent
    if not folder.is_dir():
        raise StoreError(
            f"{what} {redact_url(url)}: folder {folder} does not exist; create it first, or fix "
            "the path (admmsearch does not create folders for stores)"
        )
    _check_writable_store(url, what, file.expanduser())


def _check_writable_store(url: str, what: str, file: Path) -> None:
    """The store's folder takes new files (SQLite writes its journal beside the database),
    the file itself can be written, and so can an SQLite tracking store's ``artifacts/``."""
    folders = [file.parent]
    if what.startswith("tracking") and (file.parent / "artifacts").is_dir():
        folders.append(file.parent / "artifacts")
    for folder in folders:
        if why := writable_folder(folder):
            raise StoreError(f"{what} {redact_url(url)}: {why}")
    if file.is_file() and not os.access(file, os.W_OK):
        raise StoreError(f"{what} {redact_url(url)}: {file} is read-only")


def check_stores(
    config: StudyConfig, storage: str, tracking_uri: str | None, folders: Mapping[str, Path]
) -> None:
    """Everything a study writes, before anything is: the Optuna storage and the MLflow store
    (their folders exist and take files, :func:`check_store_folder`; they are not one database,
    :func:`admmsearch.locations.check_clash`; the study's experiment is not deleted,
    :func:`admmsearch.tracking.check_experiment`), and ``folders`` admmsearch makes (what each
    is, e.g. ``"cache folder .admmsearch/cache (--cache-dir)"``, to the folder).

    Raises:
        StoreError: names the store or folder, the setting and the system's reason.
        TrackingError: the study's MLflow experiment is deleted.
    """
    check_store_folder(storage, "storage")
    tracking = tracking_uri or config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if tracking:
        check_store_folder(tracking, "tracking URI")
    else:  # the default, mlruns/ in the current folder, is made when needed
        tracking = f"sqlite:///{Path('mlruns').resolve() / 'mlflow.db'}"
        default = Path("mlruns").resolve()
        if why := writable_folder(default if default.is_dir() else default.parent):
            raise StoreError(f"tracking URI {tracking} (the default): {why}")
        if default.is_dir():
            _check_writable_store(tracking, "tracking URI (the default)", default / "mlflow.db")
    check_clash(storage, tracking)
    for what, folder in folders.items():
        if why := writable_folder(folder):
            raise StoreError(f"{what}: {why}")
    check_experiment(tracking, config.name)


def _store_file(url: str) -> Path | None:
    """The file (or store folder) a URL points at, or None for servers and in-memory stores."""
    if url.startswith("sqlite:"):
        try:
            database = sqlalchemy.engine.make_url(url).database or ""
        except sqlalchemy.exc.ArgumentError:
            return None  # the storage's own check names a malformed URL
        if database in ("", ":memory:") or database.startswith("file:"):
            return None
        return Path(database)
    if url.startswith("file:"):
        return Path(url.removeprefix("file://").removeprefix("file:"))
    return None if "://" in url else Path(url)


def check_splits(config: StudyConfig, data: DataSplits) -> None:
    """Every trial is scored on the validation split: it must not be empty.

    Raises:
        DatasetError: names ``dataset`` and the split sizes.
    """
    if len(data.y_val) == 0:
        raise DatasetError(
            f"dataset {config.dataset.name!r}: the validation split is empty "
            f"({len(data.y_train)} training samples, val_fraction "
            f"{config.dataset.val_fraction}); trials are scored on it: raise "
            "dataset.val_fraction or give more samples"
        )


def check_model(config: StudyConfig, data: DataSplits) -> None:
    """Run the model on a batch of two training samples, on the CPU, before training it.

    Raises:
        UserCodeError: the forward pass raised, or its output is not ``(2, num_classes)``;
            names ``model`` and the batch shape.
        ConfigError, RegistryError: the model cannot be built.
    """
    with torch.random.fork_rng(devices=[]):
        model = build_model(config, data)
    batch = data.x_train[:2]
    name, shape = config.model.name, tuple(batch.shape)
    try:
        with torch.no_grad():
            out = model.eval()(batch)
    except AdmmSearchError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code: any failure is named in one line
        raise UserCodeError(
            f"model {name!r} fails on a batch of shape {shape} from dataset "
            f"{config.dataset.name!r}: {one_line(exc)}"
        ) from exc
    want = (len(batch), data.num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserCodeError(
            f"model {name!r} returns {got} for a batch of shape {shape}; it must return "
            f"class scores of shape {want} ({data.num_classes} classes)"
        )


def check_constraints(config: StudyConfig, data: DataSplits, layers: Sequence[str]) -> None:
    """A ``constraints.max_storage_bits`` below the smallest packed file the study's model can
    have (:func:`admmsearch.packing.smallest_file_bits`: header, uncompressed tensors, one
    value per compressed layer; after BatchNorm folding where the pipeline folds) is refused
    before training: no trial could ever be feasible.

    Raises:
        ConfigError: names ``constraints.max_storage_bits``, the bound and what makes it up.
    """
    limit = config.constraints.max_storage_bits
    if limit is None:
        return
    with torch.random.fork_rng(devices=[]):
        model = build_model(config, data).eval()
    if config.pipeline.fold_batchnorm:
        fold_batchnorm(model)
    smallest = smallest_file_bits(model, layers, packed_meta(config, data))
    if limit < smallest:
        raise ConfigError(
            f"constraints.max_storage_bits: {limit} is below the smallest packed file this "
            f"study's model can have ({smallest} bits: the header, the tensors stored "
            f"uncompressed, and one 32-bit value for each of its {len(layers)} compressed "
            "layers), so no trial could meet it; raise it, or set it to null"
        )


def check_checkpoint(config: StudyConfig, data: DataSplits) -> None:
    """A ``dense.checkpoint`` must be a state dict that fits the model (read without
    unpickling).

    Raises:
        ConfigError: names ``dense.checkpoint``, the file and what is wrong with it.
    """
    if config.dense.checkpoint:
        with torch.random.fork_rng(devices=[]):
            model = build_model(config, data, plain=False)
        read_checkpoint(Path(config.dense.checkpoint), model)


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
    file = _store_file(storage) if storage.startswith("sqlite:") else None
    if file is not None and not file.expanduser().exists():
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with nullcontext() if file is not None else StorageLock(storage):
            return optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # no study of that name
        return None
    except (ImportError, sqlalchemy.exc.SQLAlchemyError) as exc:
        reason = redact_text(one_line(exc), storage)
        raise StoreError(f"storage {redact_url(storage)}: cannot read it ({reason})") from None
