"""The sensitivity pass: one row per unit and grid point, the reference point is the dense
model, the model is left untouched, the result is cached, and the command writes and logs it."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from admmsearch.cli import main
from admmsearch.config import validate_study
from admmsearch.config.knobs import Choices
from admmsearch.config.units import unit_spaces
from admmsearch.constraints import OnSupport
from admmsearch.data import load_dataset
from admmsearch.dense import build_model
from admmsearch.models import compressible_layers
from admmsearch.packed._accounting import layer_storage, model_storage
from admmsearch.plan import LayerPlan
from admmsearch.search.seeding import sensitivity_finetune
from admmsearch.search.sensitivity import (
    Finetune,
    cached_sensitivity,
    grid_points,
    keep_grid,
    level_grid,
    measure,
)
from admmsearch.search.sensitivity.plot import sensitivity_figure, write_sensitivity
from admmsearch.tracking import search_runs
from admmsearch.train import TrainSettings, evaluate, fit


@pytest.fixture()
def digits_study(tiny_study):
    """The tiny digits study: units conv1 (keep 0.3..1), conv2, fc1, fc2; bits 2..8 or None."""
    config, layers = validate_study(tiny_study())
    d = config.dataset
    data = load_dataset(d.name, seed=config.seed, limit_train=d.limit_train)
    model = build_model(config, data)
    fit(model, data, TrainSettings(epochs=4, lr=0.05, batch_size=32), seed=0)
    return config, layers, data, model


def test_keep_grid_spreads_over_the_range() -> None:
    from admmsearch.config.knobs import FloatRange, IntRange

    assert keep_grid(FloatRange(low=0.01, high=1.0, log=True), 3) == (0.01, 0.1, 1.0)
    assert keep_grid(FloatRange(low=0.2, high=0.6), 3) == (0.2, 0.4, 0.6)
    assert keep_grid(FloatRange(low=0.2, high=0.45, step=0.25), 3) == (0.2, 0.45)
    assert keep_grid(Choices(choices=(0.5, 0.1)), 8) == (0.1, 0.5)
    assert keep_grid(0.3, 8) == (0.3,)
    assert level_grid(Choices(choices=(None, 4, 2))) == (2, 4, None)
    assert level_grid(IntRange(low=2, high=6)) == (2, 3, 4, 5, 6)
    assert level_grid(IntRange(low=2, high=256, log=True), 4) == (2, 10, 51, 256)
    assert level_grid(IntRange(low=4, high=64, step=4), 3) == (4, 32, 64)


def test_one_row_per_unit_and_grid_point_and_the_reference_is_dense(digits_study) -> None:
    config, layers, data, model = digits_study
    before = {k: v.clone() for k, v in model.state_dict().items()}
    units = unit_spaces(config, layers)
    result = measure(model, data, units, keep_points=5)
    frame = result.frame()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # every unit put back
    assert len(frame) == sum(len(grid_points(u, 5)) for u in units)
    assert result.dense_val_accuracy == evaluate(model, data.x_val, data.y_val)
    for unit in units:
        rows = frame[frame["unit"] == unit.name]
        assert len(rows) == len(rows[["keep", "levels"]].drop_duplicates())
        keeps = keep_grid(unit.keep, 5)
        assert len(keeps) == 5  # conv1's range 0.3..1 and the others' 0.02..1
        # every point of the space (5 keeps x 6 levels), measured on the two curves
        space = rows[rows["in_space"]]
        assert len(space) == 5 * 6
        curve = rows[rows["measured"]]
        assert set(curve[curve["levels"].isna()]["keep"]) == set(keeps)
        assert set(curve[curve["keep"] == 1.0]["levels"].dropna()) == {2, 3, 4, 6, 8}
        assert curve["val_accuracy"].notna().all() and rows["accuracy_drop"].notna().all()
        ref = rows[(rows["keep"] == 1.0) & rows["levels"].isna()]
        assert len(ref) == 1
        assert ref["val_accuracy"].iloc[0] == result.dense_val_accuracy
        assert ref["accuracy_drop"].iloc[0] == 0.0
        predicted = rows[~rows["measured"]]
        for r in predicted.itertuples():  # additive: drop(keep, float32) + drop(1.0, levels)
            pruned = rows[(rows["keep"] == r.keep) & rows["levels"].isna()]
            quantized = rows[(rows["keep"] == 1.0) & (rows["levels"] == r.levels)]
            expected = pruned["accuracy_drop"].iloc[0] + quantized["accuracy_drop"].iloc[0]
            assert r.accuracy_drop == pytest.approx(expected)
    dense_storage = model_storage(model, layers)
    reference = frame[(frame["keep"] == 1.0) & frame["levels"].isna()]
    assert result.fixed_bits + reference["storage_bits"].sum() == dense_storage.model_stored_bits
    fc1 = frame[(frame["unit"] == "fc1") & frame["levels"].isna()].sort_values("keep")
    assert fc1["storage_bits"].is_monotonic_increasing  # fewer weights, fewer bits
    assert fc1["val_accuracy"].iloc[0] < result.dense_val_accuracy  # 2 % of fc1 costs accuracy


def test_predicted_storage_bounds_the_real_projections_closely(digits_study) -> None:
    """A predicted point's storage bounds that of pruning then quantizing for real from above:
    the same mask, but every level taken (a projection may leave a level unused, saving its
    codebook entry and perhaps a bit of code width per survivor)."""
    config, layers, data, model = digits_study
    fc1 = [u for u in unit_spaces(config, layers) if u.name == "fc1"]
    frame = measure(model, data, fc1, keep_points=3).frame()
    w = compressible_layers(model)["fc1"].weight.detach()
    bias = compressible_layers(model)["fc1"].bias.detach()
    for r in frame[~frame["measured"]].itertuples():
        plan = LayerPlan(keep=r.keep, bits=int(r.levels))
        mask = plan.sparsity().mask(w)
        projected = OnSupport(plan.quantizer(sparse=True), mask).project(w)
        real = layer_storage("fc1", projected, bias)
        exact = real.stored_bits + real.bias_bits
        slack = 32 * 2 ** int(r.levels) + int(mask.sum())
        assert exact <= r.storage_bits <= exact + slack, (r.keep, r.levels)


def test_keep_ratios_that_empty_a_layer_are_left_out(digits_study) -> None:
    """conv1 has 144 weights: keep 0.001 would keep none of them (the pipeline refuses it)."""
    config, layers, data, model = digits_study
    conv1 = dataclasses.replace(
        unit_spaces(config, layers)[0], keep=Choices(choices=(0.001, 0.5)), levels=None
    )
    frame = measure(model, data, [conv1], keep_points=3).frame()
    assert sorted(frame["keep"]) == [0.5, 1.0]


def test_measurement_is_cached_under_the_dense_fingerprint(digits_study, tmp_path) -> None:
    config, layers, data, model = digits_study
    units = unit_spaces(config, layers)
    first = cached_sensitivity(tmp_path, "fp", model, data, units, keep_points=3)
    again = cached_sensitivity(tmp_path, "fp", model, data, units, keep_points=3)
    assert not first.cached and again.cached
    assert again.rows == first.rows and again.key == first.key
    other = cached_sensitivity(tmp_path, "other-dense", model, data, units, keep_points=3)
    assert not other.cached and len(list(tmp_path.glob("sensitivity-*.json"))) == 2
    (tmp_path / f"sensitivity-{first.key[:24]}.json").write_text("{broken")
    assert not cached_sensitivity(tmp_path, "fp", model, data, units, keep_points=3).cached


def test_masked_finetune_recovers_accuracy_and_leaves_the_model_as_found(digits_study) -> None:
    """A few masked SGD steps per point: the harshly pruned points get back accuracy, the
    reference stays the dense model, nothing leaks from one point into the next, and the
    model ends as it was found (BatchNorm statistics and momentum included)."""
    config, layers, data, model = digits_study
    fc1 = [u for u in unit_spaces(config, layers) if u.name == "fc1"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = measure(model, data, fc1, keep_points=3).frame()
    tuning = Finetune(steps=30, lr=0.02, batch_size=32, seed=0)
    tuned = measure(model, data, fc1, keep_points=3, finetune=tuning).frame()
    again = measure(model, data, fc1, keep_points=3, finetune=tuning).frame()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    pd.testing.assert_frame_equal(tuned, again)  # seeded, and no state carried over
    pd.testing.assert_series_equal(tuned["storage_bits"], plain["storage_bits"])
    ref = tuned[(tuned["keep"] == 1.0) & tuned["levels"].isna()]["val_accuracy"].iloc[0]
    assert ref == evaluate(model, data.x_val, data.y_val)
    harsh = plain["keep"] == plain["keep"].min()
    on_curve = harsh & plain["levels"].isna()
    assert tuned[on_curve]["val_accuracy"].iloc[0] > plain[on_curve]["val_accuracy"].iloc[0]


def test_finetune_is_keyed_and_configured_from_the_study(digits_study, tiny_study, tmp_path):
    config, layers, data, model = digits_study
    units = unit_spaces(config, layers)[:1]
    none = cached_sensitivity(tmp_path, "fp", model, data, units, keep_points=2)
    tuning = Finetune(steps=2, lr=0.01, batch_size=32)
    tuned = cached_sensitivity(tmp_path, "fp", model, data, units, keep_points=2, finetune=tuning)
    assert none.key != tuned.key and not tuned.cached  # a fine-tuned table is another table
    assert sensitivity_finetune(config) is None  # default: no training
    study, _ = validate_study(tiny_study(sensitivity={"finetune_steps": 20}))
    retrain = study.pipeline.retrain
    assert sensitivity_finetune(study) == Finetune(20, retrain.lr, retrain.batch_size, 0)
    with pytest.raises(Exception, match="finetune_steps"):
        validate_study(tiny_study(sensitivity={"finetune_steps": -1}))


def test_the_plot_reads_at_round_keep_ratios_with_a_legend_per_panel(digits_study, tmp_path):
    config, layers, data, model = digits_study
    result = measure(model, data, unit_spaces(config, layers), keep_points=3)
    paths = write_sensitivity(result, tmp_path / "plain")
    assert [p.name for p in paths] == ["sensitivity.csv", "sensitivity.png"]
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [p.name for p in paths]
    with_html = write_sensitivity(result, tmp_path / "all", html=True)
    assert with_html[-1].name == "sensitivity.html" and with_html[-1].stat().st_size > 10_000
    left, right = sensitivity_figure(result.frame(), result.dense_val_accuracy).axes
    assert left.get_legend() is not None and right.get_legend() is not None
    assert [t.get_text() for t in left.get_xticklabels()] == [
        "0.02", "0.05", "0.1", "0.2", "0.5", "1",
    ]  # fmt: skip


@pytest.mark.slow
def test_command_writes_the_table_and_plots_and_logs_them(tmp_path, tiny_study, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tiny_study(sensitivity={"keep_points": 3})
    args = ["sensitivity", str(path), "--out", str(tmp_path / "out")]
    args += ["--storage", f"sqlite:///{tmp_path / 'o.db'}"]
    args += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlruns.db'}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "dense validation accuracy" in result.output and "conv1" in result.output
    table = pd.read_csv(tmp_path / "out" / "sensitivity.csv")
    assert {"unit", "keep", "levels", "val_accuracy", "storage_bits"} <= set(table.columns)
    assert (tmp_path / "out" / "sensitivity.png").stat().st_size > 1000
    assert not (tmp_path / "out" / "sensitivity.html").exists()  # in MLflow only
    again = CliRunner().invoke(main, [*args, "--html"])
    assert again.exit_code == 0 and "from the cache" in again.output
    assert (tmp_path / "out" / "sensitivity.html").stat().st_size > 10_000
    runs = search_runs(f"sqlite:///{tmp_path / 'mlruns.db'}", validate_study(path)[0].name)
    parent = runs[runs["tags.admmsearch.role"] == "study"].iloc[0]
    assert parent["metrics.sensitivity_seconds"] > 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    logged = {a.path for a in client.list_artifacts(parent["run_id"], "sensitivity")}
    assert logged == {
        f"sensitivity/{n}" for n in ("sensitivity.csv", "sensitivity.png", "sensitivity.html")
    }
