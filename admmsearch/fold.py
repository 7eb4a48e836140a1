"""Folding: each Conv -> BatchNorm pair becomes one convolution with a bias, and a weight's
reparametrization (weight norm, spectral norm) becomes the plain weight it computes.

In eval mode a BatchNorm after a convolution is an affine map per output channel, so it folds
into the convolution's weight and bias (Ioffe & Szegedy 2015, Algorithm 2, step 11):
``w' = w * gamma / sqrt(var + eps)`` per output channel and
``b' = (b - mean) * gamma / sqrt(var + eps) + beta``. The pipeline folds after the dense model
is trained and before compression, so the compressed (and accounted, and packed) network is the
one that is deployed: no float32 BatchNorm is left beside the compressed convolutions.

Pairs are found on the traced graph (``torch.fx``): a BatchNorm whose only input is a
convolution's output, that convolution's output going nowhere else, each module called once.
A model that does not trace folds nothing (:attr:`Folding.skipped` says why). A transposed
convolution keeps its output channels on axis 1 of its ``(in, out/groups, *kernel)`` weight, in
``groups`` blocks of ``in/groups`` rows: output channel ``g * out/groups + j`` is column ``j`` of
block ``g``, which is how its scale is applied (torch's ``fuse_conv_bn_weights`` takes dim 1 for
the output channels and fails for ``groups > 1``, pytorch/pytorch#180995).

Layers written with ``torch.nn.utils.parametrizations.weight_norm`` / ``spectral_norm`` (or the
older hook-based ``torch.nn.utils.weight_norm`` / ``spectral_norm``) train as written; before
compression :func:`remove_reparametrizations` replaces each by the weight it computes in eval
mode, so that the weight compressed and stored is the one the layer applies.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm, remove_spectral_norm
from torch.nn.utils.weight_norm import WeightNorm, remove_weight_norm

from .tracing import symbolic_trace

__all__ = [
    "Folding",
    "conv_bn_pairs",
    "describe_layers",
    "fold_batchnorm",
    "fold_model",
    "remove_reparametrizations",
]

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
    graph = symbolic_trace(model).graph
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


def fold_model(model: nn.Module, batchnorm: bool) -> Folding:
    """Bring ``model``, in place, to the form that is compressed and packed: reparametrized
    weights made plain (:func:`remove_reparametrizations`), then, where ``batchnorm`` (the
    pipeline's ``fold_batchnorm``), every Conv -> BatchNorm pair folded.

    The pipeline's fold stage calls it on the dense model; on a fresh model of the same
    network it tells beforehand which BatchNorms fold and which modules stay uncompressed
    (:func:`admmsearch.models.uncompressed_layers` after it), as the packed file has them.
    """
    remove_reparametrizations(model)
    return fold_batchnorm(model) if batchnorm else Folding()


def describe_layers(
    folded: Sequence[tuple[str, str]],
    uncompressed: Mapping[str, str],
    skipped: str | None = None,
) -> str:
    """What the packed file holds beside its compressed layers, as people read it: a line
    naming each BatchNorm folded into its convolution (``BatchNorm -> conv``; none: no line),
    a line saying why none was folded where tracing failed (``skipped``), and a line naming
    the modules with a weight stored raw (float32), with their types; biases and buffers are
    always raw.

    Example:
        >>> print(describe_layers([("features.0", "features.1")], {"norm": "BatchNorm1d"}))
        BatchNorm folded into convolutions: features.1 -> features.0
        uncompressed layers (stored raw): norm (BatchNorm1d)
    """
    lines = []
    if folded:
        pairs = ", ".join(f"{norm} -> {conv}" for conv, norm in folded)
        lines.append(f"BatchNorm folded into convolutions: {pairs}")
    if skipped:
        lines.append(f"BatchNorm not folded: the model does not trace ({skipped})")
    names = ", ".join(f"{name or '(model)'} ({kind})" for name, kind in uncompressed.items())
    lines.append(f"uncompressed layers (stored raw): {names or 'none'}")
    return "\n".join(lines)


def _fold_pair(model: nn.Module, conv_name: str, norm_name: str) -> None:
    conv, norm = model.get_submodule(conv_name), model.get_submodule(norm_name)
    scale = norm.running_var.add(norm.eps).rsqrt()
    shift = -norm.running_mean * scale
    if norm.weight is not None:
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    bias = shift if conv.bias is None else conv.bias * scale + shift
    conv.weight = nn.Parameter(_scaled(conv, scale))
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype))
    parent_name, _, child = norm_name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, nn.Identity())


def _scaled(conv: nn.Module, scale: torch.Tensor) -> torch.Tensor:
    """``conv.weight`` with output channel ``c`` multiplied by ``scale[c]``.

    A convolution's weight is ``(out, in/groups, *kernel)``; a transposed one's is
    ``(in, out/groups, *kernel)`` with output channel ``g * out/groups + j`` in column ``j`` of
    row block ``g`` of ``in/groups`` rows.
    """
    w, ones = conv.weight, [1] * (conv.weight.dim() - 2)
    if not isinstance(conv, nn.modules.conv._ConvTransposeNd):
        return w * scale.reshape(-1, 1, *ones)
    groups = conv.groups
    blocks = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
    return (blocks * scale.reshape(groups, 1, -1, *ones)).reshape(w.shape)


def remove_reparametrizations(model: nn.Module) -> tuple[str, ...]:
    """Replace every weight reparametrization of ``model`` by the plain tensor it computes, in
    place: torch's parametrizations (``parametrizations.weight_norm``, ``spectral_norm``, any
    ``parametrize.register_parametrization``) and the hook-based ``weight_norm`` and
    ``spectral_norm``. The tensor is computed in eval mode (spectral norm's power iteration
    does not step), so eval outputs stay equal. Call it before admmsearch's own masks go on.

    Returns:
        The tensors changed, as ``module.tensor`` names.
    """
    training, done = model.training, []
    model.eval()
    with torch.no_grad():
        for name, module in model.named_modules():
            for tensor in _remove_from(module):
                done.append(f"{name}.{tensor}" if name else tensor)
    model.train(training)
    return tuple(done)


def _remove_from(module: nn.Module) -> list[str]:
    removed = []
    for hook in list(module._forward_pre_hooks.values()):
        if isinstance(hook, WeightNorm | SpectralNorm):
            remove = remove_weight_norm if isinstance(hook, WeightNorm) else remove_spectral_norm
            remove(module, hook.name)
            removed.append(hook.name)
    if parametrize.is_parametrized(module):
        for tensor in list(module.parametrizations):
            parametrize.remove_parametrizations(module, tensor, leave_parametrized=True)
            removed.append(tensor)
    return removed
