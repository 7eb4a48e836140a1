"""ONNX export: onnxruntime's logits on raw inputs equal torch's; QDQ int8 for uniform layers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from admmsearch.deploy._predict import load_model
from admmsearch.errors import ExportError
from admmsearch.packed._format import ModelMeta, pack_model

onnx = pytest.importorskip("onnx", reason="the deploy extra (onnx, onnxruntime) is needed")
ort = pytest.importorskip("onnxruntime", reason="the deploy extra is needed")

from admmsearch.deploy._onnx import export_onnx  # noqa: E402


def _raw_test(packed_digits) -> np.ndarray:
    norm = packed_digits.data.normalisation
    mean, std = np.float32(norm.mean[0]), np.float32(norm.std[0])
    return (packed_digits.data.x_test.numpy() * std + mean).astype(np.float32)


@pytest.mark.parametrize("int8", [False, True])
def test_onnxruntime_equals_torch(tmp_path, packed_digits, int8: bool) -> None:
    out = tmp_path / "digits.onnx"
    info = export_onnx(packed_digits.path, out, int8=int8)
    assert info.file_bytes == out.stat().st_size
    x = _raw_test(packed_digits)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input": x})[0]
    want = load_model(packed_digits.path).logits(x).numpy()
    assert np.abs(got - want).max() <= 1e-4
    assert np.array_equal(got.argmax(1), want.argmax(1))
    graph = onnx.load(str(out)).graph
    int8_inits = [i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    if not int8:
        assert info.int8_layers == () and not int8_inits
        return
    # 4-bit and 2-bit uniform grids fit int8; 8 bits on a pruned layer reach level 255, and
    # fc2's learned centroids have no grid: those two stay float32
    assert info.int8_layers == ("conv1.weight", "fc1.weight")
    assert info.float_layers == ("conv2.weight", "fc2.weight")
    assert info.float_reasons == ("levels beyond int8", "learned levels")
    assert "model.conv1.weight_levels" in int8_inits
    assert sum(n.op_type == "DequantizeLinear" for n in graph.node) == 2


def test_network_the_exporter_cannot_express(tmp_path, monkeypatch, packed_digits) -> None:
    (tmp_path / "odd_nets.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Odd(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(64, 10)

                def forward(self, x):
                    if x.sum() > 0:  # control flow on the data: no graph can hold it
                        x = -x
                    return self.fc(x.flatten(1))

            def build(num_classes):
                return Odd()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = torch.nn.Module()
    model.fc = torch.nn.Linear(64, 10)
    path = tmp_path / "odd.admm"
    pack_model(model, ["fc"], path, meta=ModelMeta("odd_nets:build", {}, 10, (1, 8, 8)))
    with pytest.raises(ExportError, match=r"odd.admm: ONNX cannot express network 'odd_nets"):
        export_onnx(path, tmp_path / "odd.onnx", trust_code=True)


@pytest.mark.slow
def test_command_line_export_and_bad_input(tmp_path, packed_digits) -> None:
    out = tmp_path / "m.onnx"
    run = subprocess.run(
        [sys.executable, "-m", "admmsearch", "export-model", str(packed_digits.path),
         "--target", "onnx", "--int8", "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"wrote {out}: ") and "int8 (QDQ): conv1.weight" in run.stdout
    old = subprocess.run(  # the old spelling still works, and says it is old
        [sys.executable, "-m", "admmsearch", "export-model", str(packed_digits.path),
         "--format", "onnx", "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert old.returncode == 0 and old.stdout.startswith(f"wrote {out}: "), old.stderr
    assert old.stderr == "warning: export-model --format is deprecated; use --target\n"
    broken = tmp_path / "broken.admm"
    broken.write_bytes(packed_digits.path.read_bytes()[:-7])
    for args, message in [
        ([str(broken), "--target", "onnx"], f"error: {broken} is truncated"),
        ([str(packed_digits.path), "--target", "tflite"], "error: Invalid value for '--target'"),
    ]:
        run = subprocess.run(
            [sys.executable, "-m", "admmsearch", "export-model", *args],
            capture_output=True, text=True,
        )  # fmt: skip
        assert run.returncode == 2 and run.stderr.startswith(message), run.stderr
        assert len(run.stderr.strip().splitlines()) == 1


SEQMLP = """
from torch import nn


class SeqMLP(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.norm = nn.LayerNorm(32)
        self.ff1 = nn.Linear(32, 64)
        self.ff2 = nn.Linear(64, 32)
        self.head = nn.Linear(8 * 32, num_classes)

    def forward(self, x):
        x = x.flatten(1, 2)
        h = self.norm(self.embed(x))
        h = h + self.ff2(self.ff1(h).relu())
        return self.head(h.flatten(1))


def build(num_classes=10):
    return SeqMLP(num_classes)
"""


def test_linear_layers_on_a_3d_input_go_int8_too(tmp_path) -> None:
    """cases/40: a Linear applied to (N, 8, features) is exported as a MatMul on a transposed
    constant, not under its name: it stayed float32 without a word. Now it is int8 (Cast and
    Mul, which onnxruntime folds exactly, where DequantizeLinear -> MatMul would be fused into
    MatMulNBits and move the logits), and the layer left float32 says why."""
    from admmsearch.data import load_dataset
    from admmsearch.models import compressible_layers, create_model
    from admmsearch.pipeline import PipelineSettings, QuantRetrainSettings, run_pipeline
    from admmsearch.plan import Plan
    from admmsearch.train import TrainSettings

    (tmp_path / "seqmlp.py").write_text(SEQMLP)
    name = f"{tmp_path / 'seqmlp.py'}:build"
    data = load_dataset("digits", seed=0, limit_train=300)
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_shape=(1, 8, 8))
    plan = {"embed": {"keep": 0.5, "bits": 4}, "ff1": {"keep": 0.5, "bits": 4}}
    plan |= {"ff2": {"keep": 0.2, "clusters": 8}, "head": {"keep": 0.3, "bits": 5}}
    train = TrainSettings(epochs=1, lr=0.05, batch_size=64)
    settings = PipelineSettings(
        pretrain=train,
        admm_prune=None,
        retrain=train,
        admm_quantize=None,
        quant_retrain=QuantRetrainSettings(train, shares=(1.0,)),
    )
    run_pipeline(model, data, Plan.from_dict({"layers": plan}), settings)
    packed = tmp_path / "s.admm"
    meta = ModelMeta(name, {}, 10, (1, 8, 8), False, data.normalisation)
    pack_model(model, list(compressible_layers(model)), packed, meta=meta)
    info = export_onnx(packed, tmp_path / "s8.onnx", int8=True, trust_code=True)
    assert sorted(info.int8_layers) == ["embed.weight", "ff1.weight", "head.weight"]
    assert sorted(info.cast_layers) == ["embed.weight", "ff1.weight"]
    assert info.float_layers == ("ff2.weight",) and info.float_reasons == ("learned levels",)
    x = (data.x_test * data.normalisation.std[0] + data.normalisation.mean[0]).numpy()
    session = ort.InferenceSession(str(tmp_path / "s8.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input": x})[0]
    want = load_model(packed, trust_code=True).logits(x).numpy()
    assert np.abs(got - want).max() <= 1e-4
