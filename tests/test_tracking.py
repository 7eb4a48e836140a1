"""MLflow keys for any layer name, and trials that tracking kills: ended, not counted, rerun."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (
    _validate_metric_name,
    _validate_param_name,
    _validate_tag_name,
)

from admmsearch import tracking
from admmsearch.cli import main
from admmsearch.errors import TrackingError
from admmsearch.search.space import without_float_noise
from admmsearch.search.study import finished_count
from admmsearch.tracking import (
    HTTP_DEFAULTS,
    KEYS_ARTIFACT,
    Tracker,
    mlflow_key,
    search_runs,
    set_mlflow_defaults,
)

# A torch module name is any non-empty string without "."; qualified names join them with ".".
MODULE_NAME = st.text(st.characters(blacklist_characters="."), min_size=1, max_size=90)


def _mlflow_accepts(key: str) -> None:
    _validate_param_name(key)
    _validate_metric_name(key)
    _validate_tag_name(key)
    assert len(key) <= 250


@given(st.lists(st.lists(MODULE_NAME, min_size=1, max_size=3), min_size=1, max_size=8))
def test_every_module_name_gives_a_distinct_key_mlflow_accepts(paths) -> None:
    names = {".".join(path) for path in paths}
    keys = {name: mlflow_key(f"bits_per_nonzero.{name}") for name in names}
    for key in keys.values():
        _mlflow_accepts(key)
    assert len(set(keys.values())) == len(names)


def test_keys_examples_and_the_long_name_rule() -> None:
    assert mlflow_key("keep.conv1") == "keep.conv1"  # ordinary names are left alone
    assert mlflow_key("keep.fc@in") == "keep.fc-40in"
    assert mlflow_key("keep.a-b") == "keep.a--b" != mlflow_key("keep.a-2db")
    assert mlflow_key("keep.é /") == "keep.-c3-a9-20-2f"
    long_a, long_b = "x" * 300, "x" * 299 + "y"
    assert len(mlflow_key(long_a)) == 250 and mlflow_key(long_a) != mlflow_key(long_b)
    assert mlflow_key(long_a).endswith("-") and mlflow_key(long_a)[-17] == "-"
    for key in (long_a, "keep.fc@in"):
        _mlflow_accepts(mlflow_key(key))


def test_http_retries_are_bounded_unless_the_user_set_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in HTTP_DEFAULTS:
        monkeypatch.setenv(key, "x")  # so that monkeypatch restores the key's absence
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's own setting wins
    set_mlflow_defaults()
    assert [os.environ[k] for k in HTTP_DEFAULTS] == ["3", "1", "7"]


def test_an_unreachable_tracking_server_is_one_line_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    set_mlflow_defaults()  # as the admmsearch command does at its start
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.monotonic()
    with pytest.raises(TrackingError) as err:
        Tracker(f"http://u:s3cret@127.0.0.1:{port}", "nobody")
    assert time.monotonic() - start < 60
    message = str(err.value)
    assert err.value.unreachable and "\n" not in message and "s3cret" not in message
    assert message.startswith(
        f"tracking server http://u:***@127.0.0.1:{port} is unreachable (Connection refused"
    )


def test_a_library_call_leaves_the_environment_and_mlflows_uri_alone(tmp_path: Path) -> None:
    import mlflow

    ours = lambda: {k: v for k, v in os.environ.items() if not k.startswith("_MLFLOW")}  # noqa: E731
    before, uri_set = ours(), mlflow.is_tracking_uri_set()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker(uri, "quiet")
    assert search_runs(uri, "quiet").empty
    assert ours() == before and mlflow.is_tracking_uri_set() == uri_set


ODD_MODEL = '''
import torch
from torch import nn


class Odd(nn.Module):
    """Two linear layers under names MLflow refuses as keys, and a BatchNorm between them."""

    def __init__(self, num_classes):
        super().__init__()
        self.blocks = nn.ModuleDict(
            {"fc@in": nn.Linear(64, 32), "out put/\u00e9": nn.Linear(32, num_classes)}
        )
        self.norm = nn.BatchNorm1d(32)

    def forward(self, x):
        x = torch.relu(self.norm(self.blocks["fc@in"](x.flatten(1))))
        return self.blocks["out put/\u00e9"](x)
'''


def _odd_study(tmp_path, monkeypatch, name: str) -> tuple[list[str], str, str]:
    """A tiny study of the odd-named model in ``tmp_path``; returns CLI args and the stores."""
    (tmp_path / "oddnet.py").write_text(ODD_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    study = {
        "name": name,
        "model": "oddnet:Odd",
        "dataset": {"name": "digits", "limit_train": 300},
        "dense": {"train": {"epochs": 3, "lr": 0.05, "batch_size": 32}},
        "pipeline": {
            "admm_prune": {"train": {"epochs": 1, "lr": 0.02, "batch_size": 32}},
            "retrain": {"epochs": 1, "lr": 0.02, "batch_size": 32},
            "admm_quantize": {"train": {"epochs": 1, "lr": 0.01, "batch_size": 32}},
            "quant_retrain": {"train": {"epochs": 1, "batch_size": 32}, "shares": [1.0]},
        },
        "search": {"keep": {"low": 0.3, "high": 1.0}, "bits": {"choices": [4, 8]}},
        "sampler": {"name": "random", "seed": 1},
        "budget": {"trials": 2},
    }
    (tmp_path / "odd.yaml").write_text(yaml.safe_dump(study, allow_unicode=True))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return ["run", "odd.yaml", "--storage", storage, "--tracking-uri", uri], storage, uri


@pytest.mark.slow
def test_a_study_of_layers_named_like_fc_at_in_runs_and_maps_its_keys(
    tmp_path, monkeypatch
) -> None:
    args, storage, uri = _odd_study(tmp_path, monkeypatch, "odd")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "uncompressed layers (stored raw): norm (BatchNorm1d)" in result.stderr
    study = optuna.load_study(study_name="odd", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    client = MlflowClient(uri)
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        keep = without_float_noise(trial.params["keep.blocks.fc@in"])  # as the plan has it
        assert run.data.params["keep.blocks.fc-40in"] == str(keep)
        assert "sparsity.blocks.out-20put-2f-c3-a9" in run.data.metrics
        keys = client.download_artifacts(run.info.run_id, KEYS_ARTIFACT, str(tmp_path))
        keys = json.loads(open(keys).read())
        assert keys["bits.blocks.fc-40in"] == "bits.blocks.fc@in"
        assert keys["sparsity.blocks.out-20put-2f-c3-a9"] == "sparsity.blocks.out put/\u00e9"
    parent = study.user_attrs["mlflow_parent_run_id"]
    layers = json.loads(
        open(client.download_artifacts(parent, "layers.json", str(tmp_path))).read()
    )
    assert layers == {
        "compressed": ["blocks.fc@in", "blocks.out put/\u00e9"],
        "uncompressed": {"norm": "BatchNorm1d"},  # after a linear layer: not folded
        "folded_batchnorm": [],
    }


@pytest.mark.slow
def test_a_trial_killed_in_tracking_fails_its_run_does_not_count_and_runs_again(
    tmp_path, monkeypatch
) -> None:
    """MLflow refuses the first trial's layer table: the worker stops with one line, that
    trial's run is FAILED with the reason, the trial does not count, and resuming reruns it."""
    args, storage, uri = _odd_study(tmp_path, monkeypatch, "refused")
    real = MlflowClient.log_artifact
    refused = []

    def refuse_first_table(self, run_id, local_path, artifact_path=None):
        if local_path.endswith("layers.csv") and not refused:
            refused.append(run_id)
            raise MlflowException("RESOURCE_EXHAUSTED: artifact quota reached")
        return real(self, run_id, local_path, artifact_path)

    monkeypatch.setattr(MlflowClient, "log_artifact", refuse_first_table)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1  # a failure while running, not bad input
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: tracking URI {uri}: RESOURCE_EXHAUSTED: artifact quota reached"
    )
    study = optuna.load_study(study_name="refused", storage=storage)
    (first,) = study.trials
    assert first.state.name == "FAIL" and first.user_attrs["interrupted"]
    assert first.user_attrs["fail_reason"].startswith("tracking: tracking URI")
    assert finished_count(study) == 0
    run = MlflowClient(uri).get_run(refused[0])
    assert run.info.status == "FAILED"
    assert "artifact quota reached" in run.data.tags["admmsearch.fail_reason"]

    result = CliRunner().invoke(main, args)  # resume: the refused trial's params run again
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="refused", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[1].user_attrs["retry_of"] == 0
    assert study.trials[1].params == first.params
    assert finished_count(study) == 2
    runs = search_runs(uri, "refused")
    assert "RUNNING" not in set(runs["status"])


def test_resuming_ends_runs_left_running_by_finished_trials(tmp_path) -> None:
    """A trial that failed while the tracking server was away left its run RUNNING: the next
    start ends it as KILLED with the trial's reason; a live trial's run is left alone."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "stale")
    parent = tracker.study_run({})
    study = optuna.create_study(directions=["maximize"])
    failed, live = study.ask(), study.ask()
    runs = {t.number: tracker.trial_run(parent, t.number) for t in (failed, live)}
    failed.set_user_attr("fail_reason", "tracking: tracking server gone")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    from admmsearch.search.study import end_stale_runs

    assert end_stale_runs(tracker, study) == 1
    stale = tracker.client.get_run(runs[0])
    assert stale.info.status == "KILLED"
    assert stale.data.tags["admmsearch.fail_reason"] == "tracking: tracking server gone"
    assert tracker.client.get_run(runs[1]).info.status == "RUNNING"
    assert end_stale_runs(tracker, study) == 0
    assert tracking.REASON_TAG == "admmsearch.fail_reason"


def test_a_param_longer_than_mlflow_takes_goes_whole_into_an_artifact(tmp_path) -> None:
    """The normalisation of a 500-channel input is about 10,000 characters of JSON: MLflow
    cut it to 6,000 (invalid JSON); now the param points at an artifact holding all of it."""
    from admmsearch.normalise import Normalisation
    from admmsearch.search.objective import data_params

    norm = Normalisation(tuple(0.123456789 + i for i in range(500)), tuple([1.5] * 500))
    params = data_params(type("Data", (), {"normalisation": norm})())
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "wide")
    run = tracker.trial_run(tracker.study_run({}), 0)
    tracker.log(run, params=params)
    logged = tracker.client.get_run(run).data.params
    assert logged["normalisation"] == "per-channel"
    assert logged["normalisation.mean"] == (
        f"{len(params['normalisation.mean'])} characters, in artifact "
        "params/normalisation.mean.txt"
    )
    stored = tracker.client.download_artifacts(run, "params/normalisation.mean.txt", tmp_path)
    assert json.loads(open(stored).read()) == list(norm.mean)
