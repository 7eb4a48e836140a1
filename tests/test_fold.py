"""BatchNorm folding: pairs found on the graph, predictions kept, the deployed network packed."""

from __future__ import annotations

import doctest

import torch
from torch import nn

from admmsearch import fold
from admmsearch.data import load_dataset
from admmsearch.deploy._predict import load_model
from admmsearch.fold import conv_bn_pairs, fold_batchnorm
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
