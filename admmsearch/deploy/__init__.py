"""Deployment of a packed model: rebuilt from its file alone to predict, exported to ONNX, or
to C99 for microcontrollers. Implementation modules are private; this module names what is
public."""

from __future__ import annotations

from ._c import CInfo, export_c
from ._onnx import OnnxInfo, export_onnx
from ._predict import DeployedModel, load_model, read_arrays, rebuild

__all__ = [
    "CInfo",
    "DeployedModel",
    "OnnxInfo",
    "export_c",
    "export_onnx",
    "load_model",
    "read_arrays",
    "rebuild",
]
