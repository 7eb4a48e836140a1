"""Checks made before a study starts: everything that can be known to fail is refused before
any study, MLflow run, folder or training is created.

:func:`admmsearch.search.study.prepare` runs them in this order: the stores and the folders a
study writes (:func:`check_stores`: they exist or can be made, take files, do not clash, and
the study's MLflow experiment is not deleted), the device (:func:`check_device`), the data
(loaded and checked by :func:`admmsearch.data.load_dataset`, then :func:`check_splits`;
:func:`check_validation_size` only warns), the model on a batch of that data
(:func:`check_model`), the dense checkpoint (:func:`check_checkpoint`), the constraints
(:func:`check_constraints`) and a study of the same name with another definition
(:mod:`admmsearch.search.reuse`). The study file itself, its layers and its enqueued params
were checked when it was loaded (:func:`admmsearch.config.validate_study`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import sqlalchemy
import torch

from .config import StudyConfig
from .data import DataSplits
from .dense import build_model, packed_meta, read_checkpoint
from .errors import (
    AdmmSearchError,
    AdmmSearchWarning,
    ConfigError,
    DatasetError,
    StoreError,
    UserCodeError,
)
from .fold import fold_batchnorm
from .locations import check_clash, writable_folder
from .packed import smallest_file_bits
from .redact import redact_url
from .registry import one_line
from .tracking import check_experiment

__all__ = [
    "MIN_IMAGES_WITHIN_DROP",
    "SmallValidationWarning",
    "check_checkpoint",
    "check_constraints",
    "check_device",
    "check_model",
    "store_file",
    "check_splits",
    "check_store_folder",
    "check_stores",
    "check_validation_size",
]

#: Validation images a study's ``max_accuracy_drop`` should span at least (else a warning).
MIN_IMAGES_WITHIN_DROP = 10


class SmallValidationWarning(AdmmSearchWarning):
    """The validation split is too small to tell trials apart within the study's constraint."""


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
    file = store_file(url)
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


def store_file(url: str) -> Path | None:
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


def check_validation_size(config: StudyConfig, data: DataSplits) -> None:
    """Warn (:class:`SmallValidationWarning`, one line) when ``constraints.max_accuracy_drop``
    spans fewer than :data:`MIN_IMAGES_WITHIN_DROP` validation images: trials are chosen on
    validation accuracy, and a few images more or less then decide what is feasible.

    Example: 400 validation images and a drop of 0.01 span 4 images (1 point is 4 images).
    """
    drop, n = config.constraints.max_accuracy_drop, len(data.y_val)
    if drop is None or drop * n >= MIN_IMAGES_WITHIN_DROP:
        return
    warnings.warn(
        f"{n} validation images: 1 point is {n / 100:g} images; constraints.max_accuracy_drop "
        f"{drop:g} is {drop * n:g} images, fewer than {MIN_IMAGES_WITHIN_DROP}, so a few "
        f"images decide which trials are feasible; raise dataset.val_fraction (now "
        f"{config.dataset.val_fraction:g}) or give more training samples",
        SmallValidationWarning,
        stacklevel=2,
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
