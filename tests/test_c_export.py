"""C export: gcc builds it pedantically; the decoder gives every layer bit for bit; admm_predict,
generated from the recorded graph, gives torch's logits within 1e-4 for the reference networks
and for networks of every recorded operation, for every coding, reading the compressed streams
(no layer buffer: the arena is the plan) or decoding each layer; the flash arrays are the
payload; a network with an unsupported operation gets the decoder and the operation's name."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from nets import Conv1dNet, DSResNet, Inception, as_format_2, compress_, leaky, mlp

from admmsearch.deploy._arena import Step, plan_arena
from admmsearch.deploy._c import export_c, write_samples
from admmsearch.deploy._c_sizes import measure
from admmsearch.fold import fold_batchnorm
from admmsearch.models import compressible_layers, create_model
from admmsearch.normalise import Normalisation
from admmsearch.packed._format import ModelMeta, pack_model, read_model_file
from admmsearch.packed._graph import ELEMENTWISE

pytestmark = [
    pytest.mark.slow,  # runs gcc and the programs it builds
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed"),
]
FLAGS = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2"]
SAMPLES = 300
LAYERS_MAIN = textwrap.dedent(
    """
    #include <stdio.h>
    #include "admm_model.h"

    static float weights[ADMM_MAX_LAYER_NUMEL];

    int main(void)
    {
        int i;
        for (i = 0; i < ADMM_NUM_LAYERS; ++i) {
            if (admm_decode_layer(&admm_layers[i], weights))
                return 1;
            fwrite(weights, sizeof(float), admm_layers[i].numel, stdout);
        }
        return 0;
    }
    """
)


@dataclass(frozen=True)
class Net:
    """A network to export: how to build it, one sample's shape, its normalisation."""

    build: object
    input_shape: tuple[int, ...]
    name: str = ""
    fold: bool = False
    norm: Normalisation | None = None


def _reference(name: str, input_shape: tuple[int, ...], **options) -> Net:
    build = lambda: create_model(name, num_classes=10, input_shape=input_shape)  # noqa: E731
    return Net(build, input_shape, name, **options)


THREE_CHANNELS = Normalisation((0.5, -0.25, 1.0), (2.0, 1.0, 0.5))
NETS = {
    "digits-cnn": _reference("digits-cnn", (1, 8, 8)),
    "lenet5": _reference("lenet5", (1, 28, 28), norm=Normalisation((0.25,), (2.0,))),
    "lenet-300-100": _reference("lenet-300-100", (1, 8, 8)),
    "ds-resnet-bn": Net(DSResNet, (1, 12, 12), norm=Normalisation((0.5,), (0.25,))),
    "ds-resnet-folded": Net(DSResNet, (1, 12, 12), fold=True),
    "inception-concat": Net(Inception, (3, 10, 10), norm=THREE_CHANNELS),
    "conv1d": Net(Conv1dNet, (2, 32)),
    "mlp": Net(mlp, (20,), norm=Normalisation((1.0,), (4.0,))),
}


@dataclass(frozen=True)
class Packed:
    path: Path
    model: torch.nn.Module
    raw: np.ndarray  # raw samples, as main.c reads them
    logits: np.ndarray  # torch's


def _pack(name: str, index_format: str, folder: Path) -> Packed:
    net = NETS[name]
    torch.manual_seed(0)
    model = net.build().eval()
    compress_(model, seed=len(name))
    if net.fold:
        fold_batchnorm(model)
    classes = int(model(torch.zeros(1, *net.input_shape)).shape[1])
    meta = ModelMeta(net.name or f"nets:{name}", {}, classes, net.input_shape, net.fold, net.norm)
    path = folder / f"{name}-{index_format}.admm"
    pack_model(model, list(compressible_layers(model)), path, index_format, meta)
    generator = torch.Generator().manual_seed(1)
    raw = 3 * torch.randn(SAMPLES, *net.input_shape, generator=generator)
    with torch.no_grad():
        logits = model(net.norm.apply(raw) if net.norm else raw)
    return Packed(path, model, raw.numpy(), logits.numpy())


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> dict[tuple[str, str], Packed]:
    folder = tmp_path_factory.mktemp("packed")
    return {(n, f): _pack(n, f, folder) for n in NETS for f in ("gap", "csr")}


def _gcc(*args: object, cwd: Path) -> None:
    done = subprocess.run(["gcc", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@dataclass(frozen=True)
class Built:
    packed: Packed
    folder: Path
    info: object

    def run(self, program: str) -> tuple[str, np.ndarray]:
        done = subprocess.run(
            [self.folder / program, "samples.bin", f"{program}.logits"],
            cwd=self.folder, capture_output=True, text=True, check=True,
        )  # fmt: skip
        logits = np.fromfile(self.folder / f"{program}.logits", dtype="<f4")
        return done.stdout, logits.reshape(self.packed.logits.shape)


@pytest.fixture(
    scope="module", params=[(n, f) for n in NETS for f in ("gap", "csr")], ids="-".join
)
def built(request, packed, tmp_path_factory) -> Built:
    """The export of one network, built with the harness main.c both ways and a layer dump."""
    case = packed[request.param]
    folder = tmp_path_factory.mktemp("c")
    info = export_c(case.path, folder)
    labels = np.arange(SAMPLES) % case.logits.shape[1]
    np.savez(folder / "data.npz", x=case.raw, y=labels)
    write_samples(
        folder / "data.npz", folder / "samples.bin", read_model_file(case.path).meta.input_shape
    )
    _gcc(*FLAGS, "-c", "admm_model.c", "-o", "stream.o", cwd=folder)
    _gcc(*FLAGS, "-DADMM_DECODE_LAYERS=1", "-c", "admm_model.c", "-o", "decoded.o", cwd=folder)
    for program, model in (("stream", "stream.o"), ("decoded", "decoded.o")):
        _gcc(*FLAGS, "-o", program, "main.c", model, "-lm", cwd=folder)
    (folder / "layers.c").write_text(LAYERS_MAIN)
    _gcc(*FLAGS, "-o", "layers", "layers.c", "stream.o", "-lm", cwd=folder)
    return Built(case, folder, info)  # fmt: skip


@pytest.mark.parametrize("program", ["stream", "decoded"])
def test_logits_equal_torch(built: Built, program: str) -> None:
    assert built.info.inference, built.info.problems
    printed, logits = built.run(program)
    want = built.packed.logits
    assert np.abs(logits - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    correct = int((want.argmax(1) == np.arange(SAMPLES) % want.shape[1]).sum())
    assert printed == f"samples.bin: accuracy {correct / SAMPLES:.4f} ({correct} of {SAMPLES})\n"


def test_every_layer_decodes_bit_for_bit(built: Built) -> None:
    packed = read_model_file(built.packed.path)
    out = subprocess.run([built.folder / "layers"], check=True, capture_output=True).stdout
    decoded, offset = np.frombuffer(out, dtype=np.uint32), 0
    for stream in packed.streams:
        if stream.encoding == "raw":
            continue
        want = packed.state[stream.key].numpy().reshape(-1).view(np.uint32)
        assert np.array_equal(decoded[offset : offset + want.size], want), stream.key
        offset += want.size
    assert offset == decoded.size
    assert built.info.flash_bytes == packed.payload_bytes
    header = (built.folder / "admm_model.h").read_text()
    assert f"#define ADMM_FLASH_BYTES {built.info.flash_bytes}u" in header


def test_streaming_allocates_the_arena_alone(built: Built) -> None:
    """RAM of the streaming build: the planned arena and nothing else (no layer buffer); the
    decoded build adds one buffer of the largest layer."""
    graph = read_model_file(built.packed.path).graph
    shapes = graph.shapes(read_model_file(built.packed.path).meta.input_shape)
    kinds = {"reshape": "alias", **dict.fromkeys((*ELEMENTWISE, "batch_norm", "add"), "inplace")}
    steps = [Step(n.inputs, kinds.get(n.op, "new")) for n in graph.nodes]
    plan = plan_arena([math.prod(s) for s in shapes], steps, graph.output)
    header = (built.folder / "admm_model.h").read_text()
    assert f"#define ADMM_ARENA_FLOATS {plan.floats}\n" in header
    assert built.info.arena_floats == plan.floats >= plan.peak
    assert _ram_symbols(built.folder / "stream.o") == {"admm_arena": 4 * plan.floats}
    largest = max(
        s.numel for s in read_model_file(built.packed.path).streams if s.encoding != "raw"
    )
    assert _ram_symbols(built.folder / "decoded.o") == {
        "admm_arena": 4 * plan.floats,
        "admm_w": 4 * largest,
    }


def _ram_symbols(obj: Path) -> dict[str, int]:
    """Zero-initialised (nm's b, B) symbols with their sizes; checks there is no other
    writable data (a .data section: the tables with pointers are .data.rel.ro on a PIE host,
    .rodata on a microcontroller)."""
    sections = subprocess.run(["size", "-A", obj], check=True, capture_output=True, text=True)
    rows = [line.split() for line in sections.stdout.splitlines()]
    assert all(int(r[1]) == 0 for r in rows if len(r) == 3 and r[0] == ".data")
    out = subprocess.run(["nm", "-S", obj], check=True, capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines()]
    return {r[3]: int(r[1], 16) for r in rows if len(r) == 4 and r[2] in "bB"}


def test_chains_need_their_largest_pair_of_buffers(packed) -> None:
    """For networks without branches the arena is its lower bound, the largest pair of
    consecutive activations."""
    for name in ("digits-cnn", "lenet5", "lenet-300-100", "mlp", "conv1d"):
        info = export_c(packed[name, "gap"].path, packed[name, "gap"].path.parent / f"{name}-c")
        graph = read_model_file(packed[name, "gap"].path).graph
        sizes = [math.prod(s) for s in graph.shapes(NETS[name].input_shape)]
        stored = [sizes[0]] + [
            sizes[i + 1]
            for i, n in enumerate(graph.nodes)
            if n.op not in ("reshape", *ELEMENTWISE)
        ]
        assert info.arena_floats == max(a + b for a, b in zip(stored, stored[1:], strict=False)), (
            name
        )


def test_every_coding_is_exercised(packed) -> None:
    """Across the networks and both index formats, each value coding in each encoding."""
    seen = {
        (s.encoding, s.coding)
        for case in packed.values()
        for s in read_model_file(case.path).streams
        if s.encoding != "raw"
    }
    assert seen == {
        (e, c) for e in ("dense", "gap", "csr") for c in ("uniform", "codebook", "raw")
    }


def _raw(data) -> np.ndarray:
    norm = data.normalisation
    shape = (1, len(norm.mean), *([1] * (data.x_test.dim() - 2)))
    mean, std = np.float32(norm.mean).reshape(shape), np.float32(norm.std).reshape(shape)
    return data.x_test.numpy() * std + mean


def test_the_cli_harness_prints_what_predict_prints(tmp_path, packed_digits) -> None:
    """A user's check: export with samples, build main.c, compare with `admmsearch predict`."""
    cli = Path(sys.executable).parent / "admmsearch"
    data = tmp_path / "digits_test.npz"
    np.savez(data, x_test=_raw(packed_digits.data), y_test=packed_digits.data.y_test.numpy())
    args = ["export-model", packed_digits.path, "--target", "c", "--out", tmp_path / "c"]
    out = _cli(cli, *args, "--samples", data, "--measure", "host")
    assert "(with admm_predict, 9 operations, weights read from the streams)" in out
    assert "for this computer (gcc -std=c99 -Os): flash " in out
    assert f"wrote {tmp_path / 'c' / 'samples.bin'}: 360 samples of digits_test.npz" in out
    _gcc("-std=c99", "-O2", "-o", "admm_main", "main.c", "admm_model.c", "-lm", cwd=tmp_path / "c")
    harness = subprocess.run(
        ["./admm_main", "samples.bin"], cwd=tmp_path / "c", capture_output=True, text=True
    ).stdout
    predicted = _cli(cli, "predict", packed_digits.path, data)
    assert harness.split(": accuracy ")[1] == predicted.split(": accuracy ")[1]
    assert harness.startswith("samples.bin: accuracy ")


def _cli(cli: Path, *args: object) -> str:
    done = subprocess.run([cli, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_unsupported_operation_is_named_and_the_weights_exported(tmp_path) -> None:
    torch.manual_seed(0)
    model = leaky()
    compress_(model, seed=0)
    path = tmp_path / "leaky.admm"
    pack_model(model, ["0", "3"], path, meta=ModelMeta("nets:leaky", {}, 3, (1, 8, 8)))
    info = export_c(path, tmp_path / "c")
    assert not info.inference and info.problems == ("unsupported operation 1 (LeakyReLU)",)
    assert "decoder only, no admm_predict: unsupported operation 1 (LeakyReLU)" in info.summary()
    assert "admm_predict" not in info.header.read_text() and info.harness is None
    (tmp_path / "c" / "layers.c").write_text(LAYERS_MAIN)
    _gcc(*FLAGS, "-o", "layers", "layers.c", "admm_model.c", cwd=tmp_path / "c")
    out = subprocess.run([tmp_path / "c" / "layers"], check=True, capture_output=True).stdout
    want = [model.state_dict()[k].reshape(-1).numpy() for k in ("0.weight", "3.weight")]
    assert out == np.concatenate(want).astype("<f4").tobytes()


def test_a_reference_network_with_an_unsupported_shortcut_is_named(tmp_path) -> None:
    model = create_model("resnet20", num_classes=10, input_shape=(3, 8, 8), blocks=1).eval()
    fold_batchnorm(model)
    path = tmp_path / "r.admm"
    meta = ModelMeta("resnet20", {"blocks": 1}, 10, (3, 8, 8), True)
    pack_model(model, list(compressible_layers(model)), path, meta=meta)
    problems = export_c(path, tmp_path / "c").problems
    assert problems[:2] == (
        "unsupported operation layer2.0.shortcut (operator.getitem)",
        "unsupported operation layer2.0.shortcut (torch.nn.functional.pad)",
    )


TINY_NET = textwrap.dedent(
    """
    import torch.nn as nn


    def build(num_classes=10, in_channels=1):
        return nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU6(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes),
        )
    """
)


def test_a_format_2_file_is_traced_with_its_code_beside_it(tmp_path, monkeypatch) -> None:
    """Format 2 recorded no graph: the export rebuilds and traces the network, user code only
    when trusted, looked for beside the .admm (cases 41 and 44) and not only in the cwd."""
    from admmsearch.deploy._predict import load_model
    from admmsearch.registry import import_object

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tinynet.py").write_text(TINY_NET)
    model = import_object(f"{tmp_path / 'model' / 'tinynet.py'}:build", "model")(10, 1)
    compress_(model, seed=1)
    fold_batchnorm(model)
    path = tmp_path / "model" / "tiny.admm"
    meta = ModelMeta("tinynet.py:build", {}, 10, (1, 6, 6), True)
    pack_model(model, ["0", "5"], path, meta=meta)
    as_format_2(path)
    monkeypatch.chdir(tmp_path)  # not the model's folder
    assert read_model_file(path).version == 2 and not read_model_file(path).graph.recorded
    untrusted = export_c(path, tmp_path / "untrusted")
    assert not untrusted.inference and "pass --trust-code" in untrusted.problems[0]
    trusted = export_c(path, tmp_path / "trusted", trust_code=True)
    assert trusted.inference and trusted.operations == 5  # the folded BatchNorm is gone
    x = torch.randn(4, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(load_model(path, trust_code=True).logits(x), model(x))


CASE_41 = Path("/work/shared/cases/41-c-export-user-model-decoder-only")


@pytest.mark.skipif(not CASE_41.is_dir(), reason=f"case 41 is not at {CASE_41}")
def test_case_41_gets_admm_predict(tmp_path) -> None:
    """The user's MobileNet-style network (format 2, user code): traced when trusted; packed
    again (format 3), exported with nothing imported."""
    from admmsearch.deploy._predict import load_model

    for name in ("best.admm", "mynet.py"):
        shutil.copy(CASE_41 / name, tmp_path / name)
    info = export_c(tmp_path / "best.admm", tmp_path / "c", trust_code=True)
    assert info.inference and info.operations == 17
    deployed = load_model(tmp_path / "best.admm", trust_code=True)
    meta = deployed.meta
    pack_model(
        deployed.model,
        [k[: -len(".weight")] for k in deployed.packed.blobs if k.endswith("weight")],
        tmp_path / "again.admm",
        meta=meta,
    )
    again = export_c(tmp_path / "again.admm", tmp_path / "c2")
    assert again.inference and again.flash_bytes == info.flash_bytes
    assert again.operations == info.operations and again.arena_floats == info.arena_floats


M4 = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-Os", "-mcpu=cortex-m4"]
M4 += ["-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]


@pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None,
    reason="arm-none-eabi-gcc is not installed (apt-get install gcc-arm-none-eabi; .ci/run does)",
)
def test_it_builds_and_measures_for_a_cortex_m4(packed, tmp_path) -> None:
    case = packed["ds-resnet-bn", "gap"]
    info = export_c(case.path, tmp_path, target="cortex-m4")
    for source in ("admm_model.c", "main.c"):
        for mode in ("0", "1"):
            args = [*M4, f"-DADMM_DECODE_LAYERS={mode}", "-c", source, "-o", "out.o"]
            done = subprocess.run(
                ["arm-none-eabi-gcc", *args], cwd=tmp_path, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
    sizes = info.sizes
    assert sizes.ram_bytes == 4 * info.arena_floats
    assert sizes.const_bytes >= info.flash_bytes and sizes.code_bytes > 0
    assert 0 < sizes.stack_bytes < 1024 and set(sizes.external) <= {"sqrtf", "memset"}
    decoded = measure(info.source, "cortex-m4", ("-DADMM_DECODE_LAYERS=1",))
    largest = max(s.numel for s in read_model_file(case.path).streams if s.encoding != "raw")
    assert decoded.ram_bytes == sizes.ram_bytes + 4 * largest
    assert "for a Cortex-M4F (arm-none-eabi-gcc -std=c99 -Os -mcpu=cortex-m4" in info.summary()


def test_uncompressed_layers_are_read_as_float_arrays(tmp_path) -> None:
    """Layers left out of compression (raw float32 weights) run from their float arrays."""
    torch.manual_seed(0)
    model = Inception().eval()
    compress_(model, seed=2)
    path = tmp_path / "partial.admm"
    pack_model(model, ["fc"], path, meta=ModelMeta("nets:inception", {}, 5, (3, 10, 10)))
    info = export_c(path, tmp_path / "c")
    assert info.inference and "admm_weights(&w, -1, admm_a_weight" in info.source.read_text()
    raw = torch.randn(40, 3, 10, 10, generator=torch.Generator().manual_seed(3))
    np.savez(tmp_path / "data.npz", x=raw.numpy(), y=np.zeros(40, dtype=np.int64))
    write_samples(tmp_path / "data.npz", tmp_path / "c" / "samples.bin", (3, 10, 10))
    _gcc(*FLAGS, "-o", "admm_main", "main.c", "admm_model.c", "-lm", cwd=tmp_path / "c")
    subprocess.run(["./admm_main", "samples.bin", "out.bin"], cwd=tmp_path / "c", check=True)
    logits = np.fromfile(tmp_path / "c" / "out.bin", dtype="<f4").reshape(40, 5)
    with torch.no_grad():
        assert np.abs(logits - model(raw).numpy()).max() < 1e-4
