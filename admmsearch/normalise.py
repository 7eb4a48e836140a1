"""Input normalisation: the per-channel standardisation a model was trained with, as data.

A dataset loaded from arrays is standardised with its training split's per-channel mean and
std (see :func:`admmsearch.data.load_dataset`); the :class:`Normalisation` that did it travels
with every result (settings file, MLflow params, the packed model's header), so that a deployed
model applies exactly the same transform to raw inputs. Example::

    >>> import torch
    >>> norm = Normalisation.fit(torch.tensor([[[[0.0]]], [[[4.0]]]]))  # (N=2, C=1, 1, 1)
    >>> norm.mean, norm.std
    ((2.0,), (2.0,))
    >>> norm.apply(torch.tensor([[[[6.0]]]])).item()
    2.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .errors import ConfigError

__all__ = ["Normalisation"]

_CONSTANT_STD = 1e-12  # a channel with a smaller std is left as is (std taken as 1)


@dataclass(frozen=True)
class Normalisation:
    """``(x - mean[c]) / std[c]`` in float32 over channel axis 1 of ``(N, C, ...)`` inputs.

    Flat ``(N, D)`` inputs have one channel: a single mean and std for every feature. The values
    are the float32 statistics exactly (as Python floats), so a reader rebuilds them bit for bit.

    Attributes:
        mean: per-channel mean, ``C`` values.
        std: per-channel standard deviation (population, ``correction=0``), ``C`` values, > 0.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.mean or len(self.mean) != len(self.std):
            raise ConfigError(
                f"normalisation: mean and std need one value per channel, got "
                f"{len(self.mean)} and {len(self.std)}"
            )
        if not all(math.isfinite(m) for m in self.mean) or not all(
            math.isfinite(s) and s > 0 for s in self.std
        ):
            raise ConfigError("normalisation: mean must be finite and std finite and positive")

    @property
    def channels(self) -> int:
        return len(self.mean)

    @classmethod
    def fit(cls, x: Tensor) -> Normalisation:
        """The statistics of ``x`` (float32 ``(N, C, ...)``, or ``(N, D)`` for one channel)."""
        dims = [d for d in range(x.dim()) if d != 1] if x.dim() > 2 else list(range(x.dim()))
        std, mean = torch.std_mean(x.float(), dim=dims, correction=0)
        std = torch.where(std > _CONSTANT_STD, std, torch.ones_like(std))
        return cls(tuple(mean.reshape(-1).tolist()), tuple(std.reshape(-1).tolist()))

    def _shaped(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() > 2 and x.shape[1] != self.channels:
            raise ConfigError(
                f"inputs have {x.shape[1]} channels; the normalisation has {self.channels}"
            )
        if x.dim() <= 2 and self.channels != 1:
            raise ConfigError(
                f"flat inputs take one mean and std; the normalisation has {self.channels}"
            )
        shape = (1, self.channels, *([1] * (x.dim() - 2))) if x.dim() > 2 else (1,) * x.dim()
        kwargs = {"dtype": torch.float32, "device": x.device}
        return (
            torch.tensor(self.mean, **kwargs).reshape(shape),
            torch.tensor(self.std, **kwargs).reshape(shape),
        )

    def apply(self, x: Tensor) -> Tensor:
        """A new float32 tensor ``(x - mean) / std``.

        Raises:
            ConfigError: the inputs' channel count differs from the statistics'.
        """
        mean, std = self._shaped(x)
        return torch.sub(x.float(), mean).div_(std)

    def apply_(self, x: Tensor) -> Tensor:
        """The same in place on a float32 tensor: the same float32 operations, the same bits."""
        mean, std = self._shaped(x)
        return x.sub_(mean).div_(std)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Normalisation | None:
        """The inverse of :meth:`to_dict`; None stays None (no normalisation).

        Raises:
            ConfigError: not a mapping of two equally long lists of numbers.
        """
        if data is None:
            return None
        try:
            mean, std = data["mean"], data["std"]
            return cls(_floats(mean), _floats(std))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"normalisation: expected {{mean: [...], std: [...]}} ({exc})"
            ) from None


def _floats(values: Sequence[Any]) -> tuple[float, ...]:
    if isinstance(values, str | bytes) or any(isinstance(v, bool) for v in values):
        raise TypeError("values must be numbers")
    return tuple(float(v) for v in values)
