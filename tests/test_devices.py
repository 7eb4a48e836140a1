"""Several trials at once on one device: the device of each worker, and the concurrent path
giving the same figures as the sequential one."""

from __future__ import annotations

import os

import optuna
import pytest
import torch
import yaml
from test_study import STUDY

from admmsearch.config import load_study, resolve_layers
from admmsearch.errors import ConfigError
from admmsearch.runtime import _devices as devices
from admmsearch.search.study import prepare, run_parallel, run_study


def test_worker_devices_place_per_device_workers_on_each_device(monkeypatch) -> None:
    assert devices.worker_devices("cpu", 2) == ["cpu", "cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert devices.worker_devices("cuda:3", 3) == ["cuda:3"] * 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices.worker_devices("cuda", 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    with pytest.raises(ConfigError, match="2 CUDA device"):
        devices.worker_devices("cuda:3", 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="no CUDA device"):
        devices.worker_devices("cuda", 1)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="per_device"):
            devices.worker_devices("cpu", bad)


def test_share_device_caps_gpu_memory_only(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(
        torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, str(d)))
    )
    devices.share_device("cpu", 4)
    devices.share_device("cuda:0", 1)
    assert calls == []
    devices.share_device("cuda:1", 4)
    assert calls == [((1 - devices.MEMORY_HEADROOM) / 4, "cuda:1")]


def _study(tmp_path, name: str, enqueue=()) -> tuple:
    data = {**STUDY, "name": name, "budget": {"trials": 2}, "enqueue": list(enqueue)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_study(path)
    layers = resolve_layers(config)
    ctx = prepare(
        config,
        layers,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        workdir=tmp_path / "work",
    )
    return path, ctx


def _figures(study: optuna.Study) -> dict[str, dict[str, float]]:
    """Each complete trial's metrics that training determines, by its params."""
    keys = ("val_accuracy", "test_accuracy", "storage_bits_with_index", "weight_sparsity")
    out = {}
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        m = t.user_attrs["metrics"]
        stages = {k: v for k, v in m.items() if k.startswith(("val_accuracy.", "test_accuracy."))}
        out[yaml.safe_dump(t.params, sort_keys=True)] = {**{k: m[k] for k in keys}, **stages}
    return out


@pytest.mark.slow
def test_two_concurrent_trials_on_one_device_equal_two_sequential_ones(tmp_path) -> None:
    (tmp_path / "mlruns").mkdir()
    threads = max(1, (os.cpu_count() or 1) // 2)  # what each of two workers gets
    before = torch.get_num_threads()
    try:
        _, sequential = _study(tmp_path, "one-at-a-time")
        run_study(sequential, threads=threads)
    finally:
        torch.set_num_threads(before)
    alone = _figures(sequential.study)
    assert len(alone) == 2
    params = [yaml.safe_load(key) for key in alone]
    path, together = _study(tmp_path, "two-at-once", enqueue=params)
    run_parallel(path, together, 1, devices=devices.worker_devices("cpu", 2))
    study = optuna.load_study(study_name="two-at-once", storage=together.storage)
    workers = {t.user_attrs["worker"]["pid"] for t in study.trials}
    assert len(workers) == 2, "each trial should have run in its own worker process"
    assert _figures(study) == alone
