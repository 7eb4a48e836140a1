"""Reference networks by name, and which of their layers ADMM may compress.

Configs name a model (``create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))``), take
any torchvision classifier (``"torchvision:resnet18"``) or point at user code
(``"mypkg.nets:build"``). :func:`compressible_layers` picks the layers whose weights the
constraints act on, by qualified module name: by default every convolution (plain, grouped,
depthwise, transposed; 1-D, 2-D, 3-D) and every linear layer; with glob patterns, any module with
a ``weight`` tensor they select. :func:`uncompressed_layers` lists the modules with a weight that
stay uncompressed, and :func:`output_channels` says where a layer's output channels lie in its
weight (transposed convolutions keep them on axis 1).
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import AdmmSearchError, ConfigError, LayerError, RegistryError, UserCodeError, quote
from .registry import Registry, import_object, one_line

__all__ = [
    "COMPRESSIBLE_TYPES",
    "MODELS",
    "compressible_layers",
    "create_model",
    "output_channels",
    "uncompressed_layers",
]

#: Module types whose ``weight`` ADMM compresses by default (subclasses included; grouped and
#: depthwise convolutions are ``Conv*d`` with ``groups > 1``).
COMPRESSIBLE_TYPES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_VGG16_CFG = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)

#: Model factories by name; each is called as ``factory(num_classes=..., input_shape=...)``.
MODELS: Registry[nn.Module] = Registry("model")


def create_model(
    name: str, *, num_classes: int, input_shape: tuple[int, ...], **kwargs: object
) -> nn.Module:
    """Build a freshly initialised model by name (seed with ``torch.manual_seed`` first).

    Args:
        name: a registered name (see ``MODELS.names()``), ``torchvision:<name>`` for a
            torchvision classifier, or ``module:function`` for user code; the function gets
            whichever of ``num_classes``, ``input_shape`` and ``in_channels`` it accepts.
        num_classes: size of the output layer.
        input_shape: shape of one sample, e.g. ``(1, 28, 28)``.
        **kwargs: extra arguments for the factory.

    Raises:
        ConfigError: bad ``num_classes``/``input_shape``/kwargs.
        RegistryError: unknown name (the message lists the known ones), or user code that
            cannot be imported.
        UserCodeError: the factory is not callable, raised, or returned no ``nn.Module``; the
            message names ``model``, the name and the factory's own message.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {quote(num_classes)}")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ConfigError(f"input_shape must be positive integers like (1, 28, 28), got {shape}")
    if name.startswith("torchvision:"):
        return _torchvision_model(name.removeprefix("torchvision:"), num_classes, kwargs)
    args = {"num_classes": num_classes, "input_shape": shape, "in_channels": shape[0]}
    if ":" in name and name not in MODELS:
        factory = import_object(name, "model")
    else:
        factory = MODELS.get(name)
    model = _call_factory(name, factory, args, kwargs)  # type: ignore[arg-type]
    if not isinstance(model, nn.Module):
        raise UserCodeError(
            f"model {quote(name)} returned {type(model).__name__}, not a torch.nn.Module; "
            "the function must return the network"
        )
    return model


def compressible_layers(
    model: nn.Module, patterns: Sequence[str] | str | None = None
) -> dict[str, nn.Module]:
    """Map qualified name -> module for the layers whose weights are compressed.

    Args:
        model: any module; parametrized layers (``torch.nn.utils.parametrize``) count as usual.
        patterns: None selects every layer of a :data:`COMPRESSIBLE_TYPES` type. Otherwise each
            pattern is a layer's exact name (which selects that layer alone, whatever characters
            it holds) or an fnmatch glob (``"conv*"``, ``"layer1.*"``), and selects any module
            with a ``weight`` tensor, whatever its type (a ``BatchNorm2d``, an ``Embedding``).

    Returns:
        The selected layers in ``model.named_modules()`` order.

    Raises:
        LayerError: a pattern matches no module with a weight; the message lists the valid names.
    """
    if patterns is None:
        return {n: m for n, m in _weighted(model).items() if isinstance(m, COMPRESSIBLE_TYPES)}
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    weighted = _weighted(model)
    chosen = {p: _matches(p, weighted) for p in patterns}
    unmatched = [p for p, names in chosen.items() if not names]
    if unmatched:
        valid = ", ".join(weighted) or "none"
        raise LayerError(
            f"layer pattern(s) {', '.join(map(repr, unmatched))} match no layer with a weight; "
            f"valid layer names: {valid}"
        )
    selected = {n for names in chosen.values() for n in names}
    return {n: m for n, m in weighted.items() if n in selected}


def uncompressed_layers(model: nn.Module, compressed: Iterable[str]) -> dict[str, str]:
    """Map qualified name -> module type for every module with a ``weight`` tensor that is not
    among ``compressed``: these weights are stored raw (float32), as are all biases and buffers.

    Example: a ``digits-cnn`` with a BatchNorm2d ``bn`` added and ``compressed`` = its convs and
    linears gives ``{"bn": "BatchNorm2d"}``.
    """
    done = set(compressed)
    return {n: type(m).__name__ for n, m in _weighted(model).items() if n not in done}


def output_channels(module: nn.Module) -> tuple[int, int]:
    """``(axis, groups)``: where the output channels lie in ``module.weight``.

    Convolutions and linear layers keep them on axis 0 (``(out, in/groups, *kernel)``; a
    grouped convolution's channels are still rows). A transposed convolution's weight is
    ``(in, out/groups, *kernel)``: output channel ``g * out/groups + j`` is column ``j`` of the
    ``g``-th block of ``in/groups`` rows, so it gives ``(1, groups)``. Other modules: ``(0, 1)``.
    """
    if isinstance(module, _TRANSPOSED):
        return 1, int(module.groups)
    return 0, 1


def _weighted(model: nn.Module) -> dict[str, nn.Module]:
    """Every module (the root included) whose ``weight`` is a tensor, by qualified name."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(getattr(module, "weight", None), Tensor)
    }


def _matches(pattern: str, names: Iterable[str]) -> list[str]:
    """The names a pattern selects: itself if it is one of them, else those its glob matches."""
    names = list(names)
    if pattern in names:
        return [pattern]
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def _call_factory(
    name: str, factory: Callable[..., object], args: dict[str, object], kwargs: dict[str, object]
) -> object:
    """Call ``factory`` with the ``args`` it accepts plus ``kwargs``.

    Raises:
        ConfigError: ``kwargs`` the factory does not take.
        UserCodeError: the factory is not callable, or raised (its message is kept).
    """
    if not callable(factory):
        raise UserCodeError(
            f"model {quote(name)} is a {type(factory).__name__}, not a function or class"
        )
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): offer everything
        params = None
    if params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = {**args, **kwargs}
    else:
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ConfigError(
                f"model {quote(name)} does not take {', '.join(unknown)}; "
                f"it takes {', '.join(params)}"
            )
        accepted = {k: v for k, v in {**args, **kwargs}.items() if k in params}
    try:
        return factory(**accepted)
    except AdmmSearchError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code: any failure is named in one line
        raise UserCodeError(f"model {quote(name)} raised {one_line(exc)}") from exc


def _torchvision_model(name: str, num_classes: int, kwargs: dict[str, object]) -> nn.Module:
    import torchvision.models

    known = torchvision.models.list_models(module=torchvision.models)  # classifiers only
    if name not in known:
        raise RegistryError(
            f"unknown torchvision classifier {quote(name)}; known: {', '.join(known)}"
        )
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"torchvision model {quote(name)} rejected its arguments: {exc}"
        ) from exc


def _image_shape(name: str, input_shape: tuple[int, ...], min_size: int) -> tuple[int, int, int]:
    """Check ``input_shape`` is ``(C, H, W)`` with H and W at least ``min_size``."""
    if len(input_shape) != 3 or min(input_shape[1:]) < min_size:
        raise ConfigError(
            f"model {quote(name)} needs input_shape (C, H, W) with H, W >= {min_size}, "
            f"got {input_shape}"
        )
    return input_shape  # type: ignore[return-value]


@MODELS.register("digits-cnn")
class DigitsCNN(nn.Module):
    """Two 3x3 convs, one max-pool and two linear layers: >95 % on sklearn digits in seconds."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        channels, height, width = _image_shape("digits-cnn", input_shape, 2)
        self.conv1 = nn.Conv2d(channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * (height // 2) * (width // 2), 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@MODELS.register("lenet-300-100")
class LeNet300100(nn.Module):
    """Fully connected 300-100 network from the LeNet/ADMM pruning papers."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.fc1 = nn.Linear(math.prod(input_shape), 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


@MODELS.register("lenet5")
class LeNet5(nn.Module):
    """Caffe's LeNet-5 (20-50-500) as used in the ADMM pruning papers; no ReLU after the convs."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        channels, height, width = _image_shape("lenet5", input_shape, 16)
        self.conv1 = nn.Conv2d(channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(50 * _lenet_side(height) * _lenet_side(width), 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(self.conv2(F.max_pool2d(self.conv1(x), 2)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def _lenet_side(size: int) -> int:
    """Feature-map side after conv 5x5, pool 2, conv 5x5, pool 2 (28 -> 4)."""
    return ((size - 4) // 2 - 4) // 2


class _PadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        half = self.extra // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or option-A) shortcut, as in He et al. 2016."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes = stride != 1 or in_planes != planes
        self.shortcut = _PadShortcut(planes - in_planes) if changes else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


@MODELS.register("resnet20")
class CifarResNet(nn.Module):
    """CIFAR ResNet-6n+2 (He et al. 2016): 3 stages of n blocks with 16/32/64 channels."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], blocks: int = 3) -> None:
        super().__init__()
        channels = _image_shape("resnet", input_shape, 4)[0]
        self.conv1 = nn.Conv2d(channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks, stride=1)
        self.layer2 = self._stage(16, 32, blocks, stride=2)
        self.layer3 = self._stage(32, 64, blocks, stride=2)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        first = BasicBlock(in_planes, planes, stride)
        return nn.Sequential(first, *(BasicBlock(planes, planes, 1) for _ in range(blocks - 1)))

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@MODELS.register("vgg16")
class VGG16(nn.Module):
    """VGG-16 for CIFAR-10: 13 conv-BN-ReLU layers, 5 max-pools, a 512-512-classes head."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        channels = _image_shape("vgg16", input_shape, 32)[0]
        layers: list[nn.Module] = []
        for item in _VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item)]
                layers.append(nn.ReLU(inplace=True))
                channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # identity on 32x32 inputs; allows larger ones
        self.classifier = nn.Sequential(
            nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
