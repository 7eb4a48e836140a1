"""Training (admmsearch.train): settings checked, seeded plain loops, and retraining that ends
on its best validation epoch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from admmsearch.errors import ConfigError, DivergenceError
from admmsearch.models import create_model
from admmsearch.train import (
    StepHooks,
    TrainSettings,
    evaluate,
    fit,
    fit_best,
    lr_factors,
    make_optimizer,
)


def test_fit_best_ends_with_the_weights_of_its_best_validation_epoch(digits, dense_copy) -> None:
    model = dense_copy()
    seen: list[tuple[float, dict]] = []

    def watch(epoch: int, loss: float) -> None:
        state = {k: v.clone() for k, v in model.state_dict().items()}
        seen.append((evaluate(model, digits.x_val, digits.y_val), state))

    # A high learning rate makes the epochs' validation accuracies go up and down.
    s = TrainSettings(epochs=6, lr=0.3, batch_size=32, schedule="constant")
    _, kept, accuracy = fit_best(model, digits, s, seed=1, on_epoch=watch)
    accuracies = [a for a, _ in seen]
    best = max(range(len(seen)), key=lambda i: (accuracies[i], i))
    assert kept == best + 1
    assert evaluate(model, digits.x_val, digits.y_val) == max(accuracies) == accuracy
    for key, value in model.state_dict().items():
        assert torch.equal(value, seen[best][1][key]), key
    assert kept < len(seen)  # this case does roll back to an earlier epoch


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": -1}, "TrainSettings: epochs: must be >= 0, got -1"),
        ({"lr": 0.0}, "lr: must be > 0"),
        ({"optimizer": "lion"}, "optimizer: must be one of"),
        ({"schedule": "warm"}, "schedule: must be one of"),
        ({"batch_size": 0}, "TrainSettings: batch_size: must be >= 1, got 0"),
    ],
)
def test_bad_settings_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainSettings(**change)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_codebooks_are_kept_out_of_weight_decay(name: str) -> None:
    from admmsearch.masking import quantize_

    model = create_model("digits-cnn", num_classes=10, input_shape=(1, 8, 8))
    q = quantize_(model.fc2, torch.tensor([-0.1, 0.1]), "centroids")
    optimizer = make_optimizer(model, TrainSettings(optimizer=name, weight_decay=1e-3))
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(q.grid)] == 0.0 and decay[id(model.fc1.weight)] == 1e-3
    assert type(optimizer).__name__.lower() == name


def test_fit_is_seeded_and_a_diverging_loss_is_refused(digits) -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_model("digits-cnn", num_classes=10, input_shape=digits.input_shape)
        fit(model, digits, TrainSettings(epochs=1, lr=0.05, batch_size=64), seed=3)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    model = create_model("digits-cnn", num_classes=10, input_shape=digits.input_shape)
    with pytest.raises(DivergenceError):
        fit(model, digits, TrainSettings(epochs=2, lr=1e6, batch_size=64), seed=0)


@pytest.mark.parametrize(
    ("epochs", "factors"),
    [
        (9, [1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01]),
        (4, [1, 1, 0.1, 0.1]),
        (2, [1, 0.1]),
        (1, [1]),
    ],
)
def test_the_step_schedule_divides_the_rate_by_ten_after_each_third(epochs, factors) -> None:
    """As README and TrainSettings say: ``step`` multiplies lr by 0.1 every ceil(E / 3)."""
    s = TrainSettings(epochs=epochs, schedule="step")
    assert lr_factors(s) == pytest.approx(factors)
    assert lr_factors(s.replace(schedule="constant")) == [1.0] * epochs


def _bias_moves(digits, schedule: str) -> list[torch.Tensor]:
    """How far a linear model's bias moves in each of 3 epochs of one full batch each."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    biases = [model[1].bias.detach().clone()]
    s = TrainSettings(epochs=3, lr=0.1, momentum=0.0, schedule=schedule, batch_size=4096)
    watch = StepHooks(on_epoch=lambda e, loss: biases.append(model[1].bias.detach().clone()))
    fit(model, digits, s, seed=0, hooks=watch)
    return [b - a for a, b in zip(biases, biases[1:], strict=False)]


def test_fit_trains_each_epoch_at_its_scheduled_rate(digits) -> None:
    """SGD without momentum: both schedules take the same first step from the same weights,
    then ``step`` takes a tenth of ``constant``'s second one."""
    constant, step = _bias_moves(digits, "constant"), _bias_moves(digits, "step")
    assert torch.allclose(step[0], constant[0])
    assert torch.allclose(step[1], 0.1 * constant[1], atol=1e-7)
