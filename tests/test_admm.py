"""ADMM state: penalty, Z/U update, rho schedule with dual rescaling, convergence on a model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from admmsearch.admm import AdmmState, RhoSchedule
from admmsearch.constraints import Sparsity, UniformQuantization
from admmsearch.errors import ConfigError
from admmsearch.masking import prune_


def test_rho_schedule_example_from_docstring() -> None:
    s = RhoSchedule(1e-3, 1e-1, updates=3)
    assert s.update_steps(10) == [3, 6, 10]
    assert [s.at(k, 10) for k in range(4)] == pytest.approx([1e-3, 1e-2, 1e-1, 1e-1])
    assert s.growth(10) == pytest.approx(10.0)


@pytest.mark.parametrize("steps", [1, 2, 5, 7, 19, 20, 21, 64, 1000])
def test_rho_schedule_spreads_its_updates_over_any_stage(steps: int) -> None:
    s = RhoSchedule(2e-3, 0.5, updates=20)
    due = s.update_steps(steps)
    n = min(20, steps)
    assert len(due) == len(set(due)) == n and due[-1] == steps and due[0] >= 1
    gaps = [b - a for a, b in zip([0, *due], due, strict=False)]
    assert max(gaps) - min(gaps) <= 1  # evenly spread
    rhos = [s.at(k, steps) for k in range(n)]
    assert rhos[0] == pytest.approx(2e-3)
    if n > 1:
        assert rhos[-1] == pytest.approx(0.5)
        assert all(b > a for a, b in zip(rhos, rhos[1:], strict=False))


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"start": 0}, "start"),
        ({"end": -1.0}, "end"),
        ({"updates": 0}, "updates"),
        ({"updates": 2.5}, "updates"),
    ],
)
def test_rho_schedule_rejects_bad_values(kwargs, field) -> None:
    with pytest.raises(ConfigError, match=f"^RhoSchedule: {field}: must be"):
        RhoSchedule(**kwargs)


def test_state_starts_at_projection_and_zero_dual_as_copies() -> None:
    layer = nn.Linear(4, 3)
    state = AdmmState({"fc": layer}, {"fc": Sparsity(0.5)}, RhoSchedule(0.1))
    assert torch.equal(state.Z["fc"], Sparsity(0.5).project(layer.weight.detach()))
    assert torch.count_nonzero(state.U["fc"]) == 0
    assert state.Z["fc"].data_ptr() != layer.weight.data_ptr()
    with torch.no_grad():
        layer.weight.add_(1.0)
    assert not torch.equal(state.Z["fc"], Sparsity(0.5).project(layer.weight.detach()))


def test_penalty_is_half_rho_squared_norm() -> None:
    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 0.5], [-1.0, 2.0]]))
    state = AdmmState({"fc": layer}, {"fc": Sparsity(2)}, RhoSchedule(0.2))
    # Z keeps 3 and 2; W - Z = [[0, .5], [-1, 0]], ||.||^2 = 1.25, penalty = 0.1 * 1.25
    assert float(state.penalty().detach()) == pytest.approx(0.125)
    state.penalty().backward()
    torch.testing.assert_close(layer.weight.grad, 0.2 * torch.tensor([[0.0, 0.5], [-1.0, 0.0]]))


def test_update_follows_scaled_admm_and_rescales_dual() -> None:
    layer = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -0.2, 0.5]]))
    state = AdmmState({"fc": layer}, {"fc": Sparsity(1)}, RhoSchedule(0.1, 0.2, updates=2))
    r = state.update()
    w = layer.weight.detach()
    z = torch.tensor([[1.0, 0.0, 0.0]])
    assert torch.equal(state.Z["fc"], z)
    # U = W - Z = [0, -.2, .5], then rescaled by rho_old / rho_new = 0.5 as rho doubles
    torch.testing.assert_close(state.U["fc"], 0.5 * (w - z))
    assert state.rho == pytest.approx(0.2)
    assert r.primal["fc"] == pytest.approx(float((w - z).norm()))
    assert r.rho == pytest.approx(0.1) and r.dual["fc"] == pytest.approx(0.0)


@pytest.mark.parametrize("kind", ["sparsity", "uniform", "fixed-levels"])
def test_admm_drives_weights_to_the_set(kind: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 20)
    y = (x @ torch.randn(20, 3)).argmax(1)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 3))
    layers = {"0": model[0], "2": model[2]}
    make = {
        "sparsity": lambda w: Sparsity(0.2),
        "uniform": lambda w: UniformQuantization(2),
        "fixed-levels": lambda w: UniformQuantization(2).fixed(w),
    }[kind]
    constraints = {n: make(m.weight.detach()) for n, m in layers.items()}
    state = AdmmState(layers, constraints, RhoSchedule(1e-2, 1.0, updates=24))
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    for _ in range(24):
        for i in range(0, 512, 8):  # enough steps per update to nearly solve the W-subproblem
            loss = F.cross_entropy(model(x[i : i + 8]), y[i : i + 8]) + state.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
        state.update()
    primal = [r.primal_total for r in state.history]
    assert primal[-1] < 0.05 * primal[0], primal
    assert max(state.distance().values()) < 0.05 * primal[0]


@pytest.mark.parametrize("masked", [False, True])
def test_closed_form_gradient_equals_autograd_of_the_penalty(masked: bool) -> None:
    """add_gradient (plain and masked layers) + autograd_penalty == d penalty / dW."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    layers = {"0": model[0], "2": model[2]}
    if masked:
        prune_({"0": model[0]}, {"0": torch.rand(5, 6) > 0.4})
    state = AdmmState(
        layers,
        {"0": Sparsity(keep=0.5), "2": Sparsity(keep=0.3)},
        RhoSchedule(0.3, 0.6, updates=2),
    )
    state.update()  # nonzero U, rescaled by the rho change
    params = [p for p in model.parameters() if p.requires_grad]

    state.penalty().backward()
    expected = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    extra = state.autograd_penalty()
    assert extra is None  # plain and masked layers are both served in closed form
    state.add_gradient()
    for p, want in zip(params, expected, strict=True):
        got = p.grad if p.grad is not None else torch.zeros_like(p)
        assert torch.allclose(got, want, atol=1e-6)


def test_the_rho_schedule_example_in_its_docstring_runs() -> None:
    import doctest

    from admmsearch import settings

    result = doctest.testmod(settings)
    assert result.attempted >= 2 and result.failed == 0
