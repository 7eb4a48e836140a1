"""admmsearch: per-layer joint pruning and quantization of neural networks by ADMM, searched
with Optuna and tracked in MLflow.

The public API is importable from here; each name loads its module on first use (PEP 562), so
``import admmsearch`` costs nothing until a name is used (torch, Optuna and MLflow load then)::

    >>> import admmsearch
    >>> plan = admmsearch.Plan.uniform(["fc1", "fc2"], keep=0.1, bits=4)
    >>> plan.layers["fc1"].keep, plan.layers["fc1"].bits
    (0.1, 4)

The names by what they are about:

- plan: :class:`Plan`, :class:`LayerPlan`, :data:`PLAN_VERSION`
- pipeline: :func:`run_pipeline`, :class:`PipelineHooks`, :class:`PipelineResult`,
  :class:`StageResult`; one verb for a whole compression: :func:`compress` (from a
  :class:`FromSettings` file or a :class:`FromModel` description) -> :class:`Compressed`
- settings (no torch): :class:`PipelineSettings`, :class:`CompressionSettings`,
  :class:`TrainSettings`, :class:`AdmmSettings`, :class:`RhoSchedule`,
  :class:`QuantRetrainSettings`, :class:`TrainingHooks`
- constraints: :class:`Constraint` and the sets :class:`Sparsity`, :class:`StructuredSparsity`,
  :class:`UniformQuantization`, :class:`Clustering`, :class:`SparseQuantization`,
  :class:`OnSupport`, :class:`FixedLevels`
- data and models: :func:`load_dataset`, :class:`DataSplits`, :data:`DATASETS`,
  :func:`create_model`, :func:`compressible_layers`, :func:`uncompressed_layers`, :data:`MODELS`
- storage: :func:`model_storage`, :func:`layer_storage`, :class:`StorageReport`,
  :class:`LayerStorage`
- packing and deployment: :func:`pack_model`, :func:`encode_model`, :func:`read_model_file`,
  :class:`ModelMeta`, :class:`PackInfo`, :func:`load_model`, :class:`DeployedModel`
- studies: :func:`load_study`, :func:`validate_study`, :class:`StudyConfig`, :func:`prepare`,
  :func:`run_study`, :class:`StudyContext`, :func:`open_existing`, :class:`OpenedStudy`,
  :func:`front_table`, :func:`write_front`, :func:`choose_trial`, :func:`read_settings`,
  :func:`read_plan`, :func:`reproduce`
- errors: :class:`AdmmSearchError` and its subclasses, :class:`AdmmSearchWarning`
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("admmsearch")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

#: Each public name and the module (under ``admmsearch``) that defines it.
_EXPORTS = {
    **dict.fromkeys(("PLAN_VERSION", "LayerPlan", "Plan"), "plan"),
    **dict.fromkeys(
        ("PipelineHooks", "PipelineResult", "StageResult", "run_pipeline"), "pipeline"
    ),
    **dict.fromkeys(
        (
            "AdmmSettings",
            "CompressionSettings",
            "PipelineSettings",
            "QuantRetrainSettings",
            "RhoSchedule",
            "TrainSettings",
            "TrainingHooks",
        ),
        "settings",
    ),
    **dict.fromkeys(
        (
            "Clustering",
            "Constraint",
            "FixedLevels",
            "OnSupport",
            "SparseQuantization",
            "Sparsity",
            "StructuredSparsity",
            "UniformQuantization",
        ),
        "constraints",
    ),
    **dict.fromkeys(("DATASETS", "DataSplits", "load_dataset"), "data"),
    **dict.fromkeys(
        ("MODELS", "compressible_layers", "create_model", "uncompressed_layers"), "models"
    ),
    **dict.fromkeys(
        ("LayerStorage", "StorageReport", "layer_storage", "model_storage"), "storage"
    ),
    **dict.fromkeys(
        ("ModelMeta", "PackInfo", "encode_model", "pack_model", "read_model_file"), "packing"
    ),
    **dict.fromkeys(("DeployedModel", "load_model"), "predict"),
    **dict.fromkeys(("StudyConfig", "load_study", "validate_study"), "config"),
    **dict.fromkeys(("StudyContext", "prepare", "run_study"), "study"),
    **dict.fromkeys(("OpenedStudy", "open_existing"), "catalog"),
    **dict.fromkeys(("front_table", "write_front"), "front"),
    **dict.fromkeys(("choose_trial", "read_settings"), "export"),
    **dict.fromkeys(
        ("Compressed", "FromModel", "FromSettings", "compress", "read_plan", "reproduce"),
        "compression",
    ),
    **dict.fromkeys(
        (
            "AdmmSearchError",
            "AdmmSearchWarning",
            "ConfigError",
            "ConstraintError",
            "DatasetError",
            "DivergenceError",
            "ExportError",
            "LayerError",
            "NoTrialError",
            "PackError",
            "RegistryError",
            "StoreError",
            "StudyNotFoundError",
            "TrackingError",
            "UIError",
            "UserCodeError",
        ),
        "errors",
    ),
}

__all__ = [
    "__version__",
    "DATASETS",
    "MODELS",
    "PLAN_VERSION",
    "AdmmSearchError",
    "AdmmSearchWarning",
    "AdmmSettings",
    "Clustering",
    "Compressed",
    "CompressionSettings",
    "ConfigError",
    "Constraint",
    "ConstraintError",
    "DataSplits",
    "DatasetError",
    "DeployedModel",
    "DivergenceError",
    "ExportError",
    "FixedLevels",
    "FromModel",
    "FromSettings",
    "LayerError",
    "LayerPlan",
    "LayerStorage",
    "ModelMeta",
    "NoTrialError",
    "OnSupport",
    "OpenedStudy",
    "PackError",
    "PackInfo",
    "PipelineHooks",
    "PipelineResult",
    "PipelineSettings",
    "Plan",
    "QuantRetrainSettings",
    "RegistryError",
    "RhoSchedule",
    "SparseQuantization",
    "Sparsity",
    "StageResult",
    "StorageReport",
    "StoreError",
    "StructuredSparsity",
    "StudyConfig",
    "StudyContext",
    "StudyNotFoundError",
    "TrackingError",
    "TrainSettings",
    "TrainingHooks",
    "UIError",
    "UniformQuantization",
    "UserCodeError",
    "choose_trial",
    "compress",
    "compressible_layers",
    "create_model",
    "encode_model",
    "front_table",
    "layer_storage",
    "load_dataset",
    "load_model",
    "load_study",
    "model_storage",
    "open_existing",
    "pack_model",
    "prepare",
    "read_model_file",
    "read_plan",
    "read_settings",
    "reproduce",
    "run_pipeline",
    "run_study",
    "uncompressed_layers",
    "validate_study",
    "write_front",
]


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'admmsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see; nothing is imported at run time
    from .catalog import OpenedStudy, open_existing
    from .compression import Compressed, FromModel, FromSettings, compress, read_plan, reproduce
    from .config import StudyConfig, load_study, validate_study
    from .constraints import (
        Clustering,
        Constraint,
        FixedLevels,
        OnSupport,
        SparseQuantization,
        Sparsity,
        StructuredSparsity,
        UniformQuantization,
    )
    from .data import DATASETS, DataSplits, load_dataset
    from .errors import (
        AdmmSearchError,
        AdmmSearchWarning,
        ConfigError,
        ConstraintError,
        DatasetError,
        DivergenceError,
        ExportError,
        LayerError,
        NoTrialError,
        PackError,
        RegistryError,
        StoreError,
        StudyNotFoundError,
        TrackingError,
        UIError,
        UserCodeError,
    )
    from .export import choose_trial, read_settings
    from .front import front_table, write_front
    from .models import MODELS, compressible_layers, create_model, uncompressed_layers
    from .packing import ModelMeta, PackInfo, encode_model, pack_model, read_model_file
    from .pipeline import PipelineHooks, PipelineResult, StageResult, run_pipeline
    from .plan import PLAN_VERSION, LayerPlan, Plan
    from .predict import DeployedModel, load_model
    from .settings import (
        AdmmSettings,
        CompressionSettings,
        PipelineSettings,
        QuantRetrainSettings,
        RhoSchedule,
        TrainingHooks,
        TrainSettings,
    )
    from .storage import LayerStorage, StorageReport, layer_storage, model_storage
    from .study import StudyContext, prepare, run_study
