"""The dense-model and stage caches: nothing unpickled, a bad file is a miss with a warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils import prune

from admmsearch.admm import Residuals
from admmsearch.config import base_pipeline, load_study, resolve_layers
from admmsearch.data import load_dataset
from admmsearch.dense import dense_model, read_checkpoint
from admmsearch.errors import ConfigError
from admmsearch.models import create_model
from admmsearch.pipeline import PrunedState, StageResult
from admmsearch.plan import Plan
from admmsearch.stage_cache import load_pruned, save_pruned
from admmsearch.tensorfile import CacheWarning


def digits_cnn(classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("digits-cnn", num_classes=classes, input_shape=(1, 8, 8))


def pruned_state(model: torch.nn.Module) -> PrunedState:
    """A pruning result as the pipeline hands it over: stages with residuals, masks, weights."""
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    mask = weights["fc1.weight"].abs() > weights["fc1.weight"].abs().median()
    weights["fc1.weight"] = weights["fc1.weight"] * mask
    residual = Residuals(1, 0.01, {"fc1": 0.5}, {"fc1": 0.25})
    stages = (
        StageResult("dense", 0.9, 0.88, 1.5, {"fc1": {"nonzeros": 8192.0}}, (0.3, 0.2)),
        StageResult("admm_prune", 0.85, 0.84, 2.0, {"fc1": {"keep": 0.5}}, (0.4,), (residual,)),
        StageResult(
            "retrain",
            0.86,
            0.85,
            1.0,
            {"fc1": {"keep": 0.5}},
            projected_val_accuracy=0.8,
            kept_epoch=2,
        ),
    )
    return PrunedState(stages, {"fc1": mask}, weights)


def test_stage_cache_round_trips_as_tensors_and_json(tmp_path: Path) -> None:
    model = digits_cnn()
    state = pruned_state(model)
    path = tmp_path / "pruned-x.pt"
    save_pruned(state, path)
    raw = torch.load(path, weights_only=True)  # plain tensors and text: nothing to unpickle
    assert isinstance(raw["stages"], str) and raw["masks"]["fc1"].dtype == torch.bool
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = load_pruned(path, model.state_dict())
    assert back is not None and back.stages == state.stages
    assert torch.equal(back.masks["fc1"], state.masks["fc1"])
    assert all(torch.equal(back.weights[k], v) for k, v in state.weights.items())
    assert [p.name for p in tmp_path.iterdir()] == ["pruned-x.pt"]  # no temporary left


class _Payload:
    """What a crafted cache file holds: unpickling it would run code."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self):
        return (open, (str(self.mark), "w"))


def test_a_crafted_stage_cache_file_runs_no_code_and_is_a_miss(tmp_path: Path) -> None:
    """cases/04: a pickle planted in the shared stage cache must not run in the worker."""
    mark = tmp_path / "PWNED"
    path = tmp_path / "pruned-crafted.pt"
    torch.save(_Payload(mark), path)
    with pytest.warns(CacheWarning, match=r"stage cache .*pruned-crafted\.pt: it holds pickled"):
        assert load_pruned(path, digits_cnn().state_dict()) is None
    assert not mark.exists()


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda p: p.write_bytes(b""), "the file is empty"),
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "not a file written by torch.save"),
        (lambda p: torch.save({"weights": {}}, p), "not a stage cache file"),
    ],
)
def test_a_damaged_stage_cache_file_is_a_miss_with_a_warning(tmp_path: Path, damage, why) -> None:
    model = digits_cnn()
    path = tmp_path / "pruned-x.pt"
    save_pruned(pruned_state(model), path)
    damage(path)
    with pytest.warns(CacheWarning, match=why):
        assert load_pruned(path, model.state_dict()) is None


def test_a_stage_cache_of_another_model_is_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "pruned-x.pt"
    save_pruned(pruned_state(digits_cnn(classes=3)), path)
    with pytest.warns(CacheWarning, match="weight fc2.weight has shape"):
        assert load_pruned(path, digits_cnn().state_dict()) is None


def test_a_missing_stage_cache_file_is_a_plain_miss(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_pruned(tmp_path / "none.pt", digits_cnn().state_dict()) is None


def test_a_pruned_state_dict_checkpoint_says_to_remove_the_pruning(tmp_path: Path) -> None:
    """cases/03, second file: a state_dict saved with torch.nn.utils.prune still attached."""
    model = digits_cnn()
    prune.l1_unstructured(model.fc1, "weight", amount=0.5)
    torch.save(model.state_dict(), tmp_path / "tp.pt")
    with pytest.raises(ConfigError) as info:
        read_checkpoint(tmp_path / "tp.pt", digits_cnn())
    message = str(info.value)
    assert message.startswith(f"dense.checkpoint {tmp_path / 'tp.pt'}: does not fit")
    assert "unexpected fc1.weight_orig, fc1.weight_mask" in message
    assert "torch.nn.utils.prune.remove" in message and "\n" not in message


def test_a_damaged_dense_cache_is_trained_again_with_a_warning(tmp_path, tiny_study) -> None:
    config = load_study(tiny_study())
    layers = resolve_layers(config)
    data = load_dataset("digits", seed=0, limit_train=300)
    first = dense_model(config, data, tmp_path, layers)
    assert first.trained and first.seconds > 0
    first.path.write_bytes(b"\x00garbage")
    with pytest.warns(CacheWarning, match=r"dense cache .*: not a file written by torch.save"):
        again = dense_model(config, data, tmp_path, layers)
    assert again.trained and again.path == first.path
    assert all(torch.equal(again.state[k], v) for k, v in first.state.items())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached = dense_model(config, data, tmp_path, layers)
    assert not cached.trained


def test_the_dense_cache_follows_the_data_not_only_its_name(tmp_path, tiny_study) -> None:
    """A data file changed under the same name must not reuse the dense model of the old one."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(120, 1, 8, 8)).astype(np.float32),
        "y_train": np.arange(120) % 3,
        "x_test": rng.normal(size=(30, 1, 8, 8)).astype(np.float32),
        "y_test": np.arange(30) % 3,
    }
    npz = tmp_path / "mine.npz"
    np.savez(npz, **arrays)
    config = load_study(tiny_study(dataset={"name": str(npz)}))
    layers = resolve_layers(config)
    first = dense_model(config, load_dataset(str(npz)), tmp_path / "cache", layers)
    arrays["y_train"] = (arrays["y_train"] + 1) % 3
    np.savez(npz, **arrays)
    second = dense_model(config, load_dataset(str(npz)), tmp_path / "cache", layers)
    assert first.trained and second.trained and first.path != second.path
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.pt")) == sorted(
        [first.path.name, second.path.name]
    )


def test_compress_on_exported_settings_reuses_the_study_dense_model(tmp_path, tiny_study) -> None:
    """cases/23: the study left ``layers`` null, the settings file lists them; the same dense
    model must have the same cache file, and the ``dense`` row reports the time spent on it."""
    from admmsearch.compression import reproduce
    from admmsearch.settings_file import settings_config

    config = load_study(tiny_study(search={"keep": 0.5, "bits": 4}))
    layers = resolve_layers(config)
    resolved = config.resolved_dict()
    doc = {key: resolved[key] for key in ("seed", "model", "dataset", "dense", "pipeline")}
    doc.update(study=config.name, layers={n: {"keep": 0.5, "bits": 4} for n in layers})
    settings, listed = settings_config(doc, source="best.yaml")
    assert config.layers is None and settings.layers == tuple(layers) and listed == layers
    assert settings.fingerprint_dense() == config.fingerprint_dense()
    plan, pipeline = Plan.from_dict({"layers": doc["layers"]}), base_pipeline(settings)
    cold = reproduce(settings, listed, plan, pipeline, cache_dir=tmp_path)  # trains the dense
    (cached,) = tmp_path.glob("dense-*.pt")
    written = cached.stat().st_mtime_ns
    warm = reproduce(settings, listed, plan, pipeline, cache_dir=tmp_path)  # loads it
    assert list(tmp_path.glob("dense-*.pt")) == [cached]
    assert cached.stat().st_mtime_ns == written, "the cached dense model was trained again"
    assert cold.result.stages[0].name == warm.result.stages[0].name == "dense"
    assert cold.result.stages[0].seconds > 0 and warm.result.stages[0].seconds > 0
    figures = [{k: v for k, v in r.metrics.items() if "seconds" not in k} for r in (cold, warm)]
    assert figures[0] == figures[1]


def test_a_weight_normed_model_trains_as_written_and_trials_get_its_plain_weights(
    tmp_path, tiny_study
) -> None:
    """cases/36 (`run`): the dense model of a model with weight and spectral norm is trained
    with them, cached as written, and handed to trials as plain weights that a freshly built
    model loads (the study refused it with 'call finalize(model) before packing')."""
    from admmsearch.dense import build_model

    (tmp_path / "wnorm.py").write_text(
        "from torch import nn\nfrom torch.nn.utils import parametrizations\n\n"
        "def build(num_classes=10, in_channels=1):\n"
        "    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), "
        "nn.Linear(32, num_classes))\n"
        "    parametrizations.weight_norm(net[1])\n"
        "    parametrizations.spectral_norm(net[3])\n"
        "    return net\n"
    )
    config = load_study(tiny_study(model=f"{tmp_path / 'wnorm.py'}:build"))
    data = load_dataset("digits", seed=0, limit_train=300)
    dense = dense_model(config, data, tmp_path / "cache", resolve_layers(config))
    assert sorted(dense.state) == ["1.bias", "1.weight", "3.bias", "3.weight"]
    cached = torch.load(dense.path, weights_only=True)
    assert "1.parametrizations.weight.original0" in cached  # trained with the weight norm
    model = build_model(config, data)
    model.load_state_dict(dense.state)
    assert dense.val_accuracy > 0.5
