"""The user's training hooks: a batch transform, a loss and a training step, named in a study
file's ``training:`` section (:class:`~admmsearch.settings.TrainingHooks`) and run by every
training stage: the dense model's, the ADMM stages, masked retraining and quantized retraining.

Each is named ``package.module:function`` or ``path/file.py:function``, looked for as models
and datasets are (the study file's folder, then the current folder; see
:func:`admmsearch.registry.import_object`). What each receives and must return, with N the
batch size and every tensor on the study's device:

``transform(x, y, generator) -> (x, y)``
    A training batch: ``x`` float (N, C, H, W) (the dataset's sample shape), normalised as the
    model sees it; ``y`` long (N,) class labels; ``generator`` a seeded CPU
    ``torch.Generator`` (draw on the CPU and move to ``x.device``, so runs repeat exactly).
    Returns the batch to train on: ``x`` as the model takes it, ``y`` as the loss takes it
    (e.g. soft labels for mixup), both with the same first dimension. Only training batches
    are transformed, after the dataset's own augmentation; never validation or test data.
``loss(logits, y) -> tensor``
    ``logits`` (N, classes) and ``y`` as the transform returned it; returns the batch's mean
    loss, a 0-dim tensor attached to the graph. Default: cross-entropy.
``step(batch) -> tensor``
    One training step's loss, from a :class:`StepInput` (the model, the batch, the loss
    function, the generator, the stage and epoch): e.g. two forward passes, or a term on the
    model's activations. admmsearch then adds the ADMM penalty, back-propagates, adds the ADMM
    gradient and steps the optimizer, so masks and the ADMM terms keep working; the step
    must not call ``backward`` or step an optimizer itself. Default:
    ``batch.loss(batch.model(batch.x), batch.y)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserCodeError, quote
from .registry import import_object, one_line
from .settings import TrainingHooks

__all__ = ["Recipe", "StepInput", "load_recipe"]

#: What each hook is called with, for the check at load.
_ARGUMENTS = {"transform": ("x", "y", "generator"), "loss": ("logits", "y"), "step": ("batch",)}


@dataclass(frozen=True)
class StepInput:
    """What a custom training step receives.

    Attributes:
        model: the network being trained (its masks and quantizers attached).
        x, y: the training batch, after the transform if any.
        loss: the loss function, ``loss(logits, y) -> tensor`` (the study's, or cross-entropy).
        generator: the stage's seeded CPU generator.
        stage: the stage's name (``dense``, ``admm_prune``, ``retrain``, ``admm_quantize``,
            ``quant_retrain``; progressive pruning adds ``_step<k>``).
        epoch: the epoch within the stage, from 0.
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: torch.Generator
    stage: str
    epoch: int


@dataclass(frozen=True)
class Recipe:
    """The hooks, imported; a None hook is admmsearch's own behaviour."""

    names: TrainingHooks = field(default_factory=TrainingHooks)
    transform: Callable[..., Any] | None = None
    loss: Callable[..., Any] | None = None
    step: Callable[..., Any] | None = None

    def batch(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch after the transform (unchanged without one).

        Raises:
            UserCodeError: the transform raised, or did not return two tensors of one length.
        """
        if self.transform is None:
            return x, y
        out = self._call("transform", x, y, generator)
        if not (
            isinstance(out, tuple | list)
            and len(out) == 2
            and all(isinstance(t, torch.Tensor) for t in out)
            and len(out[0]) == len(out[1])
        ):
            raise UserCodeError(
                f"{self._what('transform')} must return (x, y), two tensors with the same first "
                f"dimension; it returned {_describe(out)}"
            )
        return out[0], out[1]

    def step_loss(self, batch: StepInput) -> torch.Tensor:
        """The loss of one training step: the custom step's, else the loss of the model's
        output (the study's loss, else cross-entropy).

        Raises:
            UserCodeError: a hook raised, or the loss is not a 0-dim tensor.
        """
        if self.step is not None:
            return self._scalar("step", self._call("step", batch))
        return self.loss_of(batch.model(batch.x), batch.y)

    def loss_of(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``loss(logits, y)``: the study's loss, else cross-entropy."""
        if self.loss is None:
            return F.cross_entropy(logits, y)
        return self._scalar("loss", self._call("loss", logits, y))

    def _call(self, hook: str, *args: Any) -> Any:
        try:
            return getattr(self, hook)(*args)
        except UserCodeError:
            raise
        except Exception as exc:  # noqa: BLE001 - user code: any failure is named in one line
            raise UserCodeError(f"{self._what(hook)} failed: {one_line(exc)}") from exc

    def _scalar(self, hook: str, value: Any) -> torch.Tensor:
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            raise UserCodeError(
                f"{self._what(hook)} must return the batch's loss as a 0-dim tensor; it "
                f"returned {_describe(value)}"
            )
        return value

    def _what(self, hook: str) -> str:
        return f"training.{hook} {getattr(self.names, hook)!r}"


def load_recipe(hooks: TrainingHooks) -> Recipe:
    """Import the named hooks and check each is a function taking its arguments.

    Raises:
        RegistryError: a hook cannot be imported; the message names ``training.<hook>``.
        UserCodeError: a hook is not callable, or cannot take its arguments.
    """
    found = {}
    for hook, name in hooks.named.items():
        what = f"training.{hook}"
        obj = import_object(name, what)
        if not callable(obj):
            raise UserCodeError(f"{what} {quote(name)}: is a {type(obj).__name__}, not a function")
        _check_arguments(obj, what, name, _ARGUMENTS[hook])
        found[hook] = obj
    return Recipe(hooks, **found)


def _check_arguments(fn: Callable[..., Any], what: str, name: str, args: tuple[str, ...]) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: it will tell when called
        return
    try:
        signature.bind(*args)
    except TypeError:
        raise UserCodeError(
            f"{what} {quote(name)}: is called as ({', '.join(args)}), but takes {signature}"
        ) from None


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {', '.join(_describe(v) for v in value) or 'nothing'}"
    return f"a {type(value).__name__}"
