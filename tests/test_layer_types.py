"""Every kind of layer with a weight: compressed when selected, listed when left uncompressed.

Transposed convolutions (1-D, 2-D, 3-D), grouped and depthwise convolutions and linear layers are
compressed by default; a layer pattern or a plan selects any other module with a weight; the
rest are listed. Structured pruning of a transposed convolution removes its output channels,
which lie on axis 1 of its weight.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import Tensor, nn

from admmsearch.admm import RhoSchedule
from admmsearch.cli import main
from admmsearch.constraints import StructuredSparsity
from admmsearch.data import load_dataset
from admmsearch.errors import LayerError
from admmsearch.models import compressible_layers, output_channels, uncompressed_layers
from admmsearch.packed._format import pack_model, read_packed, unpack_into
from admmsearch.pipeline import AdmmSettings, PipelineSettings, QuantRetrainSettings, run_pipeline
from admmsearch.plan import Plan
from admmsearch.train import TrainSettings

CONVS = ["grouped", "depthwise", "up1d", "up2d", "up3d", "fc"]


class EveryKind(nn.Module):
    """One layer of each compressible kind on 8x8 digits, plus a BatchNorm and an Embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.grouped = nn.Conv2d(4, 6, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.up1d = nn.ConvTranspose1d(6, 4, 1, groups=2)
        self.up2d = nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2)  # 8x8 -> 16x16
        self.up3d = nn.ConvTranspose3d(6, 4, 1, groups=2)
        self.bn = nn.BatchNorm2d(4)
        self.embed = nn.Embedding(3, 2)  # has a weight, is not used on the data path
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.depthwise(torch.relu(self.grouped(torch.relu(self.stem(x))))))
        n, c, h, w = x.shape
        x = torch.relu(self.up1d(x.reshape(n, c, h * w))).reshape(n, -1, h, w)
        x = torch.relu(self.up2d(x))
        x = self.up3d(x.unsqueeze(2)).squeeze(2)
        x = nn.functional.avg_pool2d(torch.relu(self.bn(x)), 4)
        return self.fc(x.flatten(1))


def _model(seed: int = 0) -> EveryKind:
    torch.manual_seed(seed)
    return EveryKind()


def test_every_conv_and_linear_kind_is_compressible_and_the_rest_is_listed() -> None:
    model = _model()
    layers = compressible_layers(model)
    assert list(layers) == ["stem", *CONVS]
    assert uncompressed_layers(model, layers) == {"bn": "BatchNorm2d", "embed": "Embedding"}
    assert output_channels(model.up2d) == (1, 2) and output_channels(model.grouped) == (0, 1)
    # a pattern selects any module with a weight; an exact name selects that module alone
    assert list(compressible_layers(model, ["bn", "up*"])) == ["up1d", "up2d", "up3d", "bn"]
    with pytest.raises(LayerError, match="'nope' match no layer with a weight"):
        compressible_layers(model, ["nope"])


def test_odd_module_names_are_matched_exactly_not_as_globs() -> None:
    model = nn.ModuleDict({"fc[0]": nn.Linear(2, 2), "fc0": nn.Linear(2, 2)})
    assert list(compressible_layers(model, ["fc[0]"])) == ["fc[0]"]
    assert list(compressible_layers(model, ["fc[!x]"])) == ["fc0"]


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_structured_pruning_of_a_transposed_conv_removes_whole_output_channels(groups) -> None:
    torch.manual_seed(groups)
    layer = nn.ConvTranspose2d(6, 6, 3, groups=groups)
    constraint = StructuredSparsity(2, *output_channels(layer))
    norms = constraint.channels(layer.weight.detach()).norm(dim=1)
    mask = constraint.mask(layer.weight)
    with torch.no_grad():
        layer.weight.mul_(mask)
        out = layer(torch.randn(5, 6, 4, 4))
    kept = [c for c in range(6) if not (out[:, c] == layer.bias[c]).all()]
    assert kept == sorted(norms.topk(2).indices.tolist())  # the 2 of largest L2 norm
    assert int(mask.sum()) == 2 * (6 // groups) * 3 * 3  # every weight feeding them


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, limit_train=300)


def _settings() -> PipelineSettings:
    admm = AdmmSettings(
        train=TrainSettings(epochs=1, lr=0.02, batch_size=32), rho=RhoSchedule(1e-2, 2.0)
    )
    return PipelineSettings(
        pretrain=TrainSettings(epochs=3, lr=0.05, batch_size=32),
        admm_prune=admm,
        retrain=TrainSettings(epochs=1, lr=0.02, batch_size=32),
        admm_quantize=admm,
        quant_retrain=QuantRetrainSettings(TrainSettings(epochs=1, batch_size=32), (1.0,)),
    )


def test_each_kind_is_pruned_quantized_packed_and_unpacked(digits, tmp_path) -> None:
    """Transposed convs pruned by output channel, the others by weight; a plan naming the
    BatchNorm compresses it too; the packed file gives back the exact weights."""
    model = _model()
    plan = {name: {"keep": 0.5, "bits": 4} for name in CONVS}
    plan.update({"up2d": {"keep": 0.5, "structured": True, "bits": 3}, "bn": {"bits": 2}})
    result = run_pipeline(model, digits, Plan.from_dict({"layers": plan}), _settings())
    stored = {s.name: s for s in result.storage.layers}
    assert list(stored) == ["stem", *CONVS[:-1], "bn", "fc"]  # bn: the plan names it
    assert result.uncompressed == {"embed": "Embedding"}
    for name in CONVS:
        w = getattr(model, name).weight
        assert int((w != 0).sum()) == round(0.5 * w.numel()), name
        assert w[w != 0].unique().numel() <= 2**4, name
    up = StructuredSparsity(0.5, *output_channels(model.up2d)).channels(model.up2d.weight)
    assert int((up.abs().sum(dim=1) > 0).sum()) == 3  # 3 of 6 output channels left
    assert model.bn.weight.unique().numel() <= 3  # 2 bits on a dense layer: {-a, 0, a}
    info = pack_model(model, list(stored), tmp_path / "every.admm")
    state = read_packed(info.path)
    for key, tensor in model.state_dict().items():
        assert torch.equal(state[key], tensor), key
    fresh = unpack_into(_model(seed=1), info.path)
    x = digits.x_test[:16]
    model.eval(), fresh.eval()
    assert torch.equal(fresh(x), model(x))


UPSAMPLER = """
from torch import nn


def build(num_classes):
    return nn.Sequential(
        nn.ConvTranspose2d(1, 4, 2, stride=2),
        nn.GroupNorm(2, 4),  # has a weight; not a Conv -> BatchNorm pair, so not folded
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )
"""


@pytest.mark.slow
def test_compress_accepts_a_plan_naming_a_transposed_conv_and_lists_the_rest(
    tmp_path, monkeypatch
) -> None:
    (tmp_path / "upsampler.py").write_text(UPSAMPLER)
    monkeypatch.syspath_prepend(str(tmp_path))
    plan = tmp_path / "plan.yaml"
    plan.write_text("layers:\n  '0': {keep: 0.5, structured: true, bits: 4}\n")
    out = tmp_path / "up.admm"
    args = ["compress", "--model", "upsampler:build", "--plan", str(plan), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "uncompressed layers (stored raw): 1 (GroupNorm)" in result.stdout
    state = read_packed(out)
    kept = (state["0.weight"].abs().sum(dim=(0, 2, 3)) > 0).tolist()
    assert sorted(kept) == [False, False, True, True]  # 2 of the 4 output channels (axis 1)
    result = CliRunner().invoke(main, [*args, "--format", "json"])
    assert json.loads(result.stdout)["uncompressed_layers"] == {"1": "GroupNorm"}
