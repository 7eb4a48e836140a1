"""Storage accounting: how many bits the compressed weights take, a pure function of the tensors.

The accounting never asks how a weight was pruned or quantized; it looks only at the values.
Exact zeros (``+0.0`` and ``-0.0``) are pruned entries. Every stream of values is coded by one
rule (:mod:`._coding`): the cheapest exact one of raw float32, a codebook of the ``K``
distinct float32 values plus ``ceil(log2 K)``-bit codes (learned levels: clustering), and a
uniform grid, one float32 scale plus ``c``-bit integer levels that decode as ``scale * level``
bit for bit (uniform quantization; a zero point is added only for an asymmetric grid). A layer
is then stored in whichever of two encodings is smaller (ties go to ``"dense"``):

* ``"dense"``: all ``n`` entries in order, zeros included as a value; no index.
* the sparse ``index_format``: ``"gap"`` (relative indices, as in Deep Compression) or
  ``"csr"`` (row pointers and column indices), followed by the coded nonzero values.

In the gap format each nonzero carries a ``g``-bit gap ``d = position - previous`` (previous is
``-1`` before the first). Codes ``1 .. 2**g - 1`` are that gap; code ``0`` is a *filler* that
advances ``2**g - 1`` positions and carries no value, so a gap ``d`` needs
``(d - 1) // (2**g - 1)`` fillers; fillers also cover the zeros after the last nonzero, so the
index spans the whole layer (a reader checks the layer's size against it). ``g`` ranges over
1..16 and is chosen to minimise ``g * (m + fillers)`` (ties go to the smaller ``g``).
:mod:`._format` writes exactly these bits, so the figures here are the payload of a
real file (plus its header and byte padding).

Worked example: two 1x10 weights with three survivors at positions 1, 7 and 9.

* ``n = 10`` entries, ``dense_bits = 32 * 10 = 320``; ``m = 3`` nonzeros.
* Uniform ``{0.5, -0.5, 0.5}`` (a 1-bit quantized layer): the levels are ``0.5 * {+1, -1}``, a
  symmetric grid of stride 2, so one scale and 1-bit codes: ``3 * 1 + 32 = 35`` bits without
  indices (a codebook would cost ``3 * 1 + 32 * 2 = 67``, raw ``96``).
* Learned ``{0.3, -0.71, 0.3}`` (two centroids): no float32 scale gives both exactly, so a
  codebook, ``K = 2``, ``c = 1``: ``3 * 1 + 32 * 2 = 67`` bits.
* Gap encoding: gaps 2, 6, 2, no zero after the last. ``g = 1``: 1 + 5 + 1 = 7 fillers,
  ``1 * (3 + 7) = 10`` bits; ``g = 2``: 0 + 1 + 0 = 1 filler, ``2 * (3 + 1) = 8`` bits; ``g = 3``:
  no filler, ``3 * 3 = 9`` bits; wider ``g`` only costs more. So ``g = 2`` (codes 2, 0, 3, 2).
* Dense encoding codes all 10 entries: uniform ``{0, 0.5, -0.5}`` is ``0.5 * {-1, 0, 1}``,
  ``10 * 2 + 32 = 52`` bits; learned ``{0, 0.3, -0.71}``: ``K = 3``, ``10 * 2 + 96 = 116`` bits.
* So the uniform layer stores ``35 + 8 = 43`` bits with indices (ratio 320 / 35 = 9.14 without,
  320 / 43 = 7.44 with) and the clustered one ``67 + 8 = 75`` (4.78 and 4.27).
* CSR encoding instead: 1 row of 10 columns, row pointers ``2 * ceil(log2 4) = 4`` bits, column
  indices ``3 * ceil(log2 10) = 12`` bits: ``35 + 16 = 51`` and ``67 + 16 = 83`` bits.

>>> import torch
>>> w = torch.tensor([[0, 0.5, 0, 0, 0, 0, 0, -0.5, 0, 0.5]])
>>> s = layer_storage("fc", w)
>>> (s.numel, s.nonzeros, s.dense_bits, s.coding, s.code_bits, s.codebook_size, s.data_bits)
(10, 3, 320, 'uniform', 1, 0, 35)
>>> (s.encoding, s.gap_bits, s.fillers, s.index_bits, s.stored_bits)
('gap', 2, 1, 8, 43)
>>> c = layer_storage("fc", torch.tensor([[0, 0.3, 0, 0, 0, 0, 0, -0.71, 0, 0.3]]))
>>> (c.coding, c.code_bits, c.codebook_size, c.data_bits, c.stored_bits)
('codebook', 1, 2, 67, 75)
>>> layer_storage("fc", w, index_format="csr").stored_bits
51
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..errors import ConstraintError, LayerError
from ..settings import INDEX_FORMATS
from ._coding import (
    FLOAT_BITS,
    MAX_GAP_BITS,
    ValueCoding,
    best_gap,
    coding_of,
    csr_index_bits,
    csr_layout,
    distinct_values,
    gap_index_bits,
    value_coding_bits,
)

__all__ = [
    "INDEX_FORMATS",
    "MAX_GAP_BITS",
    "LayerStorage",
    "StorageReport",
    "csr_layout",
    "gap_index_bits",
    "layer_storage",
    "model_storage",
    "value_coding_bits",
]

_PARAMETRIZED_KEY = re.compile(r"^(?:(.*)\.)?parametrizations\.([^.]+)\.")


@dataclass(frozen=True)
class LayerStorage:
    """Bits of one compressible layer; ``data_*`` are without indices, ``stored_*`` with them.

    ``coding``/``stored_coding`` name the value coding (``"raw"``, ``"codebook"``,
    ``"uniform"``) of the nonzeros and of the stored stream; ``codebook_size`` is 0 unless it is
    a codebook.
    """

    name: str
    shape: tuple[int, ...]
    numel: int
    nonzeros: int
    dense_bits: int
    coding: str
    code_bits: int
    codebook_size: int
    data_bits: int
    encoding: str
    gap_bits: int
    fillers: int
    stored_coding: str
    stored_code_bits: int
    stored_codebook_size: int
    index_bits: int
    stored_bits: int
    bias_bits: int

    @property
    def sparsity(self) -> float:
        """Fraction of pruned (exactly zero) weights."""
        return 1.0 - self.nonzeros / self.numel

    @property
    def ratio_no_index(self) -> float:
        """Dense float32 bits over the coded nonzero values (the papers' figure)."""
        return self.dense_bits / self.data_bits

    @property
    def ratio_with_index(self) -> float:
        """Dense float32 bits over the bits actually stored, indices included."""
        return self.dense_bits / self.stored_bits


@dataclass(frozen=True)
class StorageReport:
    """Per-layer storage plus every other tensor of the model at its raw size."""

    layers: tuple[LayerStorage, ...]
    other_bits: int
    index_format: str

    @property
    def dense_weight_bits(self) -> int:
        """Compressible weights stored as dense float32."""
        return sum(layer.dense_bits for layer in self.layers)

    @property
    def data_bits(self) -> int:
        """Compressible weights' coded nonzero values, without indices."""
        return sum(layer.data_bits for layer in self.layers)

    @property
    def stored_bits(self) -> int:
        """Compressible weights as stored, indices included."""
        return sum(layer.stored_bits for layer in self.layers)

    @property
    def bias_bits(self) -> int:
        """Biases of the compressible layers, stored raw."""
        return sum(layer.bias_bits for layer in self.layers)

    @property
    def weight_ratio_no_index(self) -> float:
        """Σ dense / Σ data over the compressible weights."""
        return self.dense_weight_bits / self.data_bits

    @property
    def weight_ratio_with_index(self) -> float:
        """Σ dense / Σ stored over the compressible weights."""
        return self.dense_weight_bits / self.stored_bits

    @property
    def model_dense_bits(self) -> int:
        """The whole state_dict uncompressed."""
        return self.dense_weight_bits + self.bias_bits + self.other_bits

    @property
    def model_stored_bits(self) -> int:
        """The whole state_dict compressed: the packed file's payload before byte padding."""
        return self.stored_bits + self.bias_bits + self.other_bits

    @property
    def model_ratio(self) -> float:
        """Whole-model compression ratio, indices, biases and buffers included."""
        return self.model_dense_bits / self.model_stored_bits

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: every field plus sparsity and both ratios."""
        rows = [
            {**asdict(layer), **{key: getattr(layer, key) for key in _LAYER_FIGURES}}
            for layer in self.layers
        ]
        return pd.DataFrame(rows, columns=[*LayerStorage.__dataclass_fields__, *_LAYER_FIGURES])

    def summary(self) -> dict[str, float]:
        """Flat totals (bits), ratios and the weights' overall sparsity, for metrics logging."""
        numel = sum(layer.numel for layer in self.layers)
        nonzeros = sum(layer.nonzeros for layer in self.layers)
        figures = {key: float(getattr(self, key)) for key in _REPORT_FIGURES}
        return {"weight_sparsity": 1.0 - nonzeros / numel if numel else 0.0, **figures}


_LAYER_FIGURES = ("sparsity", "ratio_no_index", "ratio_with_index")
_REPORT_FIGURES = (
    "dense_weight_bits",
    "data_bits",
    "stored_bits",
    "bias_bits",
    "other_bits",
    "weight_ratio_no_index",
    "weight_ratio_with_index",
    "model_dense_bits",
    "model_stored_bits",
    "model_ratio",
)


def _check_index_format(index_format: str) -> None:
    if index_format not in INDEX_FORMATS:
        raise ValueError(f"index_format must be one of {INDEX_FORMATS}, got {index_format!r}")


def _flat_weight(name: str, weight: Tensor) -> np.ndarray:
    """Flat float32 copy with every zero as ``+0.0`` (pruned entries decode as ``+0.0``)."""
    if weight.dtype != torch.float32:
        raise ConstraintError(f"layer {name!r} weight is {weight.dtype}; storage expects float32")
    flat = weight.detach().cpu().reshape(-1).numpy()
    return np.where(flat == 0, np.float32(0), flat)


def layer_storage(
    name: str, weight: Tensor, bias: Tensor | None = None, index_format: str = "gap"
) -> LayerStorage:
    """Storage of one layer's weight (and raw bias) in the cheaper of dense and ``index_format``.

    Raises:
        ConstraintError: the weight has no nonzero entry, or is not float32.
        ValueError: ``index_format`` is not ``"gap"`` or ``"csr"``.
    """
    _check_index_format(index_format)
    flat = _flat_weight(name, weight)
    bits = flat.view(np.uint32)
    positions = np.flatnonzero(bits)
    if positions.size == 0:
        raise ConstraintError(
            f"layer {name!r} has no nonzero weight; at least one weight per layer must survive"
        )
    distinct = distinct_values(bits)
    values = coding_of(positions.size, distinct[distinct != 0])  # zero is not a stored value
    sparse = _sparse_fields(index_format, positions, weight.shape, values)
    dense = _dense_fields(flat.size, coding_of(flat.size, distinct))
    return LayerStorage(
        name=name,
        shape=tuple(weight.shape),
        numel=flat.size,
        nonzeros=positions.size,
        dense_bits=FLOAT_BITS * flat.size,
        coding=values.kind,
        code_bits=values.width,
        codebook_size=values.codebook_size,
        data_bits=values.bits(positions.size),
        bias_bits=0 if bias is None else _raw_bits(bias),
        **(sparse if sparse["stored_bits"] < dense["stored_bits"] else dense),
    )


_ENCODING_FIELDS = (
    "encoding",
    "gap_bits",
    "fillers",
    "stored_coding",
    "stored_code_bits",
    "stored_codebook_size",
    "index_bits",
    "stored_bits",
)


def _fields(encoding: str, gap: tuple[int, int], values: ValueCoding, index_bits: int, bits: int):
    row = (encoding, *gap, values.kind, values.width, values.codebook_size, index_bits, bits)
    return dict(zip(_ENCODING_FIELDS, row, strict=True))


def _dense_fields(numel: int, values: ValueCoding) -> dict[str, Any]:
    """The dense encoding: every entry value-coded, zeros included; no index."""
    return _fields("dense", (0, 0), values, 0, values.bits(numel))


def _sparse_fields(
    index_format: str, positions: np.ndarray, shape: Sequence[int], values: ValueCoding
) -> dict[str, Any]:
    """The ``index_format`` encoding: the coded nonzeros plus a gap or CSR index."""
    if index_format == "gap":
        gap_bits, fillers, index_bits = best_gap(positions, math.prod(shape))
    else:
        gap_bits, fillers, index_bits = 0, 0, csr_index_bits(shape, positions.size)
    stored_bits = values.bits(positions.size) + index_bits
    return _fields(index_format, (gap_bits, fillers), values, index_bits, stored_bits)


def _raw_bits(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size() * 8


def _state_key(module_name: str, tensor_name: str) -> str:
    return f"{module_name}.{tensor_name}" if module_name else tensor_name


def _layer_module(model: nn.Module, name: str) -> nn.Module:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        module = None
    if not isinstance(getattr(module, "weight", None), Tensor):
        valid = [
            n for n, m in model.named_modules() if isinstance(getattr(m, "weight", None), Tensor)
        ]
        raise LayerError(
            f"layer {name!r} is not a module with a weight; modules with one: {valid}"
        )
    return module


def _other_bits(model: nn.Module, owned: set[str]) -> int:
    """Raw bits of every state_dict tensor not owned by a compressible layer, effective values."""
    bits, counted = 0, set()
    for key, tensor in model.state_dict().items():
        match = _PARAMETRIZED_KEY.match(key)
        if match:
            module_name, tensor_name = match.group(1) or "", match.group(2)
            key = _state_key(module_name, tensor_name)
            tensor = getattr(model.get_submodule(module_name), tensor_name)
        if key in owned or key in counted or not isinstance(tensor, Tensor):
            continue
        counted.add(key)
        bits += _raw_bits(tensor)
    return bits


def model_storage(
    model: nn.Module, layer_names: Sequence[str], index_format: str = "gap"
) -> StorageReport:
    """Storage of a model whose ``layer_names`` are compressible; everything else stays raw.

    Parametrized layers are read through ``module.weight``, i.e. their effective weights.

    Raises:
        LayerError: a name is not a module with a weight.
        ConstraintError: a layer has no nonzero weight.
        ValueError: unknown ``index_format``, no layer named, or a layer named twice.
    """
    _check_index_format(index_format)
    names = list(layer_names)
    if not names:
        raise ValueError("layer_names is empty; name at least one compressible layer")
    if len(set(names)) != len(names):
        raise ValueError(f"layer_names lists a layer more than once: {names}")
    layers = []
    for name in names:
        module = _layer_module(model, name)
        bias = module.bias if isinstance(getattr(module, "bias", None), Tensor) else None
        layers.append(layer_storage(name, module.weight, bias, index_format))
    owned = {_state_key(n, t) for n in names for t in ("weight", "bias")}
    return StorageReport(tuple(layers), _other_bits(model, owned), index_format)
