"""Tests for admmsearch.models: registry models, factories by name, compressible layers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from admmsearch.data import batches, load_dataset
from admmsearch.errors import ConfigError, LayerError, RegistryError, UserCodeError
from admmsearch.models import MODELS, compressible_layers, create_model

CASES = [
    ("digits-cnn", (1, 8, 8)),
    ("lenet-300-100", (1, 28, 28)),
    ("lenet5", (1, 28, 28)),
    ("resnet20", (3, 32, 32)),
    ("vgg16", (3, 32, 32)),
]


def build(name: str, shape: tuple[int, ...], num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes=num_classes, input_shape=shape)


def test_every_registered_model_is_tested() -> None:
    assert sorted(name for name, _ in CASES) == MODELS.names()


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_models_build_and_forward(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape, num_classes=7)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_models_are_seeded(name: str, shape: tuple[int, ...]) -> None:
    a, b = build(name, shape), build(name, shape)
    for (key, left), right in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(left, right), key


def test_resnet20_size_and_layers() -> None:
    model = build("resnet20", (3, 32, 32))
    assert 260_000 < sum(p.numel() for p in model.parameters()) < 280_000
    layers = compressible_layers(model)
    assert len(layers) == 20  # 19 convs + the classifier
    assert sum(isinstance(m, nn.Conv2d) for m in layers.values()) == 19
    assert list(layers)[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]


def test_vgg16_has_13_convs_and_two_linears() -> None:
    layers = compressible_layers(build("vgg16", (3, 32, 32)))
    assert sum(isinstance(m, nn.Conv2d) for m in layers.values()) == 13
    assert [tuple(m.weight.shape) for m in layers.values() if isinstance(m, nn.Linear)] == [
        (512, 512),
        (10, 512),
    ]


def test_lenet5_names_and_shapes() -> None:
    layers = compressible_layers(build("lenet5", (1, 28, 28)))
    shapes = {name: tuple(module.weight.shape) for name, module in layers.items()}
    assert shapes == {
        "conv1": (20, 1, 5, 5),
        "conv2": (50, 20, 5, 5),
        "fc1": (500, 800),
        "fc2": (10, 500),
    }


def test_models_adapt_to_input_shape() -> None:
    assert build("lenet5", (3, 32, 32)).fc1.in_features == 50 * 5 * 5
    assert build("lenet-300-100", (1, 8, 8)).fc1.in_features == 64
    assert build("digits-cnn", (3, 12, 10)).fc1.in_features == 32 * 6 * 5


def test_digits_cnn_learns_digits_quickly() -> None:
    torch.manual_seed(0)
    splits = load_dataset("digits", seed=0)
    model = create_model("digits-cnn", num_classes=10, input_shape=splits.input_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        for xb, yb in batches(splits.x_train, splits.y_train, 64, shuffle=True, generator=gen):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(splits.x_test).argmax(1) == splits.y_test).float().mean().item()
    assert accuracy > 0.95


# ---- compressible_layers ----------------------------------------------------------------------


def test_compressible_layers_default_order_and_types() -> None:
    model = nn.Sequential(
        nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2), nn.Conv3d(2, 2, 1), nn.ReLU(), nn.Linear(4, 2)
    )
    layers = compressible_layers(model)
    assert list(layers) == ["0", "2", "4"]
    assert layers["4"] is model[4]


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["conv*"], ["conv1", "conv2"]),
        (["fc2", "conv2"], ["conv2", "fc2"]),  # model order, not pattern order
        ("fc?", ["fc1", "fc2"]),
        (["*"], ["conv1", "conv2", "fc1", "fc2"]),
        ([], []),
    ],
)
def test_compressible_layers_with_patterns(patterns, expected: list[str]) -> None:
    assert list(compressible_layers(build("lenet5", (1, 28, 28)), patterns)) == expected


def test_compressible_layers_glob_on_nested_names() -> None:
    model = build("resnet20", (3, 32, 32))
    layers = compressible_layers(model, ["layer2.*.conv*", "fc"])
    assert len(layers) == 7 and list(layers)[-1] == "fc"
    assert all(name.startswith("layer2.") for name in list(layers)[:-1])
    # a glob selects every module with a weight, BatchNorm included
    wide = compressible_layers(model, ["layer2.*"])
    assert [type(m).__name__ for m in wide.values()] == ["Conv2d", "BatchNorm2d"] * 6


def test_unknown_pattern_is_a_layer_error_listing_valid_names() -> None:
    with pytest.raises(LayerError) as info:
        compressible_layers(build("lenet5", (1, 28, 28)), ["conv1", "conv9*"])
    message = str(info.value)
    assert "'conv9*'" in message and "conv1, conv2, fc1, fc2" in message
    assert isinstance(info.value, KeyError)


class HalfMask(nn.Module):
    """Zero the first half of the output rows, like a pruning mask would."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(weight)
        mask[: weight.shape[0] // 2] = 0
        return weight * mask


def test_parametrized_layers_are_still_found() -> None:
    model = build("lenet5", (1, 28, 28))
    before = compressible_layers(model)
    parametrize.register_parametrization(model.conv1, "weight", HalfMask())
    parametrize.register_parametrization(model.fc1, "weight", HalfMask())
    after = compressible_layers(model)
    assert list(after) == ["conv1", "conv2", "fc1", "fc2"]
    assert all(after[name] is before[name] for name in after)
    assert parametrize.is_parametrized(after["conv1"], "weight")
    assert (after["conv1"].weight[:10] == 0).all()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert list(compressible_layers(model, ["conv*"])) == ["conv1", "conv2"]


# ---- models by name ---------------------------------------------------------------------------


def test_torchvision_model_by_name() -> None:
    model = create_model("torchvision:resnet18", num_classes=10, input_shape=(3, 32, 32))
    assert model.fc.out_features == 10
    assert "conv1" in compressible_layers(model)


def test_unknown_torchvision_model_lists_valid_names() -> None:
    with pytest.raises(RegistryError, match="resnet18"):
        create_model("torchvision:resnet9000", num_classes=10, input_shape=(3, 32, 32))


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(RegistryError, match="lenet5.*resnet20"):
        create_model("alexnet-tiny", num_classes=10, input_shape=(3, 32, 32))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"input_shape": (1, 0, 28)}, "input_shape"),
        ({"input_shape": (1, 8, 8)}, "lenet5"),  # too small for two 5x5 convs
        ({"dropout": 0.5}, "dropout"),
    ],
)
def test_bad_model_arguments_are_config_errors(kwargs: dict, pattern: str) -> None:
    options = {"num_classes": 10, "input_shape": (1, 28, 28), **kwargs}
    with pytest.raises(ConfigError, match=pattern):
        create_model("lenet5", **options)


FACTORY_MODULE = """
import math
from torch import nn

def build(num_classes, input_shape, hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))

def by_channels(in_channels, num_classes):
    return nn.Conv2d(in_channels, num_classes, 1)

def not_a_model(**kwargs):
    return kwargs
"""


@pytest.fixture()
def factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "admm_test_factories.py").write_text(textwrap.dedent(FACTORY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "admm_test_factories"


def test_module_function_model(factory_module: str) -> None:
    model = create_model(f"{factory_module}:build", num_classes=3, input_shape=(1, 4, 4), hidden=5)
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 3)
    assert list(compressible_layers(model)) == ["1", "3"]
    assert model[1].out_features == 5
    conv = create_model(f"{factory_module}:by_channels", num_classes=4, input_shape=(2, 5, 5))
    assert tuple(conv.weight.shape) == (4, 2, 1, 1)


def test_module_function_must_return_a_module(factory_module: str) -> None:
    with pytest.raises(UserCodeError, match="nn.Module"):
        create_model(f"{factory_module}:not_a_model", num_classes=3, input_shape=(1, 4, 4))
    with pytest.raises(ConfigError, match="hidden"):
        create_model(f"{factory_module}:by_channels", num_classes=3, input_shape=(1, 1), hidden=2)
