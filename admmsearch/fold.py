"""BatchNorm folding: each Conv -> BatchNorm pair becomes one convolution with a bias.

In eval mode a BatchNorm after a convolution is an affine map per output channel, so it folds
into the convolution's weight and bias (torch's own ``fuse_conv_bn_weights``):
``w' = w * gamma / sqrt(var + eps)`` per output channel and
``b' = (b - mean) * gamma / sqrt(var + eps) + beta``. The pipeline folds after the dense model
is trained and before compression, so the compressed (and accounted, and packed) network is the
one that is deployed: no float32 BatchNorm is left beside the compressed convolutions.

Pairs are found on the traced graph (``torch.fx``): a BatchNorm whose only input is a
convolution's output, that convolution's output going nowhere else, each module called once.
A model that does not trace folds nothing (:attr:`Folding.skipped` says why).

Example::

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).eval()
    >>> fold_batchnorm(net).pairs
    (('0', '1'),)
    >>> type(net[1]).__name__
    'Identity'
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["Folding", "conv_bn_pairs", "fold_batchnorm"]

_CONVS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class Folding:
    """The ``(conv, batchnorm)`` module names folded, and why none were when tracing failed."""

    pairs: tuple[tuple[str, str], ...] = ()
    skipped: str | None = None


def conv_bn_pairs(model: nn.Module) -> tuple[tuple[str, str], ...]:
    """The foldable ``(conv, batchnorm)`` module names of ``model``, in graph order.

    Raises:
        Exception: whatever ``torch.fx.symbolic_trace`` raises on a model it cannot trace.
    """
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _NORMS):
            continue
        source = node.args[0] if node.args else None
        if not (isinstance(source, fx.Node) and source.op == "call_module"):
            continue
        conv, norm = modules.get(source.target), modules[node.target]
        if not isinstance(conv, _CONVS) or len(source.users) != 1 or len(node.args) != 1:
            continue
        if calls[source.target] == 1 and calls[node.target] == 1 and _foldable(conv, norm):
            pairs.append((str(source.target), str(node.target)))
    return tuple(pairs)


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """Running statistics exist (eval-mode BatchNorm) and the channels match."""
    stats = norm.running_mean is not None and norm.running_var is not None
    return stats and norm.num_features == conv.out_channels


def fold_batchnorm(model: nn.Module) -> Folding:
    """Fold every Conv -> BatchNorm pair of ``model`` in place; the BatchNorms become Identity.

    The convolution gains a bias if it had none. Eval-mode outputs stay equal within float
    rounding. A model that ``torch.fx`` cannot trace is left as it is.
    """
    try:
        pairs = conv_bn_pairs(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: fold nothing
        return Folding((), f"{type(exc).__name__}: {exc}".splitlines()[0])
    with torch.no_grad():
        for conv_name, norm_name in pairs:
            _fold_pair(model, conv_name, norm_name)
    return Folding(pairs)


def _fold_pair(model: nn.Module, conv_name: str, norm_name: str) -> None:
    conv, norm = model.get_submodule(conv_name), model.get_submodule(norm_name)
    weight, bias = fuse_conv_bn_weights(
        conv.weight,
        conv.bias,
        norm.running_mean,
        norm.running_var,
        norm.eps,
        norm.weight,
        norm.bias,
        transpose=isinstance(conv, nn.modules.conv._ConvTransposeNd),
    )
    conv.weight, conv.bias = weight, bias
    parent_name, _, child = norm_name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, nn.Identity())
