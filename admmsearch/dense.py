"""The dense model every trial and worker of a study starts from: trained once and cached.

It is cached as ``dense-<fingerprint>-<data>.pt`` (a state dict) under the fingerprint of the
settings that determine it (:meth:`StudyConfig.fingerprint_dense`) and a digest of the training
data (:func:`data_digest`), or read from ``dense.checkpoint``. The cache folder may be shared
between machines, so nothing read from it is unpickled (:mod:`admmsearch.tensorfile`); a cache
file that does not load, or does not fit the model, is a miss with a
:class:`~admmsearch.tensorfile.CacheWarning` naming it, and is trained again; a bad
``dense.checkpoint`` is an error naming the field and the file.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn

from .config import StudyConfig, dense_settings
from .data import DataSplits
from .errors import ConfigError, DivergenceError
from .fold import Folding, remove_reparametrizations
from .hooks import load_recipe
from .models import create_model
from .packed import ModelMeta, encode_model
from .tensorfile import PICKLED, CacheWarning, load_tensors, save_tensors
from .train import StepHooks, evaluate, fit

__all__ = [
    "DenseModel",
    "DenseProgress",
    "build_model",
    "data_digest",
    "dense_model",
    "packed_meta",
    "read_checkpoint",
]


@dataclass(frozen=True)
class DenseModel:
    """The uncompressed starting point every trial shares.

    Attributes:
        state: the state dict, on the CPU.
        val_accuracy, test_accuracy: top-1 accuracy in [0, 1].
        storage_bits: the dense model's packed file (weights uncompressed), in bits.
        path: the cache file or the checkpoint it came from.
        trained: False when it came from the cache or a checkpoint.
        seconds: wall time spent getting it (training, or reading the file).
    """

    state: dict[str, torch.Tensor]
    val_accuracy: float
    test_accuracy: float
    storage_bits: int
    path: Path
    trained: bool
    seconds: float = 0.0


def build_model(config: StudyConfig, data: DataSplits, *, plain: bool = True) -> nn.Module:
    """The study's model, freshly initialised with the study seed, for ``data``'s shape.

    ``plain``: weight reparametrizations (weight or spectral norm) replaced by plain weights
    (:func:`admmsearch.fold.remove_reparametrizations`), the form the dense model's state is
    kept in and trials compress; False gives the model as written, which the dense model
    trains as and a ``dense.checkpoint`` was saved from.
    """
    torch.manual_seed(config.seed)
    model = create_model(
        config.model.name,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        **config.model.kwargs,
    )
    if plain:
        remove_reparametrizations(model)
    return model


def packed_meta(
    config: StudyConfig, data: DataSplits, folding: Folding | None = None
) -> ModelMeta:
    """What a packed model of this study records to be rebuilt and fed raw inputs."""
    return ModelMeta(
        model=config.model.name,
        kwargs=dict(config.model.kwargs),
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        folded=folding is not None and bool(folding.pairs),
        normalisation=data.normalisation,
    )


#: Called after each epoch of the dense training: (epoch, epochs, mean loss, val accuracy).
DenseProgress = Callable[[int, int, float, float], None]


def dense_model(
    config: StudyConfig,
    data: DataSplits,
    cache_dir: Path,
    layers: list[str],
    on_epoch: DenseProgress | None = None,
) -> DenseModel:
    """Load the checkpoint or the cached dense model, else train it once and cache it;
    ``on_epoch`` follows the training (epoch 1-based, its loss and validation accuracy).

    Workers sharing ``cache_dir`` (one machine, or a network path) train it once: the first
    takes a lock file beside the cache file and trains, the others wait and load its result.
    The file is written to a temporary name and renamed, so even where the file system ignores
    locks, racing workers each end with a whole file and never read a partial one. A cache file
    that does not load is retrained over, with a :class:`CacheWarning`.

    Raises:
        ConfigError: ``dense.checkpoint`` cannot be read or does not fit the model.
        DivergenceError: the dense training diverged; the message names ``dense.train.lr``.
    """
    start = time.perf_counter()
    model = build_model(config, data, plain=False).to(config.device)
    if config.dense.checkpoint:
        path, trained = Path(config.dense.checkpoint), False
        model.load_state_dict(read_checkpoint(path, model))
    else:
        path = cache_dir / f"dense-{config.fingerprint_dense()[:16]}-{data_digest(data)[:8]}.pt"
        trained = _cached_or_trained(model, path, data, config, on_epoch)
    remove_reparametrizations(model)  # the state trials load: plain weights
    d = data.to(config.device)
    _, packed = encode_model(model, layers, meta=packed_meta(config, data))
    return DenseModel(
        {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        evaluate(model, d.x_val, d.y_val),
        evaluate(model, d.x_test, d.y_test),
        8 * packed.file_bytes,
        path,
        trained,
        time.perf_counter() - start,
    )


def _cached_or_trained(
    model: nn.Module,
    path: Path,
    data: DataSplits,
    config: StudyConfig,
    on_epoch: DenseProgress | None = None,
) -> bool:
    """Load the dense cache at ``path`` into ``model``, else train and cache it, under a lock
    file shared with other workers; returns whether it trained."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        state = _cached_state(path, model)
        if state is None:
            _train_dense(model, data, config, on_epoch)
            save_tensors(model.state_dict(), path)
            return True
        model.load_state_dict(state)
        return False


def data_digest(data: DataSplits) -> str:
    """sha256 hex of the training split the dense model learns from (inputs and labels), so
    that a data file changed under the same name does not reuse a stale dense model."""
    digest = hashlib.sha256()
    for tensor in (data.x_train, data.y_train):
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _train_dense(
    model: nn.Module, data: DataSplits, config: StudyConfig, on_epoch: DenseProgress | None
) -> None:
    settings, data = dense_settings(config), data.to(config.device)
    hooks = StepHooks()
    if on_epoch is not None:  # the validation accuracy costs a forward pass; only when followed

        def report(epoch: int, loss: float) -> None:
            accuracy = evaluate(model, data.x_val, data.y_val)
            on_epoch(epoch + 1, settings.epochs, loss, accuracy)

        hooks = StepHooks(on_epoch=report)
    recipe = load_recipe(config.training)
    try:
        fit(
            model,
            data,
            settings,
            seed=config.seed * 1000,
            hooks=hooks,
            recipe=recipe,
            stage="dense",
        )
    except DivergenceError as exc:
        raise DivergenceError(
            f"dense model: training diverged ({exc}) with dense.train.lr {settings.lr:g}; "
            "lower dense.train.lr"
        ) from None


def read_checkpoint(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict in ``dense.checkpoint``, checked against ``model``; nothing unpickled.

    Raises:
        ConfigError: one line naming ``dense.checkpoint`` and the file: missing, empty, not a
            weights file, a pickled module rather than a state dict, or keys and shapes that
            do not fit the model.
    """
    where = f"dense.checkpoint {path}"
    state, why = _read_state(path)
    if why == PICKLED:
        why += (
            " (a whole model saved with torch.save(model)?); save the weights alone: "
            "torch.save(model.state_dict(), PATH)"
        )
    if state is None:
        raise ConfigError(f"{where}: {why}")
    misfit = _misfit(state, model)
    if misfit:
        pruned = any(k.endswith(("_orig", "_mask", ".original")) for k in state)
        fix = (
            "it was saved with pruning still attached: call torch.nn.utils.prune.remove "
            "(or parametrize.remove_parametrizations) before saving the state_dict"
            if pruned
            else "save the state_dict of the model the study builds"
        )
        raise ConfigError(f"{where}: does not fit model {type(model).__name__} ({misfit}); {fix}")
    return state


def _cached_state(path: Path, model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The cached dense state dict, or None when there is none or it is unusable (warned)."""
    if not path.exists():
        return None
    state, why = _read_state(path)
    why = why or _misfit(state, model)
    if why:
        warnings.warn(
            f"dense cache {path}: {why}; training the dense model again", CacheWarning, 2
        )
        return None
    return state


def _read_state(path: Path) -> tuple[dict[str, torch.Tensor] | None, str]:
    """``(state dict, "")``, or ``(None, why it is not one)``."""
    obj, why = load_tensors(path)
    if why:
        return None, why
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        keys = sorted(str(k) for k in obj)[:5] if isinstance(obj, Mapping) else []
        return None, (
            f"holds a {type(obj).__name__}"
            + (f" with keys {', '.join(keys)}" if keys else "")
            + ", not a state_dict (names to tensors); save model.state_dict()"
        )
    return dict(obj), ""


def _misfit(state: Mapping[str, torch.Tensor] | None, model: nn.Module) -> str:
    """How ``state`` does not fit ``model`` (missing or extra keys, shapes), or ""."""
    if state is None:
        return "not a state dict"
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shapes = [
        f"{k} is {tuple(state[k].shape)}, the model's {tuple(v.shape)}"
        for k, v in want.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = [
        f"{label} {_few(names)}"
        for label, names in (("missing", missing), ("unexpected", extra), ("shape of", shapes))
        if names
    ]
    return "; ".join(parts)


def _few(names: list[str], shown: int = 3) -> str:
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
