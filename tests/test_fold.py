"""BatchNorm folding: pairs found on the graph, predictions kept, the deployed network packed."""

from __future__ import annotations

import doctest
import warnings

import pytest
import torch
from torch import nn

from admmsearch import fold
from admmsearch.data import load_dataset
from admmsearch.deploy._predict import load_model
from admmsearch.fold import conv_bn_pairs, fold_batchnorm, remove_reparametrizations
from admmsearch.models import compressible_layers, create_model
from admmsearch.packed._format import ModelMeta, pack_model, read_model_file
from admmsearch.pipeline import PipelineSettings, QuantRetrainSettings, run_pipeline
from admmsearch.plan import Plan
from admmsearch.train import TrainSettings


def _settle(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """Move the BatchNorm statistics off their defaults, then eval mode."""
    generator = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, *shape, generator=generator) * 3 + 1)
    return model.eval()


def test_module_docstring_example_runs() -> None:
    assert doctest.testmod(fold).failed == 0


def test_folding_keeps_predictions_of_a_resnet() -> None:
    torch.manual_seed(0)
    model = _settle(create_model("resnet20", num_classes=10, input_shape=(3, 8, 8)), (3, 8, 8))
    x = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(x)
    done = fold_batchnorm(model)
    assert len(done.pairs) == 19 and done.skipped is None  # stem + 2 per block, 9 blocks
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-4)
    assert torch.equal(before.argmax(1), after.argmax(1))
    assert model.conv1.bias is not None  # the folded conv gained a bias


class _Odd(nn.Module):
    """Pairs that must not fold: shared output, ReLU between, a conv called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.b, self.bn_b = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c, self.bn_c = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.t, self.bn_t = nn.ConvTranspose2d(4, 3, 2, stride=2), nn.BatchNorm2d(3)

    def forward(self, x):
        a = self.a(x)
        y = self.bn_a(a) + a  # the conv's output is used twice
        y = self.bn_b(torch.relu(self.b(y)))  # not directly after the conv
        y = self.bn_c(self.c(self.c(y)))  # the conv is called twice
        return self.bn_t(self.t(y))  # a transposed conv folds


def test_only_safe_pairs_fold() -> None:
    model = _settle(_Odd(), (2, 4, 4))
    assert conv_bn_pairs(model) == (("t", "bn_t"),)
    x = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(x)
        fold_batchnorm(model)
        assert torch.allclose(before, model(x), rtol=1e-4, atol=1e-5)


class _Dynamic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.bn(self.conv(x))


def test_untraceable_model_folds_nothing_and_says_why() -> None:
    done = fold_batchnorm(_Dynamic())
    assert done.pairs == () and done.skipped.startswith("TraceError")


def test_pipeline_folds_and_packs_the_deployed_network(tmp_path) -> None:
    data = load_dataset("digits", seed=0, limit_train=300)
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, input_shape=(1, 8, 8), blocks=1)
    plan = Plan.uniform(list(compressible_layers(model)), keep=0.5, bits=6)
    train = TrainSettings(epochs=1, lr=0.05, batch_size=64)
    settings = PipelineSettings(
        pretrain=TrainSettings(epochs=3, lr=0.05, batch_size=64),
        admm_prune=None,
        retrain=train,
        admm_quantize=None,
        quant_retrain=QuantRetrainSettings(train, shares=(1.0,)),
    )
    result = run_pipeline(model, data, plan, settings)
    assert len(result.folding.pairs) == 7
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert result.storage.other_bits == 0  # no float32 BatchNorm left beside the convs
    config_meta = ModelMeta("resnet20", {"blocks": 1}, 10, (1, 8, 8), True, data.normalisation)
    path = tmp_path / "resnet.admm"
    pack_model(model, list(compressible_layers(model)), path, meta=config_meta)
    assert read_model_file(path).meta.folded
    deployed = load_model(path)  # rebuilt, folded again, loaded: same predictions
    with torch.no_grad():
        expected = model.eval()(data.x_test)
    raw = data.x_test * torch.tensor(data.normalisation.std[0]) + data.normalisation.mean[0]
    logits = deployed.logits(raw)
    assert torch.allclose(logits, expected, rtol=1e-3, atol=1e-3)


def test_folding_can_be_turned_off() -> None:
    data = load_dataset("digits", seed=0, limit_train=100)
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, input_shape=(1, 8, 8), blocks=1)
    settings = PipelineSettings(
        pretrain=None, admm_prune=None, retrain=None, admm_quantize=None, quant_retrain=None,
        fold_batchnorm=False,
    )  # fmt: skip
    result = run_pipeline(model, data, Plan(), settings)
    assert result.folding.pairs == () and result.storage.other_bits > 0


def _gconvt(groups: int, affine: bool = True) -> nn.Module:
    """cases/35: a grouped ConvTranspose2d -> BatchNorm2d (a decoder's upsampling block)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.ConvTranspose2d(8, 8, 2, stride=2, groups=groups, bias=groups == 8),
        nn.BatchNorm2d(8, affine=affine),
        nn.ReLU(),
    )


@pytest.mark.parametrize(
    ("groups", "affine"), [(1, True), (2, True), (4, False), (8, True)], ids=str
)
def test_a_grouped_transposed_convolution_folds_exactly(groups: int, affine: bool) -> None:
    """torch's fuse_conv_bn_weights takes dim 1 of a transposed weight for the output channels,
    which is out/groups: groups 2 raised a size mismatch, groups == out channels mixed them up."""
    torch.manual_seed(0)
    model = _settle(_gconvt(groups, affine), (1, 8, 8))
    if affine:
        with torch.no_grad():
            model[2].weight.uniform_(0.5, 2.0)
            model[2].bias.uniform_(-1.0, 1.0)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(x)
    assert fold_batchnorm(model).pairs == (("1", "2"),)
    with torch.no_grad():
        after = model(x)
    assert isinstance(model[2], nn.Identity)
    assert torch.allclose(before, after, rtol=1e-5, atol=1e-5), (before - after).abs().max()


def _normed(kind: str) -> nn.Module:
    """cases/36: a conv and a linear layer with weight (or spectral) normalisation."""
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    )
    if kind == "param":
        torch.nn.utils.parametrizations.weight_norm(net[0])
        torch.nn.utils.parametrizations.spectral_norm(net[3])
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.nn.utils.weight_norm is deprecated
            torch.nn.utils.weight_norm(net[0])
            torch.nn.utils.spectral_norm(net[3])
    return net


@pytest.mark.parametrize("kind", ["param", "hook"])
def test_weight_and_spectral_norm_become_the_plain_weight_they_compute(kind: str) -> None:
    torch.manual_seed(0)
    model = _normed(kind)
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    model.train()
    model(x)  # a training step moves spectral norm's power iteration
    model.eval()
    with torch.no_grad():
        before = model(x)
    assert remove_reparametrizations(model) == ("0.weight", "3.weight")
    assert sorted(model.state_dict()) == ["0.bias", "0.weight", "3.bias", "3.weight"]
    with torch.no_grad():
        assert torch.allclose(before, model(x), rtol=1e-5, atol=1e-6)
    assert remove_reparametrizations(model) == ()


NORMED = """
import warnings
from torch import nn
from torch.nn.utils import parametrizations


def _net(num_classes, in_channels):
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, num_classes),
    )


def build_param(num_classes=10, in_channels=1):
    net = _net(num_classes, in_channels)
    parametrizations.weight_norm(net[2])
    parametrizations.spectral_norm(net[5])
    return net


def build_hook(num_classes=10, in_channels=1):
    net = _net(num_classes, in_channels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nn.utils.weight_norm(net[2])
        nn.utils.weight_norm(net[5])
    return net
"""


@pytest.mark.parametrize("flavour", ["build_param", "build_hook"])
def test_weight_normed_layers_are_compressed_packed_and_rebuilt(tmp_path, flavour) -> None:
    """cases/36: compress died after training on '_WeightNorm' object has no attribute 'mask'
    (or on the hook's missing weight): the normalised layers now train as written, are made
    plain before pruning, and the packed file rebuilds and predicts like the compressed net."""
    (tmp_path / "wnorm.py").write_text(NORMED)
    name = f"{tmp_path / 'wnorm.py'}:{flavour}"
    data = load_dataset("digits", seed=0, limit_train=200)
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_shape=(1, 8, 8))
    layers = list(compressible_layers(model))
    plan = Plan.uniform(layers, keep=0.3, bits=4)
    train = TrainSettings(epochs=1, lr=0.05, batch_size=64)
    settings = PipelineSettings(
        pretrain=train,
        admm_prune=None,
        retrain=train,
        admm_quantize=None,
        quant_retrain=QuantRetrainSettings(train, shares=(1.0,)),
    )
    result = run_pipeline(model, data, plan, settings)
    assert {row.name: row.nonzeros for row in result.storage.layers}["2"] <= 0.3 * 8 * 8 * 9 + 1
    path = tmp_path / "w.admm"
    meta = ModelMeta(name, {}, 10, (1, 8, 8), False, data.normalisation)
    pack_model(model, layers, path, meta=meta)
    deployed = load_model(path, trust_code=True)
    raw = data.x_test * torch.tensor(data.normalisation.std[0]) + data.normalisation.mean[0]
    with torch.no_grad():
        assert torch.allclose(deployed.logits(raw), model.eval()(data.x_test), atol=1e-4)


class _Mixed(nn.Module):
    """A convolution with its BatchNorm (folds) and a linear layer with one (does not)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)
        self.fc, self.norm = nn.Linear(4 * 6 * 6, 8), nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x))).flatten(1)
        return self.out(torch.relu(self.norm(self.fc(x))))


@pytest.mark.parametrize("batchnorm", [True, False])
def test_what_is_folded_and_what_stays_raw_is_known_before_and_agrees_with_the_pipeline(
    batchnorm: bool,
) -> None:
    """cases/42: said from a fresh model folded as the pipeline folds, not from the model
    before folding (which listed the folded BatchNorm as stored raw)."""
    from admmsearch.fold import describe_layers, fold_model
    from admmsearch.models import uncompressed_layers

    layers = ["conv", "fc", "out"]
    folding = fold_model(_Mixed(), batchnorm)
    model = _Mixed()
    fold_model(model, batchnorm)
    raw = uncompressed_layers(model, layers)
    expected = (
        {"norm": "BatchNorm1d"} if batchnorm else {"bn": "BatchNorm2d", "norm": "BatchNorm1d"}
    )
    assert raw == expected
    assert folding.pairs == ((("conv", "bn"),) if batchnorm else ())
    data = load_dataset("digits", seed=0, limit_train=100)
    settings = PipelineSettings(
        pretrain=None, admm_prune=None, retrain=None, admm_quantize=None, quant_retrain=None,
        fold_batchnorm=batchnorm,
    )  # fmt: skip
    result = run_pipeline(_Mixed(), data, Plan.uniform(layers, bits=8), settings)
    assert result.folding.pairs == folding.pairs and dict(result.uncompressed) == raw
    text = describe_layers(folding.pairs, raw)
    if batchnorm:
        assert text == (
            "BatchNorm folded into convolutions: bn -> conv\n"
            "uncompressed layers (stored raw): norm (BatchNorm1d)"
        )
    else:
        assert text == "uncompressed layers (stored raw): bn (BatchNorm2d), norm (BatchNorm1d)"


def test_the_description_says_when_nothing_folds_because_tracing_failed() -> None:
    from admmsearch.fold import describe_layers

    text = describe_layers((), {}, skipped="TraceError: control flow")
    assert text.splitlines() == [
        "BatchNorm not folded: the model does not trace (TraceError: control flow)",
        "uncompressed layers (stored raw): none",
    ]
