"""``compress``: one library verb for a settings file and for a model with a plan, one result;
and the trial record it shares with a study (metric names and units, named once)."""

from __future__ import annotations

import doctest
from pathlib import Path

import yaml

from admmsearch import record
from admmsearch.compression import Compressed, FromModel, FromSettings, compress, read_plan
from admmsearch.config import OBJECTIVES
from admmsearch.packed._format import read_model_file
from admmsearch.record import BITS_PER_BYTE, Metric, kib
from admmsearch.search.export import EXPORTED_METRICS
from admmsearch.settings import PipelineSettings, QuantRetrainSettings, TrainSettings
from admmsearch.settings_file import FORMAT

LAYERS = "layers:\n  conv2: {keep: 0.5, bits: 4}\n  fc1: {keep: 0.1, bits: 3}\n"
TRAIN = {"epochs": 1, "lr": 0.02, "batch_size": 32}


def tiny_settings() -> PipelineSettings:
    train = TrainSettings(**TRAIN)
    return PipelineSettings(
        pretrain=TrainSettings(epochs=3, lr=0.05, batch_size=32),
        admm_prune={"train": TRAIN, "rho": {"start": 0.01, "updates": 4}},
        retrain=train,
        admm_quantize=None,
        quant_retrain=QuantRetrainSettings(train=train, shares=(1.0,)),
    )


def check_result(done: Compressed, out: Path) -> None:
    """What every compression gives: the file written, its figures recorded as a trial's."""
    assert done.info.path == out and out.read_bytes() == done.packed
    assert done.info.file_bytes == out.stat().st_size
    assert done.metrics[Metric.STORAGE_BITS] == BITS_PER_BYTE * out.stat().st_size
    assert done.metrics[Metric.VAL_ACCURACY] == done.result.final.val_accuracy
    assert read_model_file(out).meta.model == "digits-cnn"
    unnamed = {k for k in done.metrics if k.split(".")[0] not in Metric.names()}
    assert not unnamed, f"recorded under names record.Metric does not know: {sorted(unnamed)}"


def test_compress_a_model_to_a_plan_file(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(LAYERS)
    source = FromModel(plan=read_plan(plan_path), settings=tiny_settings())
    out = tmp_path / "m.admm"
    done = compress(source, out)
    check_result(done, out)
    assert done.document is None
    assert [s.name for s in done.result.stages] == [
        "dense",
        "admm_prune",
        "retrain",
        "quant_retrain",
    ]
    kept = {s.name: s.nonzeros / s.numel for s in done.result.storage.layers}
    assert abs(kept["fc1"] - 0.1) < 0.01 and kept["conv1"] == 1.0


def test_compress_a_settings_file(tmp_path: Path) -> None:
    doc = {
        "format": FORMAT,
        "study": "s",
        "trial": 3,
        "chosen_by": "test",
        "model": {"name": "digits-cnn"},
        "dataset": {"name": "digits", "limit_train": 300},
        "dense": {"train": {**TRAIN, "epochs": 3}},
        "pipeline": {"admm_prune": None, "admm_quantize": None, "retrain": TRAIN},
        "metrics": {Metric.VAL_ACCURACY: 0.5},
    }
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(doc) + LAYERS)
    out = tmp_path / "best.admm"
    done = compress(FromSettings(path, cache_dir=tmp_path / "cache"), out)
    check_result(done, out)
    assert done.document is not None and done.document["trial"] == 3
    plan = tmp_path / "plan.yaml"
    plan.write_text(LAYERS)
    assert done.result.plan == read_plan(plan)  # the settings file's layers: block is a plan
    assert list((tmp_path / "cache").glob("dense-*.pt"))


def test_the_record_names_each_figure_once() -> None:
    assert doctest.testmod(record).failed == 0
    assert kib(8192) == 1.0 and record.BITS_PER_KIB == 1024 * BITS_PER_BYTE
    assert set(OBJECTIVES) <= Metric.names()
    assert set(EXPORTED_METRICS) <= Metric.names()
