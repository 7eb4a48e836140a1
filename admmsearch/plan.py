"""The per-layer compression plan: for each layer, how many weights to keep and how many bits.

A plan is plain data (it round-trips through dicts, hence YAML and JSON) and turns into the
constraint sets each stage of the pipeline projects on. A plan file, a settings file's
``layers:`` block and a study's fixed per-layer settings follow the same rules: ``keep`` in
(0, 1], ``bits`` in [1, 16], ``clusters`` in [2, 65536], not both bits and clusters. The
module imports no torch; the constraints are built when asked for.

Example:
    >>> plan = Plan.from_dict({"layers": {"fc1": {"keep": 0.08, "bits": 3}}})
    >>> plan.layers["fc1"].keep, plan.to_dict()["version"]
    (0.08, 1)
    >>> Plan.from_dict({"layers": {"fc1": {"clusters": 1}}}, "plan.yaml")
    Traceback (most recent call last):
    ...
    admmsearch.errors.ConfigError: plan.yaml: layers.fc1.clusters: must be in [2, 65536], got 1
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import field_validator, model_validator

from .errors import ConstraintError, LayerError, quote
from .validation import Bits, Clusters, Fraction, FrozenModel, StrictBool

if TYPE_CHECKING:
    import torch

    from .constraints import Constraint, Quantizer, Sparsity, StructuredSparsity

__all__ = ["LayerPlan", "PLAN_VERSION", "Plan"]

PLAN_VERSION = 1


class LayerPlan(FrozenModel):
    """One layer's target.

    Attributes:
        keep: fraction of weights (or of output channels when ``structured``) kept, in (0, 1];
            1.0 (the default; ``null`` reads as it) means the layer is not pruned.
        structured: prune whole filters / rows instead of single weights.
        bits: uniform quantization of the kept weights to this many bits; None = float32.
        clusters: weight clustering to this many learned centroids instead of ``bits``.
    """

    keep: Fraction = 1.0
    structured: StrictBool = False
    bits: Bits | None = None
    clusters: Clusters | None = None

    @field_validator("keep", mode="before")
    @classmethod
    def _null_keeps_all(cls, keep: Any) -> Any:
        return 1.0 if keep is None else keep

    @model_validator(mode="after")
    def _one_quantizer(self) -> LayerPlan:
        if self.bits is not None and self.clusters is not None:
            raise ValueError("give either bits or clusters, not both")
        return self

    @property
    def prunes(self) -> bool:
        return self.keep < 1.0

    @property
    def quantizes(self) -> bool:
        return self.bits is not None or self.clusters is not None

    def sparsity(self, axis: int = 0, groups: int = 1) -> Sparsity | StructuredSparsity | None:
        """The pruning constraint, or None when the layer keeps every weight.

        ``axis`` and ``groups`` place the output channels of structured pruning (see
        :func:`admmsearch.models.output_channels`; ``(1, groups)`` for transposed convolutions).
        """
        from .constraints import Sparsity, StructuredSparsity

        if not self.prunes:
            return None
        if self.structured:
            return StructuredSparsity(self.keep, axis, groups)
        return Sparsity(self.keep)

    def quantizer(self, sparse: bool) -> Quantizer | None:
        """The quantization constraint; on pruned layers the levels serve only the survivors."""
        from .constraints import Clustering, UniformQuantization

        if self.clusters is not None:
            return Clustering(self.clusters)
        if self.bits is not None:
            return UniformQuantization(self.bits, zero=not sparse)
        return None

    def compact(self) -> str:
        """The layer in a few characters, as tables show it: the keep ratio to 2 significant
        digits without its leading zero (``1``: not pruned), ``s`` where pruned structured,
        then ``/`` and the levels: ``<bits>b``, ``<clusters>c`` or ``fp`` (float32).

        Example:
            >>> LayerPlan(keep=0.6, bits=2).compact(), LayerPlan(keep=0.0512).compact()
            ('.60/2b', '.051/fp')
            >>> LayerPlan(keep=0.25, structured=True, clusters=16).compact()
            '.25s/16c'
        """
        keep = "1" if self.keep == 1.0 else f"{self.keep:#.2g}".removeprefix("0")
        if self.clusters is not None:
            levels = f"{self.clusters}c"
        else:
            levels = "fp" if self.bits is None else f"{self.bits}b"
        return f"{keep}{'s' if self.structured else ''}/{levels}"

    def to_dict(self) -> dict[str, Any]:
        """The layer as a plan file writes it: ``keep`` and ``bits`` (or ``clusters``) always,
        ``structured`` when true."""
        entry: dict[str, Any] = {"keep": self.keep}
        if self.clusters is not None:
            entry["clusters"] = self.clusters
        else:
            entry["bits"] = self.bits
        if self.structured:
            entry["structured"] = True
        return entry


class Plan(FrozenModel):
    """Map from layer name to LayerPlan; layers not named are left uncompressed."""

    layers: dict[str, LayerPlan] = {}
    version: Literal[1] = PLAN_VERSION

    @field_validator("layers", mode="before")
    @classmethod
    def _names_and_empty_layers(cls, layers: Any) -> Any:
        """Layer names as strings (YAML reads ``0:`` as a number); ``fc1:`` alone is ``{}``."""
        if not isinstance(layers, Mapping):
            return layers
        return {str(k): {} if v is None else v for k, v in layers.items()}

    @classmethod
    def uniform(cls, names: Iterable[str], **setting: Any) -> Plan:
        """The same setting for every named layer."""
        return cls.from_dict({"layers": {name: dict(setting) for name in names}})

    @classmethod
    def from_dict(cls, data: Any, source: str = "plan") -> Plan:
        """Validate a plain mapping (a plan file's content, read from ``source``).

        Raises:
            ConfigError: one line per bad field after ``source``, named by its dotted path
                (``plan.yaml: layers.fc1.keep: must be in (0, 1], got 1.5``).
        """
        return cls.parse(data, source)

    def compact(self) -> str:
        """Every layer's :meth:`LayerPlan.compact`, after its name, in the plan's order.

        Example:
            >>> Plan.from_dict({"layers": {"conv1": {"keep": 0.6, "bits": 2}, "fc": {}}}).compact()
            'conv1 .60/2b fc 1/fp'
        """
        return " ".join(f"{name} {lp.compact()}" for name, lp in self.layers.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "layers": {name: lp.to_dict() for name, lp in self.layers.items()},
        }

    def check_layers(
        self,
        valid: Iterable[str],
        numel: Mapping[str, int] | None = None,
        channels: Mapping[str, int] | None = None,
    ) -> None:
        """Every planned layer must exist and keep at least one weight (of its ``numel``) or,
        pruned structured, one output channel (of its ``channels``).

        Raises:
            LayerError: a planned layer is not among ``valid``.
            ConstraintError: a keep that keeps nothing, naming ``layers.<name>.keep``.
        """
        from .constraints import Sparsity, StructuredSparsity

        valid = list(valid)
        for name in self.layers:
            if name not in valid:
                raise LayerError(
                    f"plan names layer {quote(name)}, which is not a compressible layer; "
                    f"valid: {', '.join(valid)}"
                )
        for name, lp in self.layers.items():
            sizes = (channels if lp.structured else numel) or {}
            size = sizes.get(name) if lp.prunes else None
            if size is None:
                continue
            try:
                (StructuredSparsity if lp.structured else Sparsity)(lp.keep).count(size)
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
        from .constraints import OnSupport

        out: dict[str, Constraint] = {}
        for name, lp in self.layers.items():
            mask = masks.get(name)
            quantizer = lp.quantizer(sparse=mask is not None)
            if quantizer is not None:
                out[name] = quantizer if mask is None else OnSupport(quantizer, mask)
        return out
