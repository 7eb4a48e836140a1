"""ADMM state: auxiliary Z, scaled dual U, the rho schedule, the penalty and the Z/U update.

For each constrained layer, ADMM splits ``min loss(W) s.t. W in S`` into
    (i)   a few SGD steps on loss(W) + rho/2 * ||W - Z + U||^2         (``penalty``)
    (ii)  Z <- project_S(W + U)                                        (``update``)
    (iii) U <- U + W - Z                                               (``update``)
Z starts at the projection of the dense weights and U at zero. U is the *scaled* dual
(lambda / rho), so when rho grows the scheduler rescales U by rho_old / rho_new to keep lambda.

The ADMM loop never asks what kind of set it projects on: it calls ``constraint.project``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .constraints import Constraint
from .errors import ConfigError

__all__ = ["AdmmState", "Residuals", "RhoSchedule"]


@dataclass(frozen=True)
class RhoSchedule:
    """rho = min(maximum, initial * multiplier ** (updates_done // every)).

    Example: RhoSchedule(1e-3, 2.0, every=2, maximum=1e-2) gives, after 0, 1, 2, ... updates,
    1e-3, 1e-3, 2e-3, 2e-3, 4e-3, 4e-3, 8e-3, 8e-3, 1e-2, ...
    """

    initial: float = 1e-3
    multiplier: float = 1.5
    every: int = 1
    maximum: float = 1.0

    def __post_init__(self) -> None:
        if not self.initial > 0:
            raise ConfigError(f"rho.initial: must be > 0, got {self.initial}")
        if not self.multiplier >= 1:
            raise ConfigError(f"rho.multiplier: must be >= 1, got {self.multiplier}")
        if not (isinstance(self.every, int) and self.every >= 1):
            raise ConfigError(f"rho.every: must be an integer >= 1, got {self.every!r}")
        if not self.maximum >= self.initial:
            raise ConfigError(f"rho.maximum: must be >= rho.initial, got {self.maximum}")

    def at(self, updates_done: int) -> float:
        return min(self.maximum, self.initial * self.multiplier ** (updates_done // self.every))


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
        schedule: how rho grows with the number of updates.
    """

    def __init__(
        self,
        layers: Mapping[str, nn.Module],
        constraints: Mapping[str, Constraint],
        schedule: RhoSchedule,
    ) -> None:
        self.modules = {name: layers[name] for name in constraints}
        self.constraints = dict(constraints)
        self.schedule = schedule
        self.updates = 0
        self.rho = schedule.at(0)
        self.history: list[Residuals] = []
        with torch.no_grad():
            weights = self._weights()
            self.Z = {n: c.project(weights[n]).detach().clone() for n, c in constraints.items()}
            self.U = {n: torch.zeros_like(weights[n]) for n in constraints}

    def _weights(self) -> dict[str, torch.Tensor]:
        return {name: module.weight for name, module in self.modules.items()}

    def penalty(self) -> torch.Tensor:
        """rho/2 * sum over layers of ||W - Z + U||^2 (squared norm), differentiable in W."""
        total = None
        for name, w in self._weights().items():
            term = (w - self.Z[name] + self.U[name]).square().sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return 0.5 * self.rho * total

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
        new_rho = self.schedule.at(self.updates)
        if new_rho != self.rho:
            for name in self.U:
                self.U[name] = self.U[name] * (self.rho / new_rho)
            self.rho = new_rho
        return record

    @torch.no_grad()
    def distance(self) -> dict[str, float]:
        """||W - project(W)|| per layer: how far each layer is from its set right now."""
        return {
            n: float((w - self.constraints[n].project(w)).norm())
            for n, w in self._weights().items()
        }
