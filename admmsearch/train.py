"""Seeded plain training loops: one epoch, evaluation, and a stage's worth of epochs.

Every call to ``fit`` builds a fresh optimizer, so momentum never carries over from one stage
to the next (it could otherwise push pruned weights or frozen levels around). The user's
training hooks (:mod:`admmsearch.hooks`: batch transform, loss, step) come in as a ``recipe``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .data import DataSplits, batches
from .errors import DivergenceError
from .hooks import Recipe, StepInput
from .masking import codebook_parameters
from .settings import TrainSettings
from .timing import part

CHECK_EVERY = 50  # steps between NaN/inf checks of the loss (each check waits for the device)

__all__ = [
    "CHECK_EVERY",
    "Epoch",
    "StepHooks",
    "TrainSettings",
    "evaluate",
    "fit",
    "fit_best",
    "lr_factors",
    "make_optimizer",
    "train_epoch",
]

_OWN = Recipe()  # no user hooks: cross-entropy on the batches as they come


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    """Optimizer over the trainable parameters; codebooks are kept out of weight decay."""
    codebook = {id(p) for p in codebook_parameters(model)}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) not in codebook], "weight_decay": s.weight_decay},
        {"params": [p for p in params if id(p) in codebook], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum)
    if s.optimizer == "adam":
        return torch.optim.Adam(groups, lr=s.lr)
    return torch.optim.AdamW(groups, lr=s.lr)


def lr_factors(s: TrainSettings) -> list[float]:
    """What each epoch's learning rate is, as a multiple of ``s.lr``: the stage sets it at the
    start of every epoch, and it holds for the whole epoch.

    ``constant``: 1 throughout. ``cosine``: ``(1 + cos(pi * e / E)) / 2`` at epoch ``e`` of
    ``E`` (0-based), from 1 down towards 0 (a single epoch: 1). ``step``: a tenth after each
    third of the stage, ``0.1 ** (e // ceil(E / 3))``: 9 epochs run 3 at ``lr``, 3 at
    ``lr / 10`` and 3 at ``lr / 100``; 4 epochs 2 at ``lr`` and 2 at ``lr / 10``.

    Example:
        >>> [round(f, 6) for f in lr_factors(TrainSettings(epochs=5, schedule="step"))]
        [1.0, 1.0, 0.1, 0.1, 0.01]
        >>> lr_factors(TrainSettings(epochs=4, schedule="cosine"))
        [1.0, 0.8535533905932737, 0.5, 0.14644660940672627]
    """
    return [_lr_factor(s, epoch) for epoch in range(s.epochs)]


def _lr_factor(s: TrainSettings, epoch: int) -> float:
    if s.schedule == "cosine" and s.epochs > 1:
        return 0.5 * (1 + math.cos(math.pi * epoch / s.epochs))
    if s.schedule == "step":
        return 0.1 ** (epoch // max(1, s.epochs // 3 + (s.epochs % 3 > 0)))
    return 1.0


@dataclass(frozen=True)
class StepHooks:
    """What a stage adds to plain training, all optional.

    Attributes:
        penalty: a term added to each step's loss (the ADMM penalty autograd must see).
        after_backward: adds gradients in place after ``backward`` (the ADMM term in closed
            form).
        on_step: called after each optimizer step (the ADMM stage's Z/U updates).
        on_epoch: called after each epoch with its 0-based index and mean training loss.
    """

    penalty: Callable[[], torch.Tensor | None] | None = None
    after_backward: Callable[[], None] | None = None
    on_step: Callable[[], None] | None = None
    on_epoch: Callable[[int, float], None] | None = None


@dataclass(frozen=True)
class Epoch:
    """One pass over the training split: its batches, hooks, the user's recipe and where it is
    (``stage`` and 0-based ``index``, which a custom step hook sees)."""

    batch_size: int
    generator: torch.Generator
    hooks: StepHooks = StepHooks()
    recipe: Recipe = _OWN
    stage: str = "train"
    index: int = 0


def train_epoch(
    model: nn.Module, data: DataSplits, optimizer: torch.optim.Optimizer, epoch: Epoch
) -> float:
    """One pass over the training split; returns the mean training loss (penalty excluded):
    cross-entropy, or the recipe's loss.

    Each batch goes through the recipe's transform, then its step (or the model and its
    loss); the hooks' ``penalty`` is added to that loss; ``after_backward`` may add gradients
    in place. The loss is summed on the device and checked for NaN/inf every ``CHECK_EVERY``
    steps, so the host never waits for the device inside the loop.

    Raises:
        DivergenceError: the loss became NaN or infinite.
        UserCodeError: a hook of the recipe raised or returned the wrong thing.
    """
    model.train()
    total = torch.zeros((), device=data.x_train.device)
    seen, step, objective = 0, 0, None
    for x, y in _training_batches(data, epoch):
        loss, objective = _step(model, optimizer, x, y, epoch)
        total += loss.detach() * len(y)
        seen += len(y)
        step += 1
        if step % CHECK_EVERY == 0:
            _check_finite(total, objective, seen)
        if epoch.hooks.on_step is not None:
            epoch.hooks.on_step()
    _check_finite(total, objective, seen)
    return float(total) / max(seen, 1)


def _training_batches(data: DataSplits, epoch: Epoch) -> Iterator[tuple[torch.Tensor, ...]]:
    yield from batches(
        data.x_train,
        data.y_train,
        epoch.batch_size,
        shuffle=True,
        generator=epoch.generator,
        augment=data.augment,
    )


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    epoch: Epoch,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; returns its loss and the objective (loss + penalty)."""
    recipe, hooks = epoch.recipe, epoch.hooks
    x, y = recipe.batch(x, y, epoch.generator)
    loss = recipe.step_loss(
        StepInput(model, x, y, recipe.loss_of, epoch.generator, epoch.stage, epoch.index)
    )
    extra = None if hooks.penalty is None else hooks.penalty()
    objective = loss if extra is None else loss + extra
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    if hooks.after_backward is not None:
        hooks.after_backward()
    optimizer.step()
    return loss, objective


def _check_finite(total: torch.Tensor, objective: torch.Tensor | None, seen: int) -> None:
    if objective is not None and not bool(torch.isfinite(total + objective.detach())):
        bad = float(total) if not torch.isfinite(total) else float(objective.detach())
        raise DivergenceError(f"loss became {bad} within the first {seen} samples")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on (x, y), in [0, 1]; counted on the device, one sync.

    Its time goes to the ``evaluate`` part of the active :class:`~admmsearch.timing.Timings`.
    """
    model.eval()
    if len(y) == 0:
        return float("nan")
    with part("evaluate"):
        correct = torch.zeros((), dtype=torch.long, device=y.device)
        for xb, yb in batches(x, y, batch_size, shuffle=False):
            correct += (model(xb).argmax(dim=1) == yb).sum()
        return int(correct) / len(y)


def fit(
    model: nn.Module,
    data: DataSplits,
    s: TrainSettings,
    *,
    seed: int,
    hooks: StepHooks = StepHooks(),
    recipe: Recipe = _OWN,
    stage: str = "train",
) -> list[float]:
    """Train ``s.epochs`` epochs with a fresh optimizer; returns the mean loss of each epoch.

    ``recipe`` holds the user's training hooks; ``stage`` names the stage to a custom step.
    """
    optimizer = make_optimizer(model, s)
    base = [g["lr"] for g in optimizer.param_groups]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    losses = []
    for index in range(s.epochs):
        for group, lr in zip(optimizer.param_groups, base, strict=True):
            group["lr"] = lr * _lr_factor(s, index)
        epoch = Epoch(s.batch_size, generator, hooks, recipe, stage, index)
        losses.append(train_epoch(model, data, optimizer, epoch))
        if hooks.on_epoch is not None:
            hooks.on_epoch(index, losses[-1])
    return losses


def fit_best(
    model: nn.Module,
    data: DataSplits,
    s: TrainSettings,
    *,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    recipe: Recipe = _OWN,
    stage: str = "train",
) -> tuple[list[float], int, float | None]:
    """:func:`fit`, then go back to the weights of the epoch with the best validation accuracy.

    Validation accuracy is measured after every epoch (forward passes only); on a tie the later
    epoch wins. Everything in the model's ``state_dict`` (parametrization buffers included) is
    restored, so a retraining stage ends exactly as it was after that epoch.

    Returns:
        The mean loss of each epoch, the kept epoch (1-based; 0 when there was none) and its
        validation accuracy (None when there was none).
    """
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def keep(epoch: int, loss: float) -> None:
        nonlocal best
        accuracy = evaluate(model, data.x_val, data.y_val)
        if best is None or not accuracy < best[0]:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best = (accuracy, epoch + 1, state)
        if on_epoch is not None:
            on_epoch(epoch, loss)

    losses = fit(
        model, data, s, seed=seed, hooks=StepHooks(on_epoch=keep), recipe=recipe, stage=stage
    )
    if best is None:
        return losses, 0, None
    model.load_state_dict(best[2])
    return losses, best[1], best[0]
