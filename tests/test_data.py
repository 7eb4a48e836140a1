"""Tests for admmsearch.data: seeded splits, loaders by name, user data and batching."""

from __future__ import annotations

import gzip
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from admmsearch import data
from admmsearch.data import DataSplits, batches, load_dataset
from admmsearch.errors import ConfigError, DatasetError, RegistryError, UserCodeError

SPLIT_FIELDS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


@pytest.fixture(autouse=True)
def _no_user_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's $ADMMSEARCH_DATA out of the tests."""
    monkeypatch.delenv("ADMMSEARCH_DATA", raising=False)


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits", seed=0)


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    """Write ``array`` (uint8) as an IDX file, gzipped when ``compress``."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def write_fake_fashion(folder: Path, *, n_train: int = 20, n_test: int = 10, compress=True):
    """Write a tiny Fashion-MNIST look-alike; returns the arrays written."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test)[::-1] % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(folder / (f"{stem}.gz" if compress else stem), array, compress=compress)
    return arrays


def save_npz(path: Path, n_train: int = 30, n_test: int = 12, shape: tuple = (8, 8), **over):
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.normal(size=(n_train, *shape)),
        "y_train": np.arange(n_train) % 3,
        "x_test": rng.normal(size=(n_test, *shape)),
        "y_test": np.arange(n_test) % 3,
    }
    arrays.update(over)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


# ---- digits and the split rules ---------------------------------------------------------------


def test_digits_shapes_dtypes_and_sizes(digits: DataSplits) -> None:
    assert digits.name == "digits"
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert digits.augment is None
    for field in SPLIT_FIELDS:
        tensor = getattr(digits, field)
        assert tensor.dtype == (torch.float32 if field[0] == "x" else torch.int64)
    assert len(digits.x_test) == 360  # fixed stratified 20 % of 1797
    assert len(digits.x_val) == round(0.1 * (1797 - 360))
    assert len(digits.x_train) + len(digits.x_val) + len(digits.x_test) == 1797
    assert len(digits.y_train) == len(digits.x_train)


def test_digits_normalised_with_training_statistics(digits: DataSplits) -> None:
    assert digits.x_train.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert digits.x_train.std(correction=0).item() == pytest.approx(1.0, abs=1e-4)
    assert abs(digits.x_test.mean().item()) < 0.2  # same statistics, different samples


def test_test_split_is_stratified_and_independent_of_seed() -> None:
    a, b = load_dataset("digits", seed=1), load_dataset("digits", seed=2)
    assert torch.equal(a.y_test, b.y_test)
    # Normalisation depends on the training split, so compare the standardised test images.
    standard = [(s.x_test - s.x_test.mean()) / s.x_test.std() for s in (a, b)]
    torch.testing.assert_close(standard[0], standard[1], atol=1e-5, rtol=1e-5)
    counts = torch.bincount(a.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_same_seed_is_bitwise_identical_and_seeds_differ() -> None:
    a, b = load_dataset("digits", seed=3), load_dataset("digits", seed=3)
    for field in SPLIT_FIELDS:
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    c = load_dataset("digits", seed=4)
    assert not torch.equal(a.y_val, c.y_val)


def test_validation_split_is_disjoint_and_complete(tmp_path: Path) -> None:
    # Labels 0..N-1 identify each training sample, so the split can be checked exactly.
    path = tmp_path / "ids.npz"
    save_npz(path, n_train=50, y_train=np.arange(50))
    splits = load_dataset(str(path), val_fraction=0.2, seed=5)
    train, val = set(splits.y_train.tolist()), set(splits.y_val.tolist())
    assert len(train) == 40 and len(val) == 10
    assert not train & val
    assert train | val == set(range(50))


def test_zero_validation_fraction_gives_empty_validation_split() -> None:
    splits = load_dataset("digits", val_fraction=0.0)
    assert splits.x_val.shape == (0, 1, 8, 8)
    assert len(splits.x_train) == 1797 - 360


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, "0.1", True])
def test_val_fraction_out_of_range_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset("digits", val_fraction=bad)  # type: ignore[arg-type]


def test_limit_train_keeps_first_samples_of_the_seeded_shuffle(digits: DataSplits) -> None:
    small = load_dataset("digits", seed=0, limit_train=100)
    assert len(small.x_train) == 100
    assert torch.equal(small.y_train, digits.y_train[:100])
    assert torch.equal(small.y_val, digits.y_val)
    with pytest.raises(ConfigError, match="limit_train"):
        load_dataset("digits", limit_train=0)


def test_to_device_keeps_values(digits: DataSplits) -> None:
    moved = digits.to("cpu")
    assert moved.input_shape == digits.input_shape and moved.num_classes == 10
    assert torch.equal(moved.x_val, digits.x_val)


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(RegistryError, match="digits.*fashion-mnist"):
        load_dataset("imagenet-22k")


# ---- fashion-mnist from IDX files -------------------------------------------------------------


@pytest.mark.skipif(
    not data.SYSTEM_FASHION_DIR.is_dir() and not os.environ.get("CI"),
    reason="dataset-fashion-mnist is not installed (CI must have it)",
)
def test_fashion_mnist_from_system_directory(tmp_path: Path) -> None:
    splits = load_dataset("fashion-mnist", root=tmp_path, download=False)
    assert len(splits.x_train) + len(splits.x_val) == 60000
    assert len(splits.x_val) == 6000
    assert splits.x_test.shape == (10000, 1, 28, 28)
    assert splits.num_classes == 10
    assert torch.bincount(splits.y_test).tolist() == [1000] * 10


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_idx_files_under_root(tmp_path: Path, compress: bool) -> None:
    written = write_fake_fashion(tmp_path / "fashion-mnist", compress=compress)
    splits = load_dataset("fashion-mnist", root=tmp_path, val_fraction=0.25, download=False)
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (15, 5, 10)
    assert splits.input_shape == (1, 28, 28)
    assert splits.y_test.tolist() == written["t10k-labels-idx1-ubyte"].tolist()


@pytest.mark.parametrize(
    "content",
    [
        gzip.compress(b"not an idx file at all"),
        gzip.compress(bytes([0, 0, 0x08, 3]) + (5).to_bytes(4, "big") * 3 + b"\x01" * 7),
        b"plain bytes, not gzip",
    ],
    ids=["bad-magic", "truncated", "not-gzip"],
)
def test_malformed_idx_names_the_file(tmp_path: Path, content: bytes) -> None:
    write_fake_fashion(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(content)
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", root=tmp_path, download=False)


def test_labels_file_with_images_magic_is_rejected(tmp_path: Path) -> None:
    write_fake_fashion(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((10, 28, 28)))
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("fashion-mnist", root=tmp_path, download=False)


def test_missing_fashion_mnist_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "SYSTEM_FASHION_DIR", tmp_path / "not-installed")
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist", root=tmp_path / "empty", download=False)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "ADMMSEARCH_DATA" in message and "not-installed" in message


# ---- torchvision datasets without the files ---------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_torchvision_dataset_is_a_helpful_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetError, match="download=True") as info:
        load_dataset(name, root=tmp_path, download=False)
    assert str(tmp_path) in str(info.value)


def test_default_cache_root_follows_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMMSEARCH_DATA", str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="cache"):
        load_dataset("mnist", download=False)


# ---- user data: .npz and module:function ------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "npz:"])
def test_npz_round_trip(tmp_path: Path, prefix: str) -> None:
    path = tmp_path / "mine.npz"
    arrays = save_npz(path)
    splits = load_dataset(prefix + str(path), val_fraction=0.2)
    assert splits.input_shape == (1, 8, 8)  # a channel is added to (N, H, W)
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (24, 6, 12)
    assert splits.num_classes == 3
    assert splits.y_test.tolist() == arrays["y_test"].tolist()
    assert splits.x_train.dtype == torch.float32 and splits.y_train.dtype == torch.int64


@pytest.mark.parametrize(("shape", "expected"), [((5,), (5,)), ((2, 4, 4), (2, 4, 4))])
def test_npz_keeps_flat_and_channel_first_data(tmp_path: Path, shape, expected) -> None:
    save_npz(tmp_path / "d.npz", shape=shape)
    assert load_dataset(str(tmp_path / "d.npz")).input_shape == expected


def test_npz_missing_array_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "partial.npz"
    save_npz(path, y_test=None)
    with pytest.raises(DatasetError, match=r"partial\.npz.*y_test"):
        load_dataset(str(path))


@pytest.mark.parametrize(
    ("override", "pattern"),
    [({"y_train": np.arange(30) - 1}, "negative"), ({"y_train": np.zeros(30)}, "integer")],
)
def test_npz_bad_labels(tmp_path: Path, override: dict, pattern: str) -> None:
    save_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(DatasetError, match=pattern):
        load_dataset(str(tmp_path / "bad.npz"))


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nothing.npz"):
        load_dataset(str(tmp_path / "nothing.npz"))


LOADER_MODULE = """
import numpy as np
import torch
from admmsearch.data import DataSplits

def arrays():
    x = np.arange(40 * 16, dtype=np.float32).reshape(40, 4, 4)
    return {"x_train": x[:30], "y_train": np.arange(30) % 2,
            "x_test": x[30:], "y_test": np.arange(10) % 2}

def as_tuple():
    a = arrays()
    return a["x_train"], a["y_train"], a["x_test"], a["y_test"]

def ready():
    x, y = torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])
    return DataSplits("ready", x, y, x[:0], y[:0], x, y, num_classes=2)

def wrong():
    return 42
"""


@pytest.fixture()
def loader_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "admm_test_loaders.py").write_text(textwrap.dedent(LOADER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "admm_test_loaders"


@pytest.mark.parametrize("function", ["arrays", "as_tuple"])
def test_module_function_loader(loader_module: str, function: str) -> None:
    splits = load_dataset(f"{loader_module}:{function}", val_fraction=0.1, seed=1)
    assert splits.input_shape == (1, 4, 4)
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (27, 3, 10)
    assert splits.num_classes == 2


def test_module_function_returning_splits(loader_module: str) -> None:
    splits = load_dataset(f"{loader_module}:ready", limit_train=2)
    assert splits.name == "ready" and len(splits.x_train) == 2


def test_module_function_with_wrong_result(loader_module: str) -> None:
    with pytest.raises(UserCodeError, match="DataSplits"):
        load_dataset(f"{loader_module}:wrong")
    with pytest.raises(RegistryError, match="no 'missing'"):
        load_dataset(f"{loader_module}:missing")


# ---- batches ----------------------------------------------------------------------------------


def epoch_labels(x: torch.Tensor, y: torch.Tensor, seed: int, **kwargs) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [yb.tolist() for _, yb in batches(x, y, 3, generator=generator, **kwargs)]


def test_batches_cover_every_sample_once_and_keep_pairs() -> None:
    x, y = torch.arange(10.0).view(10, 1), torch.arange(10)
    seen = []
    for xb, yb in batches(x, y, 3, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert torch.equal(xb[:, 0].long(), yb)
        seen.append(yb)
    assert [len(b) for b in seen] == [3, 3, 3, 1]
    assert sorted(torch.cat(seen).tolist()) == list(range(10))


def test_batches_are_seeded() -> None:
    x, y = torch.zeros(20, 1), torch.arange(20)
    assert epoch_labels(x, y, 1, shuffle=True) == epoch_labels(x, y, 1, shuffle=True)
    assert epoch_labels(x, y, 1, shuffle=True) != epoch_labels(x, y, 2, shuffle=True)
    assert sum(epoch_labels(x, y, 1, shuffle=False), []) == list(range(20))


def test_crop_flip_is_a_shifted_and_maybe_flipped_copy() -> None:
    x = torch.randn(16, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16)
    generator = torch.Generator().manual_seed(3)
    [(out, labels)] = batches(x, y, 16, shuffle=False, generator=generator, augment="crop-flip")
    assert out.shape == x.shape and out.dtype == x.dtype and torch.equal(labels, y)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    flips = 0
    for i in range(16):
        crops = [padded[i, :, r : r + 6, c : c + 6] for r in range(9) for c in range(9)]
        plain = any(torch.equal(out[i], crop) for crop in crops)
        flipped = any(torch.equal(out[i], crop.flip(-1)) for crop in crops)
        assert plain or flipped
        flips += flipped and not plain
    assert 0 < flips < 16


def test_crop_flip_is_seeded_and_keeps_batch_shapes() -> None:
    x, y = torch.randn(10, 3, 8, 8), torch.arange(10)

    def run(seed: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return [xb for xb, _ in batches(x, y, 4, shuffle=True, generator=gen, augment="crop-flip")]

    first, again = run(0), run(0)
    assert [tuple(b.shape) for b in first] == [(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 8, 8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [({"batch_size": 0}, "batch_size"), ({"augment": "mixup"}, "augment")],
)
def test_batches_reject_bad_options(kwargs: dict, pattern: str) -> None:
    options = {"batch_size": 2, "shuffle": False, **kwargs}
    with pytest.raises(ConfigError, match=pattern):
        batches(torch.zeros(4, 1, 2, 2), torch.zeros(4), **options)


# ---- checks when the data is loaded -----------------------------------------------------------


def test_num_classes_keeps_classes_without_samples_and_bounds_the_labels(tmp_path: Path) -> None:
    save_npz(tmp_path / "d.npz")  # labels 0..2
    assert load_dataset(str(tmp_path / "d.npz"), num_classes=5).num_classes == 5
    with pytest.raises(DatasetError, match=r"label 2 is outside 0\.\.1 \(num_classes is 2\)"):
        load_dataset(str(tmp_path / "d.npz"), num_classes=2)
    with pytest.raises(ConfigError, match="num_classes"):
        load_dataset(str(tmp_path / "d.npz"), num_classes=0)


def test_a_stray_label_does_not_make_a_million_classes(tmp_path: Path) -> None:
    y = np.arange(30) % 3
    y[4] = 10**6
    save_npz(tmp_path / "d.npz", y_train=y)
    with pytest.raises(
        DatasetError, match="labels go up to 1000000, so 1000001 classes, but only"
    ):
        load_dataset(str(tmp_path / "d.npz"))
    y = np.arange(30) % 3 + 1  # 1-based labels: class 0 empty, still most classes occur
    save_npz(tmp_path / "one.npz", y_train=y, y_test=np.arange(12) % 3 + 1)
    assert load_dataset(str(tmp_path / "one.npz")).num_classes == 4


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_non_finite_inputs_are_refused_naming_file_and_array(tmp_path: Path, bad: float) -> None:
    x = np.zeros((12, 8, 8))
    x[5, 1, 1] = bad
    save_npz(tmp_path / "d.npz", x_test=x)
    with pytest.raises(DatasetError, match=r"d\.npz: x_test has .*(NaN or infinite|too large)"):
        load_dataset(str(tmp_path / "d.npz"))


def test_channels_last_images_get_a_transpose_hint(tmp_path: Path) -> None:
    save_npz(tmp_path / "d.npz", shape=(32, 32, 3))
    with pytest.raises(DatasetError, match=r"looks channels-last.*transpose\(0, 3, 1, 2\)"):
        load_dataset(str(tmp_path / "d.npz"))


def test_too_few_samples_for_a_validation_split(tmp_path: Path) -> None:
    save_npz(tmp_path / "d.npz", n_train=4, y_train=np.arange(4) % 3)
    with pytest.raises(DatasetError, match="4 training sample.* too few for val_fraction 0.1"):
        load_dataset(str(tmp_path / "d.npz"))
    assert len(load_dataset(str(tmp_path / "d.npz"), val_fraction=0.25).y_val) == 1


LOADER_CHECKS = """
import torch
from admmsearch.data import DataSplits

def nan_splits():
    x, y = torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])
    x[0, 0, 0, 0] = float("nan")
    return DataSplits("s", x, y, x, y, x, y, num_classes=2)

def label_over():
    x, y = torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 2])
    return DataSplits("s", x, y, x, y, x, y, num_classes=2)

def raises():
    raise OSError("no such bucket")
"""


@pytest.mark.parametrize(
    ("function", "error", "message"),
    [
        ("nan_splits", DatasetError, "DataSplits.x_train has NaN or infinite values"),
        ("label_over", DatasetError, r"DataSplits.y_train has label 2, outside 0\.\.1"),
        ("raises", UserCodeError, "dataset 'admm_test_checks:raises' raised OSError: no such"),
    ],
)
def test_a_loader_function_is_checked_like_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: str, error: type, message: str
) -> None:
    (tmp_path / "admm_test_checks.py").write_text(textwrap.dedent(LOADER_CHECKS))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(error, match=message):
        load_dataset(f"admm_test_checks:{function}")
