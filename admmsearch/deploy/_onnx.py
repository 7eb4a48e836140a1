"""ONNX export of a packed model: the compressed network with its exact zeros and levels.

The network is rebuilt from the ``.admm`` file alone (:func:`._predict.load_model`),
the input normalisation it was trained with is put in front of it (``(x - mean) / std``), and
torch's exporter writes the graph: the ONNX model takes raw inputs ``(N, *input_shape)`` and
returns logits. Its weights are the decoded float32 tensors, bit for bit.

With ``int8=True`` every uniformly quantized layer whose integer levels fit int8 is stored as
int8 levels and its one float32 scale, dequantized in the graph (``DequantizeLinear``, the QDQ
form): ``level * scale`` in float32 is exactly the weight, so the predictions do not change.
Layers with learned levels (a codebook), raw values, or levels beyond int8 (8-bit levels on a
pruned layer's odd grid reach 255) stay float32; :class:`OnnxInfo` lists both.
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

    def summary(self) -> str:
        int8 = f"; int8 (QDQ): {', '.join(self.int8_layers)}" if self.int8_layers else ""
        kept = f"; float32: {', '.join(self.float_layers)}" if self.float_layers else ""
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
    meta, out = deployed.meta, Path(out)
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
        proto = program.model_proto
    except Exception as exc:  # noqa: BLE001 - the exporter's failures have many types
        first = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        raise ExportError(
            f"{model_file}: ONNX cannot express network {meta.model!r} ({first})"
        ) from None
    chosen = _int8_layers(deployed) if int8 else {}
    done = _to_qdq(proto, chosen)
    try:
        onnx.save(proto, str(out))
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc}") from None
    coded = [s.key for s in deployed.packed.streams if s.encoding != "raw"]
    return OnnxInfo(out, out.stat().st_size, tuple(done), tuple(k for k in coded if k not in done))


def _int8_layers(deployed: DeployedModel) -> dict[str, tuple[np.ndarray, np.float32]]:
    """Weight key -> (int8 levels shaped like the weight, float32 scale) where levels fit."""
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
            chosen[stream.key] = (q, np.uint32(scale).view(np.float32))
    return chosen


def _to_qdq(proto, chosen: dict[str, tuple[np.ndarray, np.float32]]) -> list[str]:
    """Replace each chosen weight initializer by int8 levels, a scale and DequantizeLinear."""
    from onnx import helper, numpy_helper

    graph, done = proto.graph, []
    by_name = {init.name: init for init in graph.initializer}
    nodes = []
    for key, (levels, scale) in chosen.items():
        init = by_name.get(_PREFIX + key)
        if init is None or numpy_helper.to_array(init).shape != levels.shape:
            continue
        name = init.name
        graph.initializer.remove(init)
        graph.initializer.extend(
            [
                numpy_helper.from_array(levels, f"{name}_levels"),
                numpy_helper.from_array(np.array(scale, dtype=np.float32), f"{name}_scale"),
                numpy_helper.from_array(np.array(0, dtype=np.int8), f"{name}_zero"),
            ]
        )
        inputs = [f"{name}_levels", f"{name}_scale", f"{name}_zero"]
        nodes.append(helper.make_node("DequantizeLinear", inputs, [name], name=f"dq_{name}"))
        done.append(key)
    for index, node in enumerate(nodes):
        graph.node.insert(index, node)
    return done
