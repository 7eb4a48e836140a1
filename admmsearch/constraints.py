"""Constraint sets and their Euclidean projections: the Z-update of ADMM.

A constraint is a small object with ``project(w) -> w'``, the point of the set nearest to ``w``.
Projections never modify their input and keep its shape and dtype. Sparsity sets also give
``mask(w)``, the support of the projection; quantizers also give ``fit(w) -> Codebook``, the
levels and per-weight codes behind the projection, used to freeze weights on their levels.

Example:
    >>> import torch
    >>> Sparsity(keep=0.5).project(torch.tensor([0.1, -2.0, 0.3, 1.0])).tolist()
    [0.0, -2.0, 0.0, 1.0]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from .errors import ConstraintError

__all__ = [
    "Clustering",
    "Codebook",
    "Constraint",
    "FixedLevels",
    "OnSupport",
    "Quantizer",
    "SparseQuantization",
    "Sparsity",
    "StructuredSparsity",
    "UniformQuantization",
    "nearest_codes",
]


class Constraint(ABC):
    """A set S of weight tensors with the Euclidean projection onto S."""

    @abstractmethod
    def project(self, w: torch.Tensor) -> torch.Tensor:
        """Return the point of S nearest to ``w`` (a new tensor; ``w`` is left untouched)."""


def _keep_count(keep: float | int, size: int, what: str) -> int:
    """Number of entries a keep ratio (float in (0, 1]) or count (int >= 1) keeps of ``size``."""
    if isinstance(keep, bool) or not isinstance(keep, int | float):
        raise ConstraintError(f"keep must be a ratio in (0, 1] or a count >= 1, got {keep!r}")
    if isinstance(keep, float):
        if not 0.0 < keep <= 1.0 or math.isnan(keep):
            raise ConstraintError(f"keep ratio must be in (0, 1], got {keep}")
        count = math.floor(keep * size + 0.5)
    else:
        if keep < 1:
            raise ConstraintError(f"keep count must be >= 1, got {keep}")
        count = min(keep, size)
    if count < 1:
        raise ConstraintError(
            f"keep={keep} of {size} {what} keeps nothing; at least one must survive "
            f"(raise keep to at least {1.0 / size:.3g})"
        )
    return count


@dataclass(frozen=True)
class Sparsity(Constraint):
    """At most k nonzero weights: keep the k largest magnitudes (unstructured).

    Args:
        keep: fraction of weights kept, in (0, 1], or an int count of weights kept.
    """

    keep: float | int

    def __post_init__(self) -> None:
        _keep_count(self.keep, 1 << 62, "weights")

    def count(self, numel: int) -> int:
        """How many weights of a layer with ``numel`` weights survive."""
        return _keep_count(self.keep, numel, "weights")

    def mask(self, w: torch.Tensor) -> torch.Tensor:
        """Boolean support of the projection: the ``count`` largest ``|w|``."""
        flat = w.detach().reshape(-1).abs()
        keep = torch.zeros(flat.numel(), dtype=torch.bool, device=w.device)
        keep[torch.topk(flat, self.count(flat.numel()), sorted=False).indices] = True
        return keep.view_as(w)

    def project(self, w: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask(w), w, torch.zeros_like(w))


@dataclass(frozen=True)
class StructuredSparsity(Constraint):
    """At most k nonzero output channels (conv filters, linear rows): keep the largest L2 norms.

    Args:
        keep: fraction of output channels kept, in (0, 1], or an int count of channels kept.
        axis: 0 where the weight is ``(out, ...)`` (convolutions, linear layers); 1 for a
            transposed convolution's ``(in, out/groups, *kernel)`` weight.
        groups: the transposed convolution's ``groups``: output channel ``g * out/groups + j``
            is column ``j`` of the ``g``-th block of ``in/groups`` rows (ignored on axis 0).
    """

    keep: float | int
    axis: int = 0
    groups: int = 1

    def __post_init__(self) -> None:
        _keep_count(self.keep, 1 << 62, "rows")
        if self.axis not in (0, 1):
            raise ConstraintError(f"axis must be 0 or 1, got {self.axis!r}")
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise ConstraintError(f"groups must be an integer >= 1, got {self.groups!r}")

    def channels(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` as one row per output channel: ``(out_channels, weights per channel)``."""
        if self.axis == 0:
            return w.reshape(w.shape[0], -1)
        if w.dim() < 2 or w.shape[0] % self.groups:
            raise ConstraintError(
                f"a weight of shape {tuple(w.shape)} has no output channels on axis 1 "
                f"in {self.groups} groups"
            )
        blocks = w.reshape(self.groups, w.shape[0] // self.groups, w.shape[1], -1)
        return blocks.transpose(1, 2).reshape(self.groups * w.shape[1], -1)

    def count(self, channels: int) -> int:
        """How many of a layer's ``channels`` output channels survive."""
        return _keep_count(self.keep, channels, "output channels")

    def mask(self, w: torch.Tensor) -> torch.Tensor:
        rows = self.channels(w.detach())
        count = self.count(rows.shape[0])
        kept = torch.zeros(rows.shape[0], dtype=torch.bool, device=w.device)
        kept[torch.topk(rows.norm(dim=1), count, sorted=False).indices] = True
        if self.axis == 0:
            return kept.view(-1, *([1] * (w.dim() - 1))).expand_as(w).clone()
        shape = (self.groups, w.shape[0] // self.groups, w.shape[1], w[0, 0].numel())
        return kept.view(self.groups, 1, w.shape[1], 1).expand(shape).reshape(w.shape).clone()

    def project(self, w: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask(w), w, torch.zeros_like(w))


@dataclass(frozen=True)
class Codebook:
    """Quantization of a tensor: sorted ``levels`` (K,) and integer ``codes`` (shape of w).

    A uniform quantizer also gives its integer multipliers ``grid`` (K,) and its ``scale`` (a
    0-d tensor of the levels' dtype), with ``levels == scale * grid`` computed in that dtype:
    each level is exactly the rounded product, which a decoder reproduces bit for bit.
    """

    levels: torch.Tensor
    codes: torch.Tensor
    grid: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    def values(self) -> torch.Tensor:
        return self.levels[self.codes]


def nearest_codes(w: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the sorted ``levels`` for every entry of ``w`` (ties go up)."""
    midpoints = (levels[1:] + levels[:-1]) / 2
    return torch.bucketize(w.detach().contiguous(), midpoints, right=True)


class Quantizer(Constraint):
    """A set of tensors whose entries lie on a few levels; the levels are fitted to the input."""

    @abstractmethod
    def fit(self, w: torch.Tensor) -> Codebook:
        """Levels and codes of the projection of ``w``."""

    def project(self, w: torch.Tensor) -> torch.Tensor:
        if w.numel() == 0:
            return w.clone()
        return self.fit(w).values().to(w.dtype).view_as(w)

    def fixed(self, w: torch.Tensor) -> FixedLevels:
        """The set with the levels fitted to ``w`` held fixed (convex per entry; used by ADMM)."""
        book = self.fit(w)
        grid = None if book.grid is None else book.grid.detach().clone()
        scale = None if book.scale is None else book.scale.detach().clone()
        return FixedLevels(book.levels.detach().clone(), grid, scale)


@dataclass(frozen=True, eq=False)
class FixedLevels(Quantizer):
    """Entries on the given sorted ``levels``; the projection rounds each entry to the nearest.

    ADMM projects on fixed levels: with the scale free, Z can jump between two nearly equal
    fits from one update to the next, and the iteration stalls. Uniform levels keep their
    integer ``grid`` and ``scale`` (see :class:`Codebook`).
    """

    levels: torch.Tensor
    grid: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    def fit(self, w: torch.Tensor) -> Codebook:
        levels = self.levels.to(device=w.device, dtype=w.dtype)
        if self.grid is None or self.scale is None:
            return Codebook(levels, nearest_codes(w, levels))
        grid = self.grid.to(device=w.device, dtype=w.dtype)
        return Codebook(levels, nearest_codes(w, levels), grid, self.scale.to(levels))

    def fixed(self, w: torch.Tensor) -> FixedLevels:
        return self


def _uniform_grid(bits: int, zero: bool, device: torch.device) -> torch.Tensor:
    """Integer multipliers of the scale: mid-tread (with 0) or mid-rise (odd, without 0)."""
    if zero and bits >= 2:
        top = 2 ** (bits - 1) - 1
        return torch.arange(-top, top + 1, device=device, dtype=torch.float64)
    top = 2**bits - 1
    return torch.arange(-top, top + 1, 2, device=device, dtype=torch.float64)


@dataclass(frozen=True)
class UniformQuantization(Quantizer):
    """Entries on ``alpha * grid`` with one per-layer scale alpha chosen to minimise the error.

    The levels are the products ``alpha * grid`` rounded in the weights' dtype, with alpha
    itself rounded first, so a float32 decoder rebuilds each one exactly from alpha and its
    integer multiplier.

    With ``zero=True`` (dense layers) the grid is the signed integers of ``bits`` bits without the
    most negative one: b=2 is ternary {-1, 0, 1}; b=1 is binary {-1, +1}. With ``zero=False``
    (the survivors of a pruned layer, whose zeros the sparse index already records) the grid is
    the 2**bits odd integers -(2**b - 1) .. 2**b - 1, so every code is a nonzero level.

    The scale is found by scanning candidates and refining the best few by alternating
    Q = nearest(w / alpha) and alpha = <w, Q> / <Q, Q> until the codes settle; each step lowers
    the error, so the result is a local optimum at least as good as every scanned scale.
    """

    bits: int
    zero: bool = True
    scan: int = 96
    refine: int = 4

    def __post_init__(self) -> None:
        if (
            isinstance(self.bits, bool)
            or not isinstance(self.bits, int)
            or not 1 <= self.bits <= 16
        ):
            raise ConstraintError(f"bits must be an integer in [1, 16], got {self.bits!r}")

    def grid(self, device: torch.device | str = "cpu") -> torch.Tensor:
        return _uniform_grid(self.bits, self.zero, torch.device(device))

    def fit(self, w: torch.Tensor) -> Codebook:
        x = w.detach().reshape(-1).to(torch.float64)
        grid = self.grid(x.device)
        top = x.abs().max()
        if top == 0:
            alpha = torch.ones((), dtype=torch.float64, device=x.device)
        else:
            alpha = self._best_scale(x, grid, top / grid[-1])
        scale, grid = alpha.to(w.dtype), grid.to(w.dtype)
        levels = scale * grid  # rounded in w's dtype: each level is exactly scale * integer
        codes = nearest_codes(w.reshape(-1), levels).view_as(w)
        return Codebook(levels, codes, grid, scale)

    def _best_scale(self, x: torch.Tensor, grid: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        positive = grid[grid >= 0]
        budget = max(1, _EVENT_BUDGET // max(1, len(positive) - 1))
        sample = x if x.numel() <= budget else x.sort().values[:: x.numel() // budget + 1]
        starts = [_exact_scale(sample.abs(), positive)]
        if sample.numel() < x.numel():
            ladder = torch.logspace(-2.5, 0.3, self.scan, dtype=x.dtype, device=x.device)
            candidates = full * ladder
            errors = torch.stack([_error(sample, a, grid) for a in candidates])
            starts += list(candidates[errors.argsort()[: self.refine]])
        if sample.numel() == x.numel():
            return starts[0]  # exact on the whole layer
        refined = [_alternate(x, a, grid) for a in starts]
        return min(refined, key=lambda a: float(_error(x, a, grid)))


_EVENT_BUDGET = 1 << 22


def _exact_scale(a: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """The scale minimising sum_i min_j (a_i - alpha * positive_j)^2 over alpha > 0, exactly.

    As alpha falls, entry i moves from level j to j+1 when a_i / alpha passes the midpoint m_j,
    i.e. at alpha = a_i / m_j. Between two such events the codes are fixed and the error is a
    quadratic in alpha minimised at <a, q> / <q, q>, clipped to the interval; the best of these
    per-interval minima is the global one. Sorting the n * (levels - 1) events gives all of
    them with cumulative sums.
    """
    if len(positive) == 1:  # one level: the least-squares scale of the magnitudes
        return a.sum() / (len(a) * positive[0])
    mid = (positive[1:] + positive[:-1]) / 2
    step_wq = (positive[1:] - positive[:-1]).expand(len(a), -1)
    step_qq = (positive[1:].square() - positive[:-1].square()).expand(len(a), -1)
    alphas = (a[:, None] / mid[None, :]).reshape(-1)
    order = alphas.argsort(descending=True)
    alphas = alphas[order]
    wq = (a[:, None] * step_wq).reshape(-1)[order].cumsum(0) + a.sum() * positive[0]
    qq = step_qq.reshape(-1)[order].cumsum(0) + len(a) * positive[0] ** 2
    upper = alphas
    lower = torch.cat([alphas[1:], alphas.new_zeros(1)])
    best = (wq / qq.clamp_min(1e-300)).clamp(min=lower, max=upper)
    if positive[0] > 0:  # before the first event every entry sits on the lowest nonzero level
        top = (a.sum() * positive[0] / (len(a) * positive[0] ** 2)).clamp(min=alphas[0])
        best = torch.cat([top.reshape(1), best])
        wq = torch.cat([(a.sum() * positive[0]).reshape(1), wq])
        qq = torch.cat([(len(a) * positive[0] ** 2).reshape(1), qq])
    errors = -2 * best * wq + best.square() * qq
    errors[best <= 0] = float("inf")
    return best[errors.argmin()]


def _grid_codes(x: torch.Tensor, alpha: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Nearest index on the evenly spaced ``alpha * grid``, by arithmetic instead of search."""
    if len(grid) == 1:
        return torch.zeros_like(x, dtype=torch.long)
    step = grid[1] - grid[0]
    return torch.round((x / alpha - grid[0]) / step).clamp(0, len(grid) - 1).long()


def _error(x: torch.Tensor, alpha: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return (x - alpha * grid[_grid_codes(x, alpha, grid)]).square().sum()


def _alternate(x: torch.Tensor, alpha: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Coordinate descent on (alpha, codes) from ``alpha``; stops when the codes repeat."""
    codes = _grid_codes(x, alpha, grid)
    for _ in range(30):
        q = grid[codes]
        qq = q.square().sum()
        if qq == 0:
            break
        new_alpha = (x * q).sum() / qq
        if (new_alpha - alpha).abs() <= 1e-9 * alpha.abs():
            return new_alpha
        alpha = new_alpha
        new = _grid_codes(x, alpha, grid)
        if torch.equal(new, codes):
            break
        codes = new
    return alpha


@dataclass(frozen=True)
class Clustering(Quantizer):
    """At most ``k`` distinct values: one-dimensional k-means (weight sharing).

    Lloyd's algorithm from two deterministic starts (linear spacing, as Deep Compression
    recommends, and quantiles); the better result is kept. Centroids are learned further during
    retraining (see ``masking.Quantized``).
    """

    k: int
    iterations: int = 100

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= 65536:
            raise ConstraintError(f"clusters must be an integer in [1, 65536], got {self.k!r}")

    def fit(self, w: torch.Tensor) -> Codebook:
        x = w.detach().reshape(-1).to(torch.float64)
        starts = [
            torch.linspace(float(x.min()), float(x.max()), self.k, dtype=x.dtype),
            torch.quantile(
                x.cpu()[:: max(1, x.numel() // 100000)],
                torch.linspace(0, 1, self.k, dtype=x.dtype),
            ),
        ]
        best = min(
            (self._lloyd(x, c.to(x.device)) for c in starts), key=lambda c: float(_sse(x, c))
        )
        levels = best.to(w.dtype)
        return Codebook(levels, nearest_codes(w.reshape(-1), levels).view_as(w))

    def _lloyd(self, x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        """Lloyd's iterations from ``centroids`` until the codes stop changing.

        A centroid that loses all its entries is dropped. To keep the host from waiting for the
        device on every iteration, a dropped centroid becomes +inf, which sorts last and, its
        midpoints being infinite, is nearest to no entry; the finite ones are kept at the end.
        On a GPU the codes are compared every ``_CHECK_EVERY`` iterations: once they repeat,
        further iterations change nothing, so the result is the same as checking each time.
        """
        centroids = centroids.unique()
        codes = nearest_codes(x, centroids)
        every = _check_every(x.device)
        gone = torch.full_like(centroids, float("inf"))
        for i in range(self.iterations):
            sums = torch.zeros_like(centroids).index_add_(0, codes, x)
            counts = torch.zeros_like(centroids).index_add_(0, codes, torch.ones_like(x))
            centroids = torch.where(counts > 0, sums / counts.clamp_min(1), gone).sort().values
            new = nearest_codes(x, centroids)
            if (i + 1) % every == 0 and torch.equal(new, codes):
                break
            codes = new
        return centroids[torch.isfinite(centroids)]


_CHECK_EVERY = 8  # Lloyd's iterations between convergence checks on a GPU (each one syncs)


def _check_every(device: torch.device) -> int:
    """Iterations between Lloyd's convergence checks: each check waits for a GPU."""
    return 1 if device.type == "cpu" else _CHECK_EVERY


def _sse(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    return (x - levels[nearest_codes(x, levels)]).square().sum()


@dataclass(frozen=True)
class OnSupport(Constraint):
    """Zero outside a fixed boolean ``support``; ``inner`` applies to the entries inside it.

    The exact projection: entries outside the support go to zero, the ones inside are projected
    as one vector. This is the set of the later stages: pruned weights stay pruned.
    """

    inner: Constraint
    support: torch.Tensor

    def project(self, w: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(w)
        out[self.support] = self.inner.project(w[self.support])
        return out

    def mask(self, w: torch.Tensor) -> torch.Tensor:
        """Support of the inner sparsity's projection, restricted to ``support``."""
        if not hasattr(self.inner, "mask"):
            return self.support.clone()
        out = torch.zeros_like(self.support)
        out[self.support] = self.inner.mask(w[self.support])
        return out

    def fit(self, w: torch.Tensor) -> Codebook:
        """Codebook of the entries inside the support (``inner`` must be a Quantizer)."""
        return self.inner.fit(w[self.support])

    def fixed(self, w: torch.Tensor) -> OnSupport:
        """The same support with the inner quantizer's levels fitted to ``w`` and held fixed."""
        return OnSupport(self.inner.fixed(w[self.support]), self.support)


@dataclass(frozen=True)
class SparseQuantization(Constraint):
    """Prune first, then quantize the survivors: zero stays zero, the levels serve the rest."""

    sparsity: Sparsity | StructuredSparsity
    quantizer: Quantizer

    def mask(self, w: torch.Tensor) -> torch.Tensor:
        return self.sparsity.mask(w)

    def project(self, w: torch.Tensor) -> torch.Tensor:
        return OnSupport(self.quantizer, self.sparsity.mask(w)).project(w)
