"""ADMM state: auxiliary Z, scaled dual U, the rho schedule, the penalty and the Z/U update.

For each constrained layer, ADMM splits ``min loss(W) s.t. W in S`` into
    (i)   a few SGD steps on loss(W) + rho/2 * ||W - Z + U||^2         (``penalty``; its
          gradient rho * (W - Z + U) is added in closed form by ``add_gradient``)
    (ii)  Z <- project_S(W + U)                                        (``update``)
    (iii) U <- U + W - Z                                               (``update``)
Z starts at the projection of the dense weights and U at zero. U is the *scaled* dual
(lambda / rho), so when rho changes U is rescaled by rho_old / rho_new to keep lambda.

The ADMM loop never asks what kind of set it projects on: it calls ``constraint.project``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .constraints import Constraint
from .masking import Masked
from .settings import RhoSchedule

__all__ = ["AdmmState", "Residuals", "RhoSchedule"]


@dataclass(frozen=True)
class Residuals:
    """Convergence figures of one Z/U update: primal ||W - Z|| and dual rho * ||Z - Z_prev||."""

    update: int
    rho: float
    primal: Mapping[str, float]
    dual: Mapping[str, float]

    @property
    def primal_total(self) -> float:
        return sum(v * v for v in self.primal.values()) ** 0.5

    @property
    def dual_total(self) -> float:
        return sum(v * v for v in self.dual.values()) ** 0.5


class AdmmState:
    """Z and U for every constrained layer of a model, and the rho they are weighted by.

    Args:
        layers: name -> module whose ``weight`` (effective, if parametrized) is constrained.
        constraints: name -> constraint set; only these layers take part.
        schedule: how rho changes from update to update.
        steps: the optimizer steps of the stage the schedule is spread over (default: one
            update per step, ``schedule.updates`` steps).
    """

    def __init__(
        self,
        layers: Mapping[str, nn.Module],
        constraints: Mapping[str, Constraint],
        schedule: RhoSchedule,
        steps: int | None = None,
    ) -> None:
        self.modules = {name: layers[name] for name in constraints}
        self.constraints = dict(constraints)
        self.schedule = schedule
        self.steps = schedule.updates if steps is None else steps
        self.updates = 0
        self.rho = schedule.at(0, self.steps)
        self.history: list[Residuals] = []
        with torch.no_grad():
            weights = self._weights()
            self.Z = {n: c.project(weights[n]).detach().clone() for n, c in constraints.items()}
            self.U = {n: torch.zeros_like(weights[n]) for n in constraints}
        self._direct = _direct_tensors(self.modules)
        self._targets()

    @torch.no_grad()
    def _targets(self) -> None:
        """Z - U per layer, fixed between updates, so the penalty is one fused op per layer."""
        self.target = {n: (self.Z[n] - self.U[n]).contiguous() for n in self.Z}

    def _weights(self) -> dict[str, torch.Tensor]:
        return {name: module.weight for name, module in self.modules.items()}

    def penalty(self) -> torch.Tensor:
        """rho/2 * sum over layers of ||W - Z + U||^2 (squared norm), differentiable in W."""
        return self._penalty(self.modules)

    def autograd_penalty(self) -> torch.Tensor | None:
        """The penalty of the layers :meth:`add_gradient` cannot serve; None when there are none.

        Training adds this to the loss and calls :meth:`add_gradient` after ``backward``: together
        they give exactly the gradient of :meth:`penalty`.
        """
        rest = {n: m for n, m in self.modules.items() if n not in self._direct}
        return self._penalty(rest) if rest else None

    def _penalty(self, modules: Mapping[str, nn.Module]) -> torch.Tensor:
        total = None
        for name, module in modules.items():
            term = F.mse_loss(module.weight, self.target[name], reduction="sum")
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return 0.5 * self.rho * total

    @torch.no_grad()
    def add_gradient(self) -> None:
        """grad += rho * (W - Z + U) on each plain or masked layer, in two fused ops.

        The penalty's gradient is known in closed form, so there is no need to build it into the
        autograd graph; on a small model that graph costs more than the layers themselves. For a
        masked layer the trained tensor is the raw weight and the gradient is masked, as autograd
        through the mask would give.
        """
        if not self._direct:
            return
        params = [self._direct[n][0] for n in self._direct]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        diffs = torch._foreach_sub(params, [self.target[n] for n in self._direct])
        for diff, (_, mask) in zip(diffs, self._direct.values(), strict=True):
            if mask is not None:
                diff.mul_(mask)
        torch._foreach_add_([p.grad for p in params], diffs, alpha=self.rho)

    @torch.no_grad()
    def update(self) -> Residuals:
        """Z <- project(W + U); U <- U + W - Z; then advance rho, rescaling U."""
        primal, dual = {}, {}
        for name, w in self._weights().items():
            w = w.detach()
            z_prev = self.Z[name]
            z = self.constraints[name].project(w + self.U[name]).detach().clone()
            self.U[name] = self.U[name] + w - z
            self.Z[name] = z
            primal[name] = float((w - z).norm())
            dual[name] = self.rho * float((z - z_prev).norm())
        record = Residuals(self.updates, self.rho, primal, dual)
        self.history.append(record)
        self.updates += 1
        new_rho = self.schedule.at(self.updates, self.steps)
        if new_rho != self.rho:
            for name in self.U:
                self.U[name] = self.U[name] * (self.rho / new_rho)
            self.rho = new_rho
        self._targets()
        return record

    @torch.no_grad()
    def distance(self) -> dict[str, float]:
        """||W - project(W)|| per layer: how far each layer is from its set right now."""
        return {
            n: float((w - self.constraints[n].project(w)).norm())
            for n, w in self._weights().items()
        }


def _direct_tensors(
    modules: Mapping[str, nn.Module],
) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Layers whose penalty gradient can be added by hand: name -> (trained tensor, mask).

    A plain weight is its own trained tensor; a weight under a single :class:`Masked`
    parametrization is trained through its raw tensor, with the mask applied to the gradient.
    Any other parametrization is left to autograd.
    """
    out = {}
    for name, module in modules.items():
        if not parametrize.is_parametrized(module, "weight"):
            out[name] = (module.weight, None)
            continue
        chain = module.parametrizations.weight
        if len(chain) == 1 and type(chain[0]) is Masked:
            out[name] = (chain.original, chain[0].mask)
    return out
