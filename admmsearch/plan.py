"""The per-layer compression plan: for each layer, how many weights to keep and how many bits.

A plan is plain data (it round-trips through dicts, hence YAML and JSON) and turns into the
constraint sets each stage of the pipeline projects on.

Example:
    >>> plan = Plan.from_dict({"layers": {"fc1": {"keep": 0.08, "bits": 3}}})
    >>> plan.layers["fc1"].keep, plan.to_dict()["version"]
    (0.08, 1)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .constraints import (
    Clustering,
    Constraint,
    OnSupport,
    Quantizer,
    Sparsity,
    StructuredSparsity,
    UniformQuantization,
)
from .errors import ConfigError, ConstraintError, LayerError

__all__ = ["LayerPlan", "PLAN_VERSION", "Plan"]

PLAN_VERSION = 1
_FIELDS = ("keep", "structured", "bits", "clusters")


@dataclass(frozen=True)
class LayerPlan:
    """One layer's target.

    Attributes:
        keep: fraction of weights (or of output channels when ``structured``) kept, in (0, 1];
            None or 1.0 means the layer is not pruned.
        structured: prune whole filters / rows instead of single weights.
        bits: uniform quantization of the kept weights to this many bits; None = float32.
        clusters: weight clustering to this many learned centroids instead of ``bits``.
    """

    keep: float | None = None
    structured: bool = False
    bits: int | None = None
    clusters: int | None = None

    @property
    def prunes(self) -> bool:
        return self.keep is not None and self.keep < 1.0

    @property
    def quantizes(self) -> bool:
        return self.bits is not None or self.clusters is not None

    def sparsity(self, axis: int = 0, groups: int = 1) -> Sparsity | StructuredSparsity | None:
        """The pruning constraint, or None when the layer keeps every weight.

        ``axis`` and ``groups`` place the output channels of structured pruning (see
        :func:`admmsearch.models.output_channels`; ``(1, groups)`` for transposed convolutions).
        """
        if not self.prunes:
            return None
        if self.structured:
            return StructuredSparsity(self.keep, axis, groups)
        return Sparsity(self.keep)

    def quantizer(self, sparse: bool) -> Quantizer | None:
        """The quantization constraint; on pruned layers the levels serve only the survivors."""
        if self.clusters is not None:
            return Clustering(self.clusters)
        if self.bits is not None:
            return UniformQuantization(self.bits, zero=not sparse)
        return None


@dataclass(frozen=True)
class Plan:
    """Map from layer name to LayerPlan; layers not named are left uncompressed."""

    layers: Mapping[str, LayerPlan] = field(default_factory=dict)
    version: int = PLAN_VERSION

    @classmethod
    def uniform(cls, names: Iterable[str], **setting: Any) -> Plan:
        """The same setting for every named layer."""
        return cls.from_dict({"layers": {name: dict(setting) for name in names}})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Validate a plain mapping; errors name the field (``layers.fc1.keep``) and the value."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"plan: expected a mapping, got {type(data).__name__}")
        unknown = set(data) - {"layers", "version"}
        if unknown:
            raise ConfigError(
                f"plan: unknown field(s) {sorted(unknown)}; allowed: layers, version"
            )
        version = data.get("version", PLAN_VERSION)
        if version != PLAN_VERSION:
            raise ConfigError(f"plan.version: unsupported version {version!r}, expected 1")
        layers = data.get("layers", {})
        if not isinstance(layers, Mapping):
            raise ConfigError("plan.layers: expected a mapping from layer name to settings")
        return cls({str(k): _layer_from_dict(f"layers.{k}", v) for k, v in layers.items()})

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "layers": {
                name: {k: getattr(lp, k) for k in _FIELDS if getattr(lp, k) not in (None, False)}
                for name, lp in self.layers.items()
            },
        }

    def check_layers(self, valid: Iterable[str], numel: Mapping[str, int] | None = None) -> None:
        """Every planned layer must exist and keep at least one weight."""
        valid = list(valid)
        for name in self.layers:
            if name not in valid:
                raise LayerError(
                    f"plan names layer {name!r}, which is not a compressible layer; "
                    f"valid: {', '.join(valid)}"
                )
        for name, size in (numel or {}).items():
            lp = self.layers.get(name)
            if lp is not None and lp.prunes and not lp.structured:
                try:
                    Sparsity(lp.keep).count(size)
                except ConstraintError as exc:
                    raise ConstraintError(f"layers.{name}.keep: {exc}") from None

    def prune_constraints(self, weights: Mapping[str, torch.Tensor]) -> dict[str, Constraint]:
        """Sparsity constraints of the layers that are pruned."""
        out = {}
        for name, lp in self.layers.items():
            sparsity = lp.sparsity()
            if sparsity is not None and name in weights:
                out[name] = sparsity
        return out

    def quant_constraints(self, masks: Mapping[str, torch.Tensor | None]) -> dict[str, Constraint]:
        """Quantization constraints; a layer with a mask is quantized on its survivors only."""
        out: dict[str, Constraint] = {}
        for name, lp in self.layers.items():
            mask = masks.get(name)
            quantizer = lp.quantizer(sparse=mask is not None)
            if quantizer is not None:
                out[name] = quantizer if mask is None else OnSupport(quantizer, mask)
        return out


def _layer_from_dict(where: str, data: Any) -> LayerPlan:
    if data is None:
        return LayerPlan()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(_FIELDS)}")
    unknown = set(data) - set(_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {_FIELDS}")
    keep = data.get("keep")
    if keep is not None:
        if isinstance(keep, bool) or not isinstance(keep, int | float) or math.isnan(keep):
            raise ConfigError(f"{where}.keep: expected a number in (0, 1], got {keep!r}")
        if not 0.0 < keep <= 1.0:
            raise ConfigError(f"{where}.keep: must be in (0, 1], got {keep}")
        keep = float(keep)
    bits, clusters = data.get("bits"), data.get("clusters")
    _check_int(f"{where}.bits", bits, 1, 16)
    _check_int(f"{where}.clusters", clusters, 1, 65536)
    if bits is not None and clusters is not None:
        raise ConfigError(f"{where}: give either bits or clusters, not both")
    structured = data.get("structured", False)
    if not isinstance(structured, bool):
        raise ConfigError(f"{where}.structured: expected true or false, got {structured!r}")
    return LayerPlan(keep=keep, structured=structured, bits=bits, clusters=clusters)


def _check_int(where: str, value: Any, low: int, high: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{where}: must be in [{low}, {high}], got {value}")
