"""Datasets by name as in-memory tensors, with explicit seeded train/validation/test splits.

Every dataset is small enough to live in memory, so training loops slice batches straight out of
tensors (:func:`batches`) instead of going through a ``DataLoader``. The same
``(name, seed, val_fraction)`` always gives bitwise identical splits, which keeps the trials of a
study comparable. Example::

    splits = load_dataset("digits", seed=1)
    for xb, yb in batches(splits.x_train, splits.y_train, 64, shuffle=True):
        ...
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import AdmmSearchError, ConfigError, DatasetError, UserCodeError, quote
from .normalise import Normalisation
from .registry import Registry, import_object, one_line

__all__ = [
    "DATASETS",
    "SYSTEM_FASHION_DIR",
    "DataSplits",
    "RawData",
    "batches",
    "check_arrays",
    "load_dataset",
]

#: Where the Debian package ``dataset-fashion-mnist`` puts its files.
SYSTEM_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_KEYS = ("x_train", "y_train", "x_test", "y_test")
_TENSOR_FIELDS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_AUGMENTS = ("crop-flip",)
_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Train/validation/test tensors of one dataset, as the model sees them.

    ``x_*`` are float32 ``(N, C, H, W)`` (or ``(N, D)`` for flat vectors), standardised by
    ``normalisation`` (the training split's per-channel mean and std) or, when it is None,
    exactly as given; ``y_*`` are int64 class indices. ``augment`` names the training
    augmentation :func:`batches` should apply (``"crop-flip"`` or None). A model trained on
    these splits predicts raw inputs ``x`` as ``model(normalisation.apply(x))``.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    augment: str | None = None
    normalisation: Normalisation | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)``; what models are built for."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: str | torch.device) -> DataSplits:
        """Return a copy with every tensor on ``device`` (e.g. to train on a GPU)."""
        moved = {field: getattr(self, field).to(device) for field in _TENSOR_FIELDS}
        return dataclasses.replace(self, **moved)


@dataclass(frozen=True, eq=False)
class RawData:
    """Unnormalised train and test tensors as a registered loader returns them."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    augment: str | None = None


#: Dataset loaders by name; each is called as ``loader(root=..., download=...)`` -> RawData.
DATASETS: Registry[RawData] = Registry("dataset")


def load_dataset(
    name: str,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    root: str | Path | None = None,
    download: bool = True,
    limit_train: int | None = None,
    num_classes: int | None = None,
    normalise: bool = True,
) -> DataSplits:
    """Load a dataset by name and split off a seeded validation set from its training data.

    The data is checked as it is loaded, before anything trains on it: every value finite,
    labels integers in ``0 .. num_classes - 1``, images channels-first, enough samples for a
    non-empty validation split (when ``val_fraction > 0``).

    Args:
        name: a registered name (``digits``, ``fashion-mnist``, ``mnist``, ``cifar10``), a path
            ending in ``.npz`` (or ``npz:PATH``) holding x_train, y_train, x_test, y_test, or
            ``module:function`` returning a DataSplits or such arrays (dict or 4-tuple).
        val_fraction: share of the training data held out for validation, in [0, 1).
        seed: seeds the validation split, so trials compare on the same data.
        root: data folder; defaults to ``$ADMMSEARCH_DATA`` or ``~/.cache/admmsearch/data``.
        download: whether torchvision may download missing files.
        limit_train: keep only the first n training samples (after the seeded shuffle).
        num_classes: the class count (the model's outputs); None takes the largest label + 1,
            provided most of those classes occur (one stray label of 10^6 is refused).
        normalise: standardise every split with the training split's per-channel mean and std
            (recorded in ``DataSplits.normalisation``); False takes the arrays as given. A
            ``module:function`` returning a DataSplits is always taken as given.

    Raises:
        ConfigError: ``val_fraction``, ``limit_train`` or ``num_classes`` out of range.
        DatasetError: the data is missing or malformed (non-finite values, labels out of
            range, channels-last images, too few samples); the message names the file or
            loader and says how to fix it.
        RegistryError: unknown name (the message lists the known ones), or user code that
            cannot be imported.
        UserCodeError: a ``module:function`` loader is not callable or raised.
    """
    _check_options(val_fraction, limit_train)
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ConfigError(
            f"num_classes must be a positive integer or None, got {quote(num_classes)}"
        )
    path = Path(root).expanduser() if root is not None else None
    raw = _load_raw(name, path, download)
    if isinstance(raw, DataSplits):
        _check_splits(name, raw)
        if limit_train is not None:
            raw = dataclasses.replace(
                raw, x_train=raw.x_train[:limit_train], y_train=raw.y_train[:limit_train]
            )
        splits = raw
    else:
        splits = _split_and_normalise(name, raw, val_fraction, seed, limit_train, normalise)
        if val_fraction > 0 and len(splits.y_val) == 0:
            raise DatasetError(
                f"dataset {quote(name)}: {len(raw.y_train)} training sample(s) are too few for "
                f"val_fraction {val_fraction}: the validation split would be empty; give more "
                "training samples or a larger val_fraction"
            )
    return dataclasses.replace(splits, num_classes=_class_count(name, splits, num_classes))


def batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    augment: str | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)`` mini-batches covering every sample once; the last may be smaller.

    The permutation (when ``shuffle``) and the augmentation draw from the CPU ``generator``, so a
    seeded generator gives the same epoch every time. ``augment="crop-flip"`` pads by 4 zero
    pixels, crops back at a random offset and flips half the images horizontally, vectorised
    over the batch.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {quote(batch_size)}")
    if len(x) != len(y):
        raise ConfigError(f"x has {len(x)} samples but y has {len(y)}")
    if augment is not None and (augment not in _AUGMENTS or x.dim() != 4):
        raise ConfigError(f"augment must be one of {_AUGMENTS} for (N, C, H, W) data or None")
    order = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
    order = order.to(x.device)

    def generate() -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            xb = _crop_flip(x[index], generator) if augment else x[index]
            yield xb, y[index]

    return generate()


def _crop_flip(x: Tensor, generator: torch.Generator | None, pad: int = 4) -> Tensor:
    """Random crop after zero padding plus random horizontal flip, as one gather per batch."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # reading columns backwards = flip
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def _check_options(val_fraction: float, limit_train: int | None) -> None:
    number = isinstance(val_fraction, (int, float)) and not isinstance(val_fraction, bool)
    if not number or not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {quote(val_fraction)}")
    if limit_train is not None and (not isinstance(limit_train, int) or limit_train < 1):
        raise ConfigError(
            f"limit_train must be a positive integer or None, got {quote(limit_train)}"
        )


def _load_raw(name: str, root: Path | None, download: bool) -> RawData | DataSplits:
    if name.endswith(".npz") or name.startswith("npz:"):
        return _load_npz(Path(name.removeprefix("npz:")).expanduser())
    if ":" in name and name not in DATASETS:
        return _load_from_function(name)
    return DATASETS.get(name)(root=root, download=download)


def _split_and_normalise(
    name: str,
    raw: RawData,
    val_fraction: float,
    seed: int,
    limit_train: int | None,
    normalise: bool = True,
) -> DataSplits:
    order = torch.randperm(len(raw.x_train), generator=torch.Generator().manual_seed(seed))
    n_val = round(val_fraction * len(order))
    val_index, train_index = order[:n_val], order[n_val:]
    if limit_train is not None:
        train_index = train_index[:limit_train]
    if len(train_index) == 0:
        raise ConfigError(
            f"val_fraction={val_fraction} leaves no training samples in {quote(name)}"
        )
    x_train = raw.x_train[train_index]  # indexing copies, so in-place ops below are safe
    x_val, x_test = raw.x_train[val_index], raw.x_test.clone()
    norm = Normalisation.fit(x_train) if normalise else None
    if norm is not None:
        for x in (x_train, x_val, x_test):
            norm.apply_(x)
    num_classes = int(max(raw.y_train.max(), raw.y_test.max())) + 1
    return DataSplits(
        name=name,
        x_train=x_train,
        y_train=raw.y_train[train_index],
        x_val=x_val,
        y_val=raw.y_train[val_index],
        x_test=x_test,
        y_test=raw.y_test,
        num_classes=num_classes,
        augment=raw.augment,
        normalisation=norm,
    )


def _from_arrays(source: str, arrays: Mapping[str, object]) -> RawData:
    """Validate user arrays and turn them into tensors; errors name ``source`` and the key."""
    missing = [key for key in _KEYS if key not in arrays]
    if missing:
        raise DatasetError(f"{source}: missing array(s) {', '.join(missing)}; need {_KEYS}")
    x_train = _images(source, "x_train", arrays["x_train"])
    x_test = _images(source, "x_test", arrays["x_test"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(
            f"{source}: x_train samples {tuple(x_train.shape[1:])} and x_test "
            f"samples {tuple(x_test.shape[1:])} differ in shape"
        )
    y_train = _labels(source, "y_train", arrays["y_train"], len(x_train))
    y_test = _labels(source, "y_test", arrays["y_test"], len(x_test))
    return RawData(x_train, y_train, x_test, y_test)


def _images(source: str, key: str, value: object) -> Tensor:
    array = np.asarray(value)
    if array.dtype.kind not in "buif" or array.ndim not in (2, 3, 4) or len(array) == 0:
        raise DatasetError(
            f"{source}: {key} must be a non-empty numeric (N, D), (N, H, W) or "
            f"(N, C, H, W) array, got {array.dtype} {array.shape}"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise DatasetError(
            f"{source}: {key} has {bad} NaN or infinite value(s); clean or drop those samples"
        )
    if array.ndim == 4 and array.shape[3] in (1, 3, 4) and min(array.shape[1:3]) > 4:
        raise DatasetError(
            f"{source}: {key} has shape {array.shape}, which looks channels-last (N, H, W, C); "
            f"admmsearch takes (N, C, H, W): pass {key}.transpose(0, 3, 1, 2)"
        )
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not torch.isfinite(tensor).all():  # finite in float64, too large for float32
        raise DatasetError(f"{source}: {key} has values too large for float32")
    return tensor.unsqueeze(1) if tensor.dim() == 3 else tensor


def _labels(source: str, key: str, value: object, count: int) -> Tensor:
    array = np.asarray(value)
    if array.dtype.kind not in "iu" or array.shape != (count,):
        raise DatasetError(
            f"{source}: {key} must be {count} integer labels, got {array.dtype} {array.shape}"
        )
    if (array < 0).any():
        raise DatasetError(f"{source}: {key} has negative labels; use 0..num_classes-1")
    return torch.from_numpy(array.astype(np.int64))


def check_arrays(
    source: str,
    x: object,
    y: object,
    keys: tuple[str, str] = ("x", "y"),
    num_classes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Inputs and labels from a user's file, checked as training data is: numeric, finite,
    channels-first inputs and integer labels, one per input, in ``0 .. num_classes - 1``.

    Args:
        source: the file, for messages.
        keys: the arrays' names in the file (``x_test``, ``y_test``), for messages.
        num_classes: the model's class count, if known.

    Returns:
        The inputs as float32 ``(N, C, H, W)`` (or ``(N, D)``), the labels as int64 ``(N,)``.

    Raises:
        DatasetError: one line naming ``source``, the array and what is wrong.
    """
    inputs = _images(source, keys[0], x)
    labels = _labels(source, keys[1], y, len(inputs))
    if num_classes is not None and len(labels) and int(labels.max()) >= num_classes:
        raise DatasetError(
            f"{source}: {keys[1]} has label {int(labels.max())}, outside 0..{num_classes - 1} "
            f"(the model's {num_classes} classes)"
        )
    return inputs, labels


def _load_npz(path: Path) -> RawData:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise DatasetError(f"dataset file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read dataset file {path} as .npz: {exc}") from exc
    return _from_arrays(str(path), arrays)


def _load_from_function(path: str) -> RawData | DataSplits:
    loader = import_object(path, "dataset")
    if not callable(loader):
        raise UserCodeError(
            f"dataset {quote(path)} is a {type(loader).__name__}, not a function to call"
        )
    try:
        result = loader()
    except AdmmSearchError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code: any failure is named in one line
        raise UserCodeError(f"dataset {quote(path)} raised {one_line(exc)}") from exc
    if isinstance(result, DataSplits):
        return result
    if isinstance(result, Sequence) and len(result) == 4:
        result = dict(zip(_KEYS, result, strict=True))
    if not isinstance(result, Mapping):
        raise UserCodeError(
            f"dataset {quote(path)} must return a DataSplits, a dict with "
            f"{_KEYS} or a 4-tuple of them, got {type(result).__name__}"
        )
    return _from_arrays(f"dataset {quote(path)}", result)


def _check_splits(name: str, splits: DataSplits) -> None:
    """A ready DataSplits from user code: finite inputs, labels within its ``num_classes``."""
    for field in _TENSOR_FIELDS:
        tensor = getattr(splits, field)
        if not isinstance(tensor, Tensor):
            raise DatasetError(f"dataset {quote(name)}: DataSplits.{field} is not a tensor")
        if field.startswith("x") and tensor.is_floating_point() and not tensor.isfinite().all():
            raise DatasetError(
                f"dataset {quote(name)}: DataSplits.{field} has NaN or infinite values"
            )
        if field.startswith("y") and len(tensor) and not 0 <= int(tensor.min()):
            raise DatasetError(f"dataset {quote(name)}: DataSplits.{field} has negative labels")
        if field.startswith("y") and len(tensor) and int(tensor.max()) >= splits.num_classes:
            raise DatasetError(
                f"dataset {quote(name)}: DataSplits.{field} has label {int(tensor.max())}, "
                f"outside 0..{splits.num_classes - 1} (its num_classes)"
            )
    for part in ("train", "val", "test"):
        x, y = getattr(splits, f"x_{part}"), getattr(splits, f"y_{part}")
        if len(x) != len(y):
            raise DatasetError(
                f"dataset {quote(name)}: DataSplits.x_{part} has {len(x)} samples but "
                f"y_{part} has {len(y)}"
            )


def _class_count(name: str, splits: DataSplits, num_classes: int | None) -> int:
    """The class count: ``num_classes`` if given (every label below it), else the largest
    label + 1, refused when most of those classes have no sample (a stray label).

    Raises:
        DatasetError: a label is outside ``0 .. num_classes - 1``, a stray label implies
            classes that mostly never occur, or the training labels hold a single class.
    """
    _check_two_classes(name, splits.y_train)
    labels = [t for t in (splits.y_train, splits.y_val, splits.y_test) if len(t)]
    top = max(int(t.max()) for t in labels) if labels else 0
    if num_classes is not None:
        if top >= num_classes:
            raise DatasetError(
                f"dataset {quote(name)}: label {top} is outside 0..{num_classes - 1} "
                f"(num_classes is {num_classes}); fix the labels or raise num_classes"
            )
        return num_classes
    implied = max(top + 1, splits.num_classes)
    present = int(torch.cat(labels).unique().numel()) if labels else 0
    if present * 2 < implied:
        raise DatasetError(
            f"dataset {quote(name)}: labels go up to {top}, so {implied} classes, but only "
            f"{present} of them occur; labels must be 0..num_classes-1 (a stray label?). If "
            "classes without samples are meant, set dataset.num_classes"
        )
    return implied


def _check_two_classes(name: str, y_train: Tensor) -> None:
    """A classifier needs two classes to tell apart; with one, the dense model scores 1.0 and
    every trial would collapse to "chance level"."""
    present = y_train.unique()
    if len(y_train) and present.numel() < 2:
        raise DatasetError(
            f"dataset {quote(name)}: y_train holds a single class ({int(present[0])}); a "
            "classifier needs at least 2"
        )


def _cache_root(root: Path | None) -> Path:
    if root is not None:
        return root
    env = os.environ.get("ADMMSEARCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "admmsearch" / "data"


def _torchvision_raw(
    name: str, root: Path | None, download: bool, searched: Sequence[Path] = ()
) -> RawData:
    """Load a torchvision dataset into memory; any failure becomes a helpful DatasetError."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, _TORCHVISION[name])
    cache = _cache_root(root)
    try:
        train = cls(root=str(cache), train=True, download=download)
        test = cls(root=str(cache), train=False, download=download)
    except Exception as exc:  # offline, missing or corrupt files: all mean "get the data"
        raise DatasetError(_missing_message(name, cache, download, searched, exc)) from exc
    x_train, x_test = np.asarray(train.data), np.asarray(test.data)
    if name == "cifar10":  # torchvision keeps CIFAR as (N, H, W, C)
        x_train, x_test = x_train.transpose(0, 3, 1, 2), x_test.transpose(0, 3, 1, 2)
    arrays = dict(zip(_KEYS, (x_train, train.targets, x_test, test.targets), strict=True))
    raw = _from_arrays(f"torchvision {cls.__name__} under {cache}", arrays)
    return dataclasses.replace(raw, augment="crop-flip" if name == "cifar10" else None)


def _missing_message(
    name: str, cache: Path, download: bool, searched: Sequence[Path], exc: Exception
) -> str:
    looked = ", ".join(str(p) for p in [*searched, cache])
    ways = [
        f"run once with internet access and download=True (files go to {cache})",
        "set ADMMSEARCH_DATA (or root) to a folder that already holds them",
    ]
    if name == "fashion-mnist":
        ways.insert(0, "apt-get install dataset-fashion-mnist")
    return (
        f"dataset {quote(name)} not found (looked in {looked}; download={download}; "
        f"{type(exc).__name__}: {exc}). To get it: " + "; or ".join(ways)
    )


def _fashion_candidates(root: Path | None) -> list[Path]:
    folders = [root, root / "fashion-mnist"] if root is not None else []
    if env := os.environ.get("ADMMSEARCH_DATA"):
        folders.append(Path(env).expanduser() / "fashion-mnist")
    folders += [SYSTEM_FASHION_DIR, _cache_root(root) / "FashionMNIST" / "raw"]
    return list(dict.fromkeys(folders))


def _find_idx_files(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in _IDX_FILES.items():
        names = [folder / f"{stem}.gz", folder / stem]
        found[key] = next((path for path in names if path.is_file()), None)
    return found if all(found.values()) else None  # type: ignore[return-value]


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an ``ndim``-dimensional IDX file (the MNIST format, maybe gzipped) into numpy."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES or data[3] != ndim:
        magic = data[:4].hex() or "missing"
        raise DatasetError(f"{path}: bad IDX magic number {magic} (want a {ndim}-D IDX array)")
    header = 4 + 4 * data[3]
    shape = tuple(int.from_bytes(data[i : i + 4], "big") for i in range(4, header, 4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    if len(data) != header + math.prod(shape) * dtype.itemsize:
        raise DatasetError(
            f"{path}: IDX header says shape {shape} but the file has "
            f"{len(data)} bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape)


@DATASETS.register("fashion-mnist")
def _fashion_mnist(root: Path | None, download: bool) -> RawData:
    candidates = _fashion_candidates(root)
    for folder in candidates:
        if files := _find_idx_files(folder):
            return _from_arrays(
                str(folder), {k: _read_idx(p, 3 if k[0] == "x" else 1) for k, p in files.items()}
            )
    return _torchvision_raw("fashion-mnist", root, download, searched=candidates)


@DATASETS.register("mnist")
def _mnist(root: Path | None, download: bool) -> RawData:
    return _torchvision_raw("mnist", root, download)


@DATASETS.register("cifar10")
def _cifar10(root: Path | None, download: bool) -> RawData:
    return _torchvision_raw("cifar10", root, download)


@DATASETS.register("digits")
def _digits(root: Path | None, download: bool) -> RawData:
    """sklearn's 8x8 digits; its test split is fixed (stratified 20 %, seed 0) for all seeds."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    index = np.arange(len(bunch.target))
    train, test = train_test_split(index, test_size=0.2, stratify=bunch.target, random_state=0)
    images = bunch.images.astype(np.float32)[:, None]  # (N, 1, 8, 8), values 0..16
    arrays = (images[train], bunch.target[train], images[test], bunch.target[test])
    return _from_arrays("digits", dict(zip(_KEYS, arrays, strict=True)))
