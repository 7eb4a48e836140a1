"""ONNX export of a packed model: the compressed network with its exact zeros and levels.

The network is rebuilt from the ``.admm`` file alone (:func:`._predict.load_model`),
the input normalisation it was trained with is put in front of it (``(x - mean) / std``), and
torch's exporter writes the graph: the ONNX model takes raw inputs ``(N, *input_shape)`` and
returns logits. Its weights are the decoded float32 tensors, bit for bit.

With ``int8=True`` every uniformly quantized layer whose integer levels fit int8 is stored as
int8 levels and its one float32 scale, dequantized in the graph (``DequantizeLinear``, the QDQ
form): ``level * scale`` in float32 is exactly the weight, so the predictions do not change.
Layers with learned levels (a codebook), raw values, or levels beyond int8 (8-bit levels on a
pruned layer's odd grid reach 255) stay float32; :class:`OnnxInfo` lists both, and why each
layer stayed float32. A weight is found in the graph under its own name, or, for a ``Linear``
applied to an input of more than two dimensions (``(batch, sequence, features)``), as the
transposed constant torch's exporter folds it into for a ``MatMul``. There the levels become
float32 through ``Cast`` and ``Mul`` by the scale instead: onnxruntime fuses
``DequantizeLinear -> MatMul`` into ``MatMulNBits``, which also quantizes the activations
(``accuracy_level`` 4) and moves the logits by about 0.1; ``Cast`` and ``Mul`` of constants
are folded into the same exact float32 weight when the session loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ExportError
from ..normalise import Normalisation
from ..packed import distinct_values, uniform_levels
from ._predict import DeployedModel, load_model

__all__ = ["OnnxInfo", "export_onnx"]

OPSET = 18
_PREFIX = "model."  # the wrapped network's attribute name, hence its initializers' prefix


@dataclass(frozen=True)
class OnnxInfo:
    """What was written: the file, its size, and which compressed layers went int8."""

    path: Path
    file_bytes: int
    int8_layers: tuple[str, ...]
    float_layers: tuple[str, ...]
    float_reasons: tuple[str, ...] = ()  # with int8: why each of float_layers stayed float32
    cast_layers: tuple[str, ...] = ()  # of int8_layers, those dequantized by Cast and Mul

    def summary(self) -> str:
        qdq = [k for k in self.int8_layers if k not in self.cast_layers]
        int8 = f"; int8 (QDQ): {', '.join(qdq)}" if qdq else ""
        if self.cast_layers:
            int8 += f"; int8 (Cast, Mul before a MatMul): {', '.join(self.cast_layers)}"
        why = [f" ({r})" for r in self.float_reasons] or [""] * len(self.float_layers)
        floats = ", ".join(f"{k}{w}" for k, w in zip(self.float_layers, why, strict=True))
        kept = f"; float32: {floats}" if self.float_layers else ""
        return f"wrote {self.path}: {self.file_bytes} bytes{int8}{kept}"


class _WithInputs(nn.Module):
    """The network behind its input normalisation: raw inputs in, logits out."""

    def __init__(self, model: nn.Module, norm: Normalisation | None, ndim: int) -> None:
        super().__init__()
        self.model = model
        self.norm = norm is not None
        if norm is not None:
            shape = (1, norm.channels, *([1] * (ndim - 1))) if ndim > 1 else (1, 1)
            self.register_buffer("mean", torch.tensor(norm.mean).reshape(shape))
            self.register_buffer("std", torch.tensor(norm.std).reshape(shape))

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean) / self.std if self.norm else x)


def export_onnx(
    model_file: str | Path, out: str | Path, *, int8: bool = False, trust_code: bool = False
) -> OnnxInfo:
    """Write the packed model ``model_file`` as ONNX to ``out``.

    Raises:
        PackError: the packed file cannot be read or rebuilt (see ``load_model``).
        ExportError: the exporter cannot express the network, or ``out`` cannot be written.
    """
    import onnx

    deployed = load_model(model_file, trust_code=trust_code)
    out = Path(out)
    proto = _exported(deployed, model_file)
    chosen = _int8_layers(deployed) if int8 else {}
    done, cast = _to_qdq(proto, chosen)
    try:
        onnx.save(proto, str(out))
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc}") from None
    floats = {s.key: _why_float(s, chosen) for s in deployed.packed.streams}
    floats = {k: why for k, why in floats.items() if why and k not in done}
    reasons = tuple(floats.values()) if int8 else ()
    return OnnxInfo(out, out.stat().st_size, tuple(done), tuple(floats), reasons, tuple(cast))


def _why_float(stream, chosen: dict) -> str | None:
    """Why a compressed weight is not stored int8 (None for tensors that are not)."""
    if stream.encoding == "raw":
        return None
    if stream.coding == "codebook":
        return "learned levels"
    if stream.coding == "raw":
        return "not quantized"
    return "not in the exported graph" if stream.key in chosen else "levels beyond int8"


def _exported(deployed: DeployedModel, model_file: str | Path):
    """The ONNX proto of the network behind its normalisation (torch's dynamo exporter).

    Raises:
        ExportError: the exporter cannot express the network.
    """
    meta = deployed.meta
    wrapper = _WithInputs(deployed.model, meta.normalisation, len(meta.input_shape)).eval()
    example = torch.zeros(2, *meta.input_shape)
    try:
        program = torch.onnx.export(
            wrapper,
            (example,),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
        return program.model_proto
    except Exception as exc:  # noqa: BLE001 - the exporter's failures have many types
        first = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        raise ExportError(
            f"{model_file}: ONNX cannot express network {meta.model!r} ({first})"
        ) from None


def _int8_layers(deployed: DeployedModel) -> dict[str, tuple[np.ndarray, np.float32, np.ndarray]]:
    """Weight key -> (int8 levels shaped like the weight, float32 scale, the weight) where the
    levels fit int8."""
    chosen = {}
    for stream in deployed.packed.streams:
        if stream.coding != "uniform" or stream.encoding == "raw":
            continue
        weight = deployed.packed.state[stream.key].numpy()
        bits = weight.reshape(-1).view(np.uint32)
        bits = np.where(weight.reshape(-1) == 0, np.uint32(0), bits)
        distinct = distinct_values(bits)
        found = uniform_levels(distinct.view(np.float32))
        if found is None:
            continue
        scale, levels = found
        per_entry = levels[np.searchsorted(distinct, bits)]
        if per_entry.min() >= -128 and per_entry.max() <= 127:
            q = per_entry.astype(np.int8).reshape(weight.shape)
            chosen[stream.key] = (q, np.uint32(scale).view(np.float32), weight)
    return chosen


def _to_qdq(
    proto, chosen: dict[str, tuple[np.ndarray, np.float32, np.ndarray]]
) -> tuple[list[str], list[str]]:
    """Replace each chosen weight's initializer by int8 levels and a scale, dequantized by
    DequantizeLinear (by Cast and Mul where a MatMul takes it); returns the keys done and,
    of those, the ones through Cast and Mul."""
    from onnx import numpy_helper

    graph, done, cast, nodes = proto.graph, [], [], []
    by_name = {init.name: init for init in graph.initializer}
    matmul = {n.input[1] for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1}
    for key, (levels, scale, weight) in chosen.items():
        init, transposed = _initializer(by_name, matmul, key, weight)
        if init is None:
            continue
        name = init.name
        del by_name[name]
        graph.initializer.remove(init)
        graph.initializer.extend(
            [
                numpy_helper.from_array(
                    levels.T.copy() if transposed else levels, f"{name}_levels"
                ),
                numpy_helper.from_array(np.array(scale, dtype=np.float32), f"{name}_scale"),
            ]
        )
        nodes += _dequantize(graph, name, transposed)
        done.append(key)
        cast += [key] if transposed else []
    for index, node in enumerate(nodes):
        graph.node.insert(index, node)
    return done, cast


def _dequantize(graph, name: str, cast: bool) -> list:
    """The nodes that turn ``<name>_levels`` and ``<name>_scale`` into ``name``."""
    from onnx import TensorProto, helper, numpy_helper

    levels, scale = f"{name}_levels", f"{name}_scale"
    if cast:
        return [
            helper.make_node("Cast", [levels], [f"{name}_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{name}_float", scale], [name], name=f"dq_{name}"),
        ]
    graph.initializer.append(numpy_helper.from_array(np.array(0, dtype=np.int8), f"{name}_zero"))
    inputs = [levels, scale, f"{name}_zero"]
    return [helper.make_node("DequantizeLinear", inputs, [name], name=f"dq_{name}")]


def _initializer(by_name: dict, matmul: set[str], key: str, weight: np.ndarray) -> tuple:
    """``(initializer, transposed)`` holding ``key``'s weight: the one named after it, else a
    constant a MatMul takes that equals the weight transposed (a Linear on a 3-D input)."""
    from onnx import numpy_helper

    init = by_name.get(_PREFIX + key)
    if init is not None and numpy_helper.to_array(init).shape == weight.shape:
        return init, False
    if weight.ndim != 2:
        return None, False
    for name in matmul & by_name.keys():
        if np.array_equal(numpy_helper.to_array(by_name[name]), weight.T):
            return by_name[name], True
    return None, False
