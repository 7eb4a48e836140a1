"""Small networks that use every operation the packed graph records, and weights given every
value coding the packer knows, for the graph, format and C export tests (no training)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from admmsearch.models import compressible_layers

#: (keep, values) per layer, in turn: which encoding (dense when kept whole) and value coding.
CODINGS = (
    (0.35, "uniform"),
    (1.0, "codebook"),
    (0.5, "raw"),
    (1.0, "uniform"),
    (0.25, "codebook"),
    (1.0, "raw"),
)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list:
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU6(inplace=True)]


class DSResNet(nn.Module):
    """MobileNet-style: a strided stem, a depthwise-separable block, a depthwise-separable
    residual block, BatchNorm and ReLU6 throughout, global average pooling, dropout."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 6) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(*_conv_bn(in_channels, w, 3, stride=2))
        self.block = nn.Sequential(*_conv_bn(w, w, 3, groups=w), *_conv_bn(w, 2 * w, 1))
        self.residual = nn.Sequential(
            *_conv_bn(2 * w, 2 * w, 3, groups=2 * w),
            nn.Conv2d(2 * w, 2 * w, 1, bias=False),
            nn.BatchNorm2d(2 * w),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(2 * w, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.block(self.stem(x))
        return self.head(F.relu6(x + self.residual(x)))


class Inception(nn.Module):
    """Two branches concatenated along the channels; max and average pooling with padding,
    dilation, ``padding="same"``, hardswish, sigmoid and tanh, a view as flatten."""

    def __init__(self, num_classes: int = 5, in_channels: int = 3) -> None:
        super().__init__()
        self.a = nn.Conv2d(in_channels, 4, 1)
        self.b = nn.Conv2d(in_channels, 6, 3, padding=2, dilation=2)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.c = nn.Conv2d(10, 8, 3, padding="same")
        self.avg = nn.AvgPool2d(2, padding=1, count_include_pad=False)
        self.fc = nn.Linear(8 * 3 * 3, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.cat([F.hardswish(self.a(x)), torch.sigmoid(self.b(x))], dim=1)
        y = self.avg(torch.tanh(self.c(self.pool(y))))
        return self.fc(y.view(y.size(0), -1))


class Conv1dNet(nn.Module):
    """1-D convolutions (strided; grouped and dilated), BatchNorm1d, pooling, a mean as the
    global average."""

    def __init__(self, num_classes: int = 4, in_channels: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, 8, 5, stride=2, padding=2)
        self.bn = nn.BatchNorm1d(8)
        self.conv2 = nn.Conv1d(8, 8, 3, padding=2, dilation=2, groups=4)
        self.pool = nn.MaxPool1d(2)
        self.avg = nn.AvgPool1d(3, stride=1, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(torch.tanh(self.conv2(F.relu(self.bn(self.conv1(x))))))
        return self.fc(self.avg(x).mean(-1))


def mlp(num_classes: int = 3, features: int = 20) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, 32),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(32, 16),
        nn.Sigmoid(),
        nn.Linear(16, num_classes),
    )


def leaky(num_classes: int = 3) -> nn.Module:
    """A network with an operation outside the recorded list (LeakyReLU)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(4 * 6 * 6, num_classes)
    )


def compress_(model: nn.Module, seed: int) -> None:
    """Give the compressible layers' weights the :data:`CODINGS` in turn (magnitude pruning,
    then values on a 4-bit uniform grid, on 6 learned levels, or left as they are), and the
    BatchNorms statistics away from their defaults; in place, seeded."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for index, module in enumerate(compressible_layers(model).values()):
            keep, values = CODINGS[(index + seed) % len(CODINGS)]
            module.weight.copy_(_coded(module.weight, keep, values, generator))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                _statistics_(module, generator)
    model.eval()


def _coded(weight: Tensor, keep: float, values: str, generator: torch.Generator) -> Tensor:
    w = weight.detach().clone()
    if values == "uniform":
        scale = (w.abs().max() / 7).float()
        w = scale * torch.clamp(torch.round(w / scale), -7, 7)
    elif values == "codebook":
        picks = torch.randperm(w.numel(), generator=generator)[:6]
        levels = w.reshape(-1)[picks] * 1.37 + 0.0013
        w = levels[(w.reshape(-1, 1) - levels).abs().argmin(1)].reshape(w.shape)
    if keep < 1:
        cutoff = w.abs().flatten().kthvalue(int((1 - keep) * w.numel()) + 1).values
        w = torch.where(w.abs() >= cutoff, w, torch.zeros(()))
    return w


def _statistics_(norm: nn.Module, generator: torch.Generator) -> None:
    size = norm.num_features
    norm.running_mean.copy_(0.2 * torch.randn(size, generator=generator))
    norm.running_var.copy_(0.5 + torch.rand(size, generator=generator))
    norm.weight.copy_(0.5 + torch.rand(size, generator=generator))
    norm.bias.copy_(0.2 * torch.randn(size, generator=generator))


def as_format_2(path) -> None:
    """Rewrite a packed file as format 2 wrote it: no graph section (checksum made valid)."""
    import struct
    import zlib
    from pathlib import Path

    from admmsearch.packed import _format as packing
    from admmsearch.packed._binio import ByteReader, ByteWriter

    data = Path(path).read_bytes()
    _, _, header_bytes, payload_bytes = struct.unpack_from("<6sHIQ", data)
    meta, streams, graph = packing._parse_header(ByteReader(data, 20, 20 + header_bytes))
    section = ByteWriter()
    graph.write(section)
    header = packing._header(meta, streams, graph)[: -len(section.buffer)]
    payload = data[20 + header_bytes : 20 + header_bytes + payload_bytes]
    body = struct.pack("<6sHIQ", b"ADMMPK", 2, len(header), len(payload)) + header + payload
    Path(path).write_bytes(body + struct.pack("<I", zlib.crc32(body)))
