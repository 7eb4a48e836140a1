"""The whole pipeline on the embedded digits data: exact targets, accuracy, honest storage."""

from __future__ import annotations

import pytest
import torch

from admmsearch.admm import RhoSchedule
from admmsearch.constraints import Sparsity
from admmsearch.data import load_dataset
from admmsearch.errors import ConstraintError, DivergenceError, LayerError
from admmsearch.models import compressible_layers, create_model
from admmsearch.pipeline import (
    PipelineHooks,
    dense_stage,
    fold_stage,
    network,
    prune_phase,
    quantize_phase,
    run_pipeline,
)
from admmsearch.plan import Plan
from admmsearch.settings import AdmmSettings, PipelineSettings, QuantRetrainSettings
from admmsearch.train import TrainSettings

PLAN = {
    "layers": {
        "conv1": {"keep": 0.6, "bits": 4},
        "conv2": {"keep": 0.3, "bits": 3},
        "fc1": {"keep": 0.1, "bits": 2},
        "fc2": {"keep": 0.5, "clusters": 8},
    }
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def fast_settings(**overrides) -> PipelineSettings:
    admm = AdmmSettings(
        train=TrainSettings(epochs=3, lr=0.02, batch_size=32),
        rho=RhoSchedule(1e-2, 0.5, updates=12),
    )
    base = dict(
        pretrain=TrainSettings(epochs=6, lr=0.05, batch_size=32),
        admm_prune=admm,
        retrain=TrainSettings(epochs=2, lr=0.02, batch_size=32),
        admm_quantize=admm,
        quant_retrain=QuantRetrainSettings(
            TrainSettings(epochs=1, lr=0.01, batch_size=32), shares=(0.5, 1.0)
        ),
    )
    base.update(overrides)
    return PipelineSettings(**base)


def model_for(data, seed: int = 0):
    torch.manual_seed(seed)
    return create_model("digits-cnn", num_classes=data.num_classes, input_shape=data.input_shape)


def test_layer_names_used_by_the_plan_exist(digits) -> None:
    assert set(PLAN["layers"]) == set(compressible_layers(model_for(digits)))


def test_pipeline_reaches_exact_targets_and_keeps_accuracy(digits) -> None:
    model = model_for(digits)
    plan = Plan.from_dict(PLAN)
    result = run_pipeline(model, digits, plan, fast_settings())
    names = [s.name for s in result.stages]
    assert names == ["dense", "admm_prune", "retrain", "admm_quantize", "quant_retrain"]
    layers = compressible_layers(model)
    for name, lp in plan.layers.items():
        w = layers[name].weight.detach()
        assert int((w != 0).sum()) <= Sparsity(lp.keep).count(w.numel())
        assert int((w != 0).sum()) >= Sparsity(lp.keep).count(w.numel()) - 2  # levels may hit 0
        retrain = result.stages[2].layers[name]
        assert retrain["nonzeros"] == Sparsity(lp.keep).count(w.numel())
        limit = 2**lp.bits if lp.bits else lp.clusters
        assert w[w != 0].unique().numel() <= limit
    assert result.dense.val_accuracy > 0.9
    # uniform layers are charged one float32 scale and b-bit codes; only the learned centroids
    # of fc2 pay a codebook (issue 11.3: a 4-bit layer paid 16 float32 levels)
    for row in result.storage.layers:
        lp = plan.layers[row.name]
        if lp.bits is not None:
            assert (row.coding, row.codebook_size) == ("uniform", 0)
            assert row.code_bits <= lp.bits and row.data_bits == row.nonzeros * row.code_bits + 32
        else:
            assert row.coding == "codebook" and row.codebook_size <= lp.clusters
    assert result.final.test_accuracy > 0.8  # chance is 0.1
    assert result.storage.weight_ratio_with_index > 5
    assert all(r.primal_total >= 0 for r in result.stages[1].residuals)


def test_pipeline_is_deterministic(digits) -> None:
    settings = fast_settings(admm_quantize=None, quant_retrain=None)
    plan = Plan.from_dict({"layers": {"fc1": {"keep": 0.2}}})
    a = run_pipeline(model_for(digits), digits, plan, settings)
    b = run_pipeline(model_for(digits), digits, plan, settings)
    assert [s.test_accuracy for s in a.stages] == [s.test_accuracy for s in b.stages]


def test_pruned_weights_stay_zero_through_momentum_and_weight_decay(digits) -> None:
    settings = fast_settings(
        admm_prune=None,
        admm_quantize=None,
        quant_retrain=None,
        retrain=TrainSettings(epochs=2, lr=0.05, momentum=0.9, weight_decay=1e-3),
    )
    plan = Plan.from_dict({"layers": {"conv2": {"keep": 0.25}}})
    model = model_for(digits)
    result = run_pipeline(model, digits, plan, settings)
    w = compressible_layers(model)["conv2"].weight
    assert int((w != 0).sum()) == Sparsity(0.25).count(w.numel())
    assert [s.name for s in result.stages] == ["dense", "retrain"]


def test_progressive_and_structured_pruning(digits) -> None:
    plan = Plan.from_dict(
        {"layers": {"conv2": {"keep": 0.25, "structured": True}, "fc1": {"keep": 0.05}}}
    )
    settings = fast_settings(progressive_steps=2, admm_quantize=None, quant_retrain=None)
    model = model_for(digits)
    result = run_pipeline(model, digits, plan, settings)
    assert [s.name for s in result.stages][1:] == [
        "admm_prune_step1",
        "retrain_step1",
        "admm_prune_step2",
        "retrain_step2",
    ]
    layers = compressible_layers(model)
    rows = layers["conv2"].weight.reshape(32, -1).abs().sum(1)
    assert int((rows != 0).sum()) == 8
    fc = layers["fc1"].weight
    assert int((fc != 0).sum()) == Sparsity(0.05).count(fc.numel())
    step1 = result.stages[2].layers["fc1"]["nonzeros"]
    assert step1 == Sparsity(0.05**0.5).count(fc.numel())
    assert result.final.test_accuracy > 0.6


def test_hooks_see_every_epoch_and_stage(digits) -> None:
    epochs, stages = [], []
    settings = fast_settings(admm_quantize=None, quant_retrain=None)
    hooks = PipelineHooks(
        on_epoch=lambda s, e, loss: epochs.append((s, e)), on_stage=lambda r: stages.append(r.name)
    )
    plan = Plan.from_dict({"layers": {"fc1": {"keep": 0.5}}})
    run_pipeline(model_for(digits), digits, plan, settings, hooks=hooks)
    assert stages == ["dense", "admm_prune", "retrain"]
    assert epochs.count(("admm_prune", 2)) == 1 and len(epochs) == 6 + 3 + 2


def test_each_round_of_quantized_retraining_is_named_by_its_share(digits) -> None:
    """The progress names a round by the share it freezes; the stage stays quant_retrain."""
    epochs, stages = [], []
    settings = fast_settings(
        pretrain=TrainSettings(epochs=1, lr=0.05, batch_size=32),
        admm_prune=None,
        admm_quantize=None,
        quant_retrain=QuantRetrainSettings(
            TrainSettings(epochs=2, lr=0.01, batch_size=32), shares=(0.5, 0.875, 1.0)
        ),
    )
    hooks = PipelineHooks(
        on_epoch=lambda s, e, loss: epochs.append((s, e)), on_stage=lambda r: stages.append(r.name)
    )
    plan = Plan.from_dict({"layers": {"fc1": {"keep": 0.5, "bits": 4}}})
    result = run_pipeline(model_for(digits), digits, plan, settings, hooks=hooks)
    rounds = [e for e in epochs if e[0].startswith("quant_retrain")]
    assert rounds == [
        ("quant_retrain 50%", 0),
        ("quant_retrain 50%", 1),
        ("quant_retrain 87.5%", 0),
        ("quant_retrain 87.5%", 1),
        ("quant_retrain 100%", 0),
        ("quant_retrain 100%", 1),
    ]
    assert stages[-1] == result.final.name == "quant_retrain"


def test_unknown_layer_and_empty_layer_are_refused(digits) -> None:
    with pytest.raises(LayerError, match="valid: conv1"):
        run_pipeline(
            model_for(digits),
            digits,
            Plan.from_dict({"layers": {"fc9": {"keep": 0.5}}}),
            fast_settings(),
        )
    with pytest.raises(ConstraintError, match="layers.conv1.keep"):
        run_pipeline(
            model_for(digits),
            digits,
            Plan.from_dict({"layers": {"conv1": {"keep": 0.001}}}),
            fast_settings(),
        )


def test_divergence_names_the_stage(digits) -> None:
    settings = fast_settings(pretrain=TrainSettings(epochs=1, lr=1e6, batch_size=32))
    with pytest.raises(DivergenceError, match="stage dense"):
        run_pipeline(model_for(digits), digits, Plan.from_dict(PLAN), settings)


def test_packed_model_gives_identical_predictions_and_matching_size(digits, tmp_path) -> None:
    from admmsearch.packed._format import pack_model, unpack_into

    model = model_for(digits)
    result = run_pipeline(model, digits, Plan.from_dict(PLAN), fast_settings())
    names = list(compressible_layers(model))
    info = pack_model(model, names, tmp_path / "digits.admm")
    payload_bits = result.storage.model_stored_bits
    assert info.file_bytes == (tmp_path / "digits.admm").stat().st_size
    assert payload_bits / 8 <= info.file_bytes - info.header_bytes < payload_bits / 8 + 20
    assert info.header_bytes < 1024
    fresh = unpack_into(model_for(digits, seed=1), tmp_path / "digits.admm")
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(digits.x_test), fresh(digits.x_test))


def test_pruned_state_replays_the_pruning_stages_exactly(digits) -> None:
    settings = fast_settings()
    plan = Plan.from_dict(PLAN)
    net = network(model_for(digits), digits, plan, settings)
    dense = dense_stage(net, settings)
    folding = fold_stage(net, settings)
    pruned = prune_phase(net, plan, settings, dense)
    full = quantize_phase(net, plan, settings, pruned, folding)
    assert [s.name for s in pruned.stages] == ["dense", "admm_prune", "retrain"]
    again = network(model_for(digits, seed=5), digits, plan, settings)  # any starting weights
    replay = quantize_phase(again, plan, settings, pruned, fold_stage(again, settings))
    assert [s.name for s in replay.stages] == [s.name for s in full.stages]
    assert replay.final.test_accuracy == full.final.test_accuracy
    assert replay.storage.model_stored_bits == full.storage.model_stored_bits
