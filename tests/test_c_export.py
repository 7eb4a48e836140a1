"""C export: gcc builds it; the decoder gives every layer bit for bit; the reference inference
predicts as torch does; the flash size is the payload."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from admmsearch.data import SYSTEM_FASHION_DIR, load_dataset
from admmsearch.deploy._c import export_c
from admmsearch.deploy._predict import load_model
from admmsearch.models import compressible_layers, create_model
from admmsearch.packed._format import ModelMeta, pack_model, read_model_file
from admmsearch.pipeline import PipelineSettings, QuantRetrainSettings, run_pipeline
from admmsearch.plan import Plan
from admmsearch.train import TrainSettings

pytestmark = [
    pytest.mark.slow,  # runs gcc and the program it builds
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed"),
]

HARNESS = textwrap.dedent(
    """
    #include <stdio.h>
    #include <string.h>
    #include "admm_model.h"

    static float weights[ADMM_MAX_LAYER_NUMEL];
    #ifdef PREDICT
    static float sample[ADMM_INPUT_SIZE], logits[ADMM_NUM_CLASSES];
    #endif

    int main(int argc, char **argv)
    {
        int i;
        if (argc > 1 && strcmp(argv[1], "layers") == 0) {
            for (i = 0; i < ADMM_NUM_LAYERS; ++i) {
                if (admm_decode_layer(&admm_layers[i], weights))
                    return 1;
                fwrite(weights, sizeof(float), admm_layers[i].numel, stdout);
            }
            return 0;
        }
    #ifdef PREDICT
        while (fread(sample, sizeof(float), ADMM_INPUT_SIZE, stdin) == ADMM_INPUT_SIZE)
            printf("%d\\n", admm_predict(sample, logits));
    #endif
        return 0;
    }
    """
)


def _build(model_file: Path, folder: Path, predict: bool = True) -> Path:
    info = export_c(model_file, folder)
    (folder / "main.c").write_text(HARNESS)
    program = folder / "run"
    flags = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2"]
    define = ["-DPREDICT"] if predict else []
    subprocess.run(
        ["gcc", *flags, *define, "-o", program, folder / "main.c", info.source],
        check=True,
        capture_output=True,
    )
    return program


def _check_layers(program: Path, model_file: Path) -> None:
    """Every compressed layer, decoded in C, equals the packed file's weight bit for bit."""
    packed = read_model_file(model_file)
    out = subprocess.run([program, "layers"], check=True, capture_output=True).stdout
    decoded = np.frombuffer(out, dtype=np.uint32)
    offset = 0
    for stream in packed.streams:
        if stream.encoding == "raw":
            continue
        want = packed.state[stream.key].numpy().reshape(-1).view(np.uint32)
        assert np.array_equal(decoded[offset : offset + want.size], want), stream.key
        offset += want.size
    assert offset == decoded.size


def _check_predictions(program: Path, model_file: Path, raw: np.ndarray) -> None:
    samples = np.ascontiguousarray(raw, dtype=np.float32)
    out = subprocess.run(
        [program], input=samples.tobytes(), check=True, capture_output=True
    ).stdout
    got = np.array([int(line) for line in out.split()])
    want = load_model(model_file).predict(samples).numpy()
    assert got.size == len(samples) and np.array_equal(got, want)


def _raw(data) -> np.ndarray:
    norm = data.normalisation
    shape = (1, len(norm.mean), *([1] * (data.x_test.dim() - 2)))
    mean, std = np.float32(norm.mean).reshape(shape), np.float32(norm.std).reshape(shape)
    return data.x_test.numpy() * std + mean


def test_digits_cnn_in_c(tmp_path, packed_digits) -> None:
    program = _build(packed_digits.path, tmp_path / "c")
    _check_layers(program, packed_digits.path)
    _check_predictions(program, packed_digits.path, _raw(packed_digits.data))
    info = export_c(packed_digits.path, tmp_path / "again")
    assert info.flash_bytes == packed_digits.info.payload_bytes
    assert info.accounted_bits == packed_digits.result.storage.model_stored_bits
    header = (tmp_path / "c" / "admm_model.h").read_text()
    assert f"#define ADMM_FLASH_BYTES {info.flash_bytes}u" in header


def _compress(name: str, data, plan: dict, index_format: str, folder: Path) -> Path:
    torch.manual_seed(0)
    model = create_model(name, num_classes=data.num_classes, input_shape=data.input_shape)
    train = TrainSettings(epochs=1, lr=0.01, batch_size=64)
    settings = PipelineSettings(
        pretrain=train,
        admm_prune=None,
        retrain=train,
        admm_quantize=None,
        quant_retrain=QuantRetrainSettings(train, shares=(1.0,)),
        index_format=index_format,
    )
    run_pipeline(model, data, Plan.from_dict({"layers": plan}), settings)
    path = folder / f"{name}.admm"
    meta = ModelMeta(name, {}, data.num_classes, data.input_shape, False, data.normalisation)
    pack_model(model, list(compressible_layers(model)), path, index_format, meta)
    return path


def test_lenet_300_100_with_csr_indices_in_c(tmp_path) -> None:
    data = load_dataset("digits", seed=0, limit_train=400)
    plan = {
        "fc1": {"keep": 0.1, "bits": 3},
        "fc2": {"keep": 0.3, "clusters": 6},
        "fc3": {"keep": 0.8},
    }
    path = _compress("lenet-300-100", data, plan, "csr", tmp_path)
    encodings = {s.key: s.encoding for s in read_model_file(path).streams}
    assert "csr" in encodings.values()
    program = _build(path, tmp_path / "c")
    _check_layers(program, path)
    _check_predictions(program, path, _raw(data))


@pytest.mark.skipif(
    not SYSTEM_FASHION_DIR.is_dir(),
    reason=f"Fashion-MNIST is not installed at {SYSTEM_FASHION_DIR} "
    "(apt-get install dataset-fashion-mnist)",
)
def test_lenet5_on_fashion_mnist_in_c(tmp_path) -> None:
    data = load_dataset("fashion-mnist", seed=0, limit_train=500, download=False)
    plan = {
        "conv1": {"keep": 0.8, "bits": 6},
        "conv2": {"keep": 0.2, "bits": 4},
        "fc1": {"keep": 0.03, "bits": 2},
        "fc2": {"keep": 0.5, "bits": 5},
    }
    path = _compress("lenet5", data, plan, "gap", tmp_path)
    program = _build(path, tmp_path / "c")
    _check_layers(program, path)
    _check_predictions(program, path, _raw(data)[:1000])


def test_other_networks_get_the_decoder_only(tmp_path) -> None:
    """Any network exports its data and decoder (the file is only read, no code is run)."""
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.ReLU(), torch.nn.Linear(20, 2))
    with torch.no_grad():
        levels = torch.tensor(0.25) * torch.arange(-7.0, 8.0)
        weight = levels[torch.randint(15, (20, 30), generator=generator)]
        model[0].weight.copy_(
            torch.where(torch.rand(20, 30, generator=generator) < 0.3, weight, 0)
        )
    path = tmp_path / "seq.admm"
    pack_model(model, ["0", "2"], path, meta=ModelMeta("mine:build", {}, 2, (30,)))
    info = export_c(path, tmp_path / "c")
    assert not info.inference and "admm_predict" not in info.header.read_text()
    program = _build(path, tmp_path / "c", predict=False)
    _check_layers(program, path)
