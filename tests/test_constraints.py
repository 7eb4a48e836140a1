"""Every constraint: lands in its set, keeps shape and dtype, and is no farther than rivals."""

from __future__ import annotations

import pytest
import torch

from admmsearch.constraints import (
    Clustering,
    OnSupport,
    SparseQuantization,
    Sparsity,
    StructuredSparsity,
    UniformQuantization,
    nearest_codes,
)
from admmsearch.errors import ConstraintError

CASES = 40


def random_weights(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = [(7,), (6, 5), (4, 3, 2, 2), (50,), (3, 40)][seed % 5]
    w = torch.randn(shape, generator=g) * float(torch.rand(1, generator=g) * 3 + 0.01)
    if seed % 3 == 0:
        w = w + torch.randn(shape, generator=g).sign() * 2  # two-mode weights
    return w


def in_uniform_set(p: torch.Tensor, q: UniformQuantization) -> bool:
    """True when every entry is alpha * (a grid multiplier) for one alpha."""
    nz = p[p != 0]
    if nz.numel() == 0:
        return q.zero and q.bits >= 2
    grid = q.grid()
    if not q.zero and (p == 0).any():
        return False
    base = nz.abs().min().double()
    smallest = grid[grid > 0].min()
    alpha = base / smallest
    ratios = p.double() / alpha
    return bool((ratios - grid[nearest_codes(ratios, grid)]).abs().max() < 1e-4)


MEMBERS = {
    "sparsity": (
        Sparsity(0.3),
        lambda p, w: int((p != 0).sum()) <= Sparsity(0.3).count(w.numel()),
    ),
    "sparsity-count": (Sparsity(3), lambda p, w: int((p != 0).sum()) <= 3),
    "structured": (
        StructuredSparsity(0.5),
        lambda p, w: (
            int((p.reshape(len(p), -1).abs().sum(1) != 0).sum()) <= max(1, round(len(p) / 2))
        ),
    ),
    "binary": (UniformQuantization(1), lambda p, w: p.unique().numel() <= 2),
    "ternary": (UniformQuantization(2), lambda p, w: p.unique().numel() <= 3),
    "uniform3": (UniformQuantization(3), lambda p, w: p.unique().numel() <= 7),
    "midrise2": (
        UniformQuantization(2, zero=False),
        lambda p, w: (p != 0).all() and p.unique().numel() <= 4,
    ),
    "clusters4": (Clustering(4), lambda p, w: p.unique().numel() <= 4),
    "sparse-quant": (
        SparseQuantization(Sparsity(0.5), UniformQuantization(2, zero=False)),
        lambda p, w: (
            int((p != 0).sum()) <= Sparsity(0.5).count(w.numel())
            and p[p != 0].unique().numel() <= 4
        ),
    ),
}


@pytest.mark.parametrize("kind", sorted(MEMBERS))
class TestEveryConstraint:
    """The shared contract: in the set, shape/dtype kept, input untouched, idempotent."""

    def test_lands_in_set(self, kind: str) -> None:
        constraint, member = MEMBERS[kind]
        for seed in range(CASES):
            w = random_weights(seed)
            p = constraint.project(w)
            assert member(p, w), (kind, seed)

    def test_shape_dtype_and_input_kept(self, kind: str) -> None:
        constraint, _ = MEMBERS[kind]
        for dtype in (torch.float32, torch.float64):
            w = random_weights(3).to(dtype)
            before = w.clone()
            p = constraint.project(w)
            assert p.shape == w.shape and p.dtype == dtype
            assert torch.equal(w, before)
            assert p.data_ptr() != w.data_ptr()

    def test_idempotent(self, kind: str) -> None:
        constraint, _ = MEMBERS[kind]
        for seed in range(10):
            p = constraint.project(random_weights(seed))
            torch.testing.assert_close(constraint.project(p), p, rtol=1e-5, atol=1e-6)


def err(w: torch.Tensor, p: torch.Tensor) -> float:
    return float((w.double() - p.double()).square().sum())


def test_sparsity_is_nearest_among_random_supports() -> None:
    for seed in range(CASES):
        w = random_weights(seed)
        c = Sparsity(0.4)
        best = err(w, c.project(w))
        g = torch.Generator().manual_seed(seed)
        k = c.count(w.numel())
        for _ in range(50):
            idx = torch.randperm(w.numel(), generator=g)[:k]
            rival = torch.zeros(w.numel())
            rival[idx] = w.reshape(-1)[idx]
            assert best <= err(w, rival.view_as(w)) + 1e-9
        assert int((c.project(w) != 0).sum()) == k


def test_structured_keeps_whole_rows_with_largest_norms() -> None:
    w = torch.tensor([[3.0, 0.0], [0.1, 0.1], [1.0, 1.0], [-2.0, 2.0]])
    p = StructuredSparsity(0.5).project(w)
    assert torch.equal(p, torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, 0.0], [-2.0, 2.0]]))


@pytest.mark.parametrize("bits,zero", [(1, True), (2, True), (3, True), (2, False), (4, False)])
def test_uniform_beats_every_tried_scale_and_code(bits: int, zero: bool) -> None:
    q = UniformQuantization(bits, zero=zero)
    grid = q.grid()
    for seed in range(CASES):
        w = random_weights(seed)
        best = err(w, q.project(w))
        g = torch.Generator().manual_seed(seed)
        top = float(w.abs().max())
        for alpha in torch.rand(60, generator=g, dtype=torch.float64) * 2 * top / float(grid[-1]):
            levels = alpha * grid
            assert best <= err(w, levels[nearest_codes(w.double(), levels)]) + 1e-6 * best + 1e-9
            codes = torch.randint(0, len(grid), w.shape, generator=g)
            assert best <= err(w, levels[codes]) + 1e-9


def test_uniform_scale_beats_max_abs_scaling() -> None:
    w = torch.randn(2000, generator=torch.Generator().manual_seed(0))
    q = UniformQuantization(2)
    naive = float(w.abs().max()) * q.grid()
    assert err(w, q.project(w)) < 0.8 * err(w, naive[nearest_codes(w.double(), naive)])


def test_binary_scale_is_mean_magnitude() -> None:
    w = torch.tensor([1.0, -3.0, 2.0, -2.0])
    torch.testing.assert_close(
        UniformQuantization(1).project(w), torch.tensor([2.0, -2.0, 2.0, -2.0])
    )


def test_clustering_beats_random_centroids() -> None:
    c = Clustering(3)
    for seed in range(CASES):
        w = random_weights(seed)
        best = err(w, c.project(w))
        g = torch.Generator().manual_seed(seed)
        lo, hi = float(w.min()), float(w.max())
        for _ in range(60):
            cents = (
                (torch.rand(3, generator=g, dtype=torch.float64) * (hi - lo) + lo).sort().values
            )
            assert best <= err(w, cents[nearest_codes(w.double(), cents)]) + 1e-9


def test_clustering_recovers_separated_clusters() -> None:
    w = torch.tensor([0.1, 0.11, 0.09, 5.0, 5.1, 4.9, -3.0, -3.05])
    levels = Clustering(3).fit(w).levels
    torch.testing.assert_close(levels, torch.tensor([-3.025, 0.1, 5.0]))


def test_on_support_zeroes_outside_and_quantizes_inside() -> None:
    w = torch.tensor([0.5, -1.0, 2.0, 0.3])
    support = torch.tensor([True, True, True, False])
    p = OnSupport(UniformQuantization(1), support).project(w)
    assert p[3] == 0 and (p[:3] != 0).all() and p[:3].abs().unique().numel() == 1


def test_sparse_quant_prunes_then_quantizes_survivors() -> None:
    w = torch.tensor([0.01, 1.0, -1.2, 0.02, 3.0, -0.03])
    p = SparseQuantization(Sparsity(0.5), UniformQuantization(2, zero=False)).project(w)
    assert torch.equal(p != 0, torch.tensor([False, True, True, False, True, False]))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Sparsity(0.0),
        lambda: Sparsity(1.5),
        lambda: Sparsity(-0.1),
        lambda: Sparsity(0),
        lambda: StructuredSparsity(2.0),
        lambda: UniformQuantization(0),
        lambda: UniformQuantization(17),
        lambda: Clustering(0),
    ],
)
def test_bad_arguments_raise(make) -> None:
    with pytest.raises(ConstraintError):
        make()


def test_layer_pruned_to_nothing_is_refused() -> None:
    with pytest.raises(ConstraintError, match="at least one must survive"):
        Sparsity(0.001).project(torch.ones(100))


def _lloyd_reference(x: torch.Tensor, centroids: torch.Tensor, iterations: int) -> torch.Tensor:
    """Lloyd's algorithm written plainly: empty clusters dropped, checked every iteration."""
    centroids = centroids.unique()
    codes = nearest_codes(x, centroids)
    for _ in range(iterations):
        sums = torch.zeros_like(centroids).index_add_(0, codes, x)
        counts = torch.zeros_like(centroids).index_add_(0, codes, torch.ones_like(x))
        centroids = (sums[counts > 0] / counts[counts > 0]).sort().values
        new = nearest_codes(x, centroids)
        if new.shape == codes.shape and torch.equal(new, codes):
            break
        codes = new
    return centroids


@pytest.mark.parametrize("every", [1, 8])
def test_lloyd_without_per_iteration_syncs_equals_the_plain_algorithm(monkeypatch, every) -> None:
    """Dropped clusters as +inf and checks every 8 iterations (as on a GPU) change nothing."""
    import admmsearch.constraints as constraints

    monkeypatch.setattr(constraints, "_check_every", lambda device: every)
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(500, generator=g), 8 + torch.randn(20, generator=g)]).double()
    k = Clustering(16)
    for start in (torch.linspace(-4, 12, 16, dtype=x.dtype), torch.linspace(-20, 20, 16).double()):
        got = k._lloyd(x, start)
        assert torch.equal(got, _lloyd_reference(x, start, k.iterations))
    assert len(k._lloyd(x, torch.linspace(-20, 20, 16).double())) < 16  # some were dropped
