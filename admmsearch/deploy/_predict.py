"""A packed model rebuilt from its file alone, predicting on raw inputs.

The ``.admm`` header says how to rebuild the network (model name and arguments, class count,
input shape, whether BatchNorm was folded) and which normalisation the model was trained with;
:func:`load_model` rebuilds it, loads the decoded tensors and applies the normalisation to raw
inputs, so the accuracy on the user's own arrays is the one the study reported. Example::

    deployed = load_model("trial-3.admm")
    print(deployed.accuracy(x_test, y_test))    # raw arrays, as in the user's .npz

A model named by ``module:function`` is user code: importing and calling it is only done when
the caller trusts the file (``trust_code=True``, ``--trust-code``). The code is looked for as a
study file's is: on the Python path, beside the ``.admm`` file, then in the current folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..data import check_arrays
from ..errors import AdmmSearchError, DatasetError, PackError
from ..fold import fold_batchnorm, remove_reparametrizations
from ..models import MODELS, create_model
from ..packed import MAX_ENTRIES, ModelMeta, PackedFile, load_state, read_model_file
from ..registry import add_search_dir

__all__ = ["DeployedModel", "as_inputs", "load_model", "read_arrays", "rebuild"]

_ARRAY_KEYS = (("x_test", "y_test"), ("x", "y"))


@dataclass(frozen=True)
class DeployedModel:
    """A packed model rebuilt: the network (eval mode, CPU), what its file said, the file."""

    model: nn.Module
    meta: ModelMeta
    packed: PackedFile

    def logits(self, x: Tensor | np.ndarray, batch_size: int = 1024) -> Tensor:
        """Logits ``(N, classes)`` of raw inputs ``(N, *input_shape)`` (or ``(N, H, W)`` for one
        channel); the recorded normalisation is applied first.

        Raises:
            DatasetError: the inputs' shape does not fit the model.
        """
        x = as_inputs(x, self.meta.input_shape)
        norm = self.meta.normalisation
        out = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                xb = x[start : start + batch_size]
                out.append(self.model(norm.apply(xb) if norm is not None else xb))
        return torch.cat(out) if out else torch.empty(0, self.meta.num_classes)

    def predict(self, x: Tensor | np.ndarray) -> Tensor:
        """Class index per raw input."""
        return self.logits(x).argmax(dim=1)

    def accuracy(self, x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
        """Top-1 accuracy on raw inputs and integer labels, in [0, 1]."""
        labels = torch.as_tensor(np.asarray(y)).long()
        if len(labels) != len(x):
            raise DatasetError(f"{len(x)} inputs but {len(labels)} labels")
        if not len(labels):
            return float("nan")
        return int((self.predict(x) == labels).sum()) / len(labels)  # as train.evaluate


def load_model(
    path: str | Path, *, trust_code: bool = False, max_entries: int = MAX_ENTRIES
) -> DeployedModel:
    """Rebuild the network a packed file describes and load its tensors.

    Raises:
        PackError: the file is damaged or of another version, does not say how to rebuild its
            network, names user code without ``trust_code``, or does not fit the rebuilt
            network.
    """
    packed = read_model_file(path, max_entries)
    model = rebuild(packed.meta, packed.path, trust_code=trust_code)
    load_state(model, packed.state, packed.path)
    return DeployedModel(model.eval(), packed.meta, packed)


def rebuild(meta: ModelMeta, path: str | Path, *, trust_code: bool = False) -> nn.Module:
    """A fresh network as ``meta`` describes it, BatchNorm folded if it was (weights not loaded).

    Raises:
        PackError: as :func:`load_model`, naming ``path``.
    """
    name = meta.model
    if not name or meta.num_classes < 1 or not meta.input_shape:
        raise PackError(
            f"{path} does not say how to rebuild its network (model {name!r}); load it into "
            "your own model with admmsearch.packed._format.unpack_into"
        )
    user_code = ":" in name and not name.startswith("torchvision:") and name not in MODELS
    if user_code and not trust_code:
        raise PackError(
            f"{path} names user code {name!r} to rebuild its network; pass --trust-code "
            "(trust_code=True) if you trust the file and that module"
        )
    if user_code:
        add_search_dir(Path(path).parent)  # beside the file, as for a study file's code
    torch.manual_seed(0)
    try:
        model = create_model(
            name, num_classes=meta.num_classes, input_shape=meta.input_shape, **meta.kwargs
        )
    except AdmmSearchError as exc:
        raise PackError(f"{path}: cannot rebuild its network {name!r}: {exc}") from None
    remove_reparametrizations(model)  # packed: the plain weights they computed
    if meta.folded:
        folding = fold_batchnorm(model)
        if folding.skipped:
            raise PackError(f"{path}: cannot fold BatchNorm in {name!r} again: {folding.skipped}")
    return model.eval()


def read_arrays(
    path: str | Path, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    """Inputs and labels from a ``.npz``: ``x_test``/``y_test`` (a dataset file) or ``x``/``y``,
    checked as training data is (:func:`admmsearch.data.check_arrays`): finite inputs, integer
    labels in ``0 .. num_classes - 1`` (the model's classes, when given).

    Raises:
        DatasetError: the file cannot be read, holds neither pair, or holds data training
            would refuse; one line naming the file.
    """
    x, y, keys = _read_pair(Path(path))
    check_arrays(str(path), x, y, keys, num_classes)
    return x, y, keys


def _read_pair(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            for keys in _ARRAY_KEYS:
                if all(key in archive.files for key in keys):
                    return archive[keys[0]], archive[keys[1]], keys
            found = ", ".join(archive.files) or "nothing"
    except FileNotFoundError:
        raise DatasetError(f"data file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read data file {path} as .npz: {exc}") from None
    raise DatasetError(f"{path} holds {found}; predict needs x_test and y_test (or x and y)")


def as_inputs(x: Tensor | np.ndarray, input_shape: tuple[int, ...]) -> Tensor:
    """Raw inputs as a float32 batch ``(N, *input_shape)``; ``(N, H, W)`` for one channel too.

    Raises:
        DatasetError: not numbers, or a shape that does not fit ``input_shape``.
    """
    array = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x)
    if array.dtype.kind not in "buif":
        raise DatasetError(f"inputs must be numbers, got {array.dtype}")
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if tensor.dim() == len(input_shape) and input_shape[0] == 1:  # (N, H, W): one channel
        tensor = tensor.unsqueeze(1)
    if tuple(tensor.shape[1:]) != tuple(input_shape):
        raise DatasetError(
            f"inputs of shape {tuple(tensor.shape[1:])} do not fit the model, which takes "
            f"{tuple(input_shape)}"
        )
    return tensor
