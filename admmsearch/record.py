"""What a study and its trials record, named once: metric names, user-attribute keys and units.

A finished trial's figures are a flat mapping under :attr:`TrialAttr.METRICS` (the same figures
go to its MLflow run); the keys are :class:`Metric` values, plus per-stage and per-layer figures
named ``<metric>.<stage>`` (:func:`per_stage`) and ``<figure>.<layer>``. The study's dense model
is :class:`DenseFigures` under :attr:`StudyAttr.DENSE`. Sizes are in bits; they are shown in
KiB (:data:`BITS_PER_KIB`).

Every name is a plain ``str`` constant of a namespace class, so it goes into Optuna's user
attributes, MLflow, table columns, JSON and YAML as any string does.

Example:
    >>> kib(8192), Metric.STORAGE_BITS == "storage_bits_with_index"
    (1.0, True)
    >>> per_stage(Metric.VAL_ACCURACY, "retrain")
    'val_accuracy.retrain'
"""

from __future__ import annotations

from typing import Final, TypedDict

__all__ = [
    "BITS_PER_BYTE",
    "BITS_PER_KIB",
    "DenseFigures",
    "Metric",
    "StudyAttr",
    "TrialAttr",
    "kib",
    "per_stage",
]

BITS_PER_BYTE = 8
BITS_PER_KIB = 1024 * BITS_PER_BYTE  # 8192


def kib(bits: float) -> float:
    """``bits`` in KiB (1 KiB = 1024 bytes = 8192 bits)."""
    return bits / BITS_PER_KIB


class Metric:
    """The figures of one compressed model (a trial, or ``compress``).

    Accuracies are top-1 in [0, 1]; drops are dense minus compressed; sizes are bits.
    """

    VAL_ACCURACY: Final = "val_accuracy"
    TEST_ACCURACY: Final = "test_accuracy"
    DENSE_VAL_ACCURACY: Final = "dense_val_accuracy"
    DENSE_TEST_ACCURACY: Final = "dense_test_accuracy"
    ACCURACY_DROP: Final = "accuracy_drop"  # validation
    TEST_ACCURACY_DROP: Final = "test_accuracy_drop"
    #: The packed file's whole size in bits: what is deployed, and the storage objective.
    STORAGE_BITS: Final = "storage_bits_with_index"
    #: The storage accounting's figure: the file without its header and byte padding.
    PAYLOAD_BITS: Final = "payload_bits"
    HEADER_BITS: Final = "header_bits"
    #: The dense float32 model's bits over the packed file's.
    COMPRESSION_RATIO: Final = "compression_ratio_with_index"
    # from the storage report (:meth:`admmsearch.packed._accounting.StorageReport.summary`)
    DATA_BITS: Final = "data_bits"
    STORED_BITS: Final = "stored_bits"
    BIAS_BITS: Final = "bias_bits"
    OTHER_BITS: Final = "other_bits"
    DENSE_WEIGHT_BITS: Final = "dense_weight_bits"
    MODEL_DENSE_BITS: Final = "model_dense_bits"
    MODEL_STORED_BITS: Final = "model_stored_bits"
    WEIGHT_RATIO_NO_INDEX: Final = "weight_ratio_no_index"
    WEIGHT_RATIO_WITH_INDEX: Final = "weight_ratio_with_index"
    WEIGHT_SPARSITY: Final = "weight_sparsity"
    MODEL_RATIO: Final = "model_ratio"
    # per stage, ``<name>.<stage>`` (see :func:`admmsearch.search.objective.convergence_metrics`)
    SECONDS: Final = "seconds"
    PRIMAL_RESIDUAL_FINAL: Final = "primal_residual_final"
    PROJECTION_LOSS: Final = "projection_loss"
    KEPT_EPOCH: Final = "kept_epoch"
    # per layer, ``<name>.<layer>``
    SPARSITY: Final = "sparsity"
    BITS_PER_NONZERO: Final = "bits_per_nonzero"

    @classmethod
    def names(cls) -> frozenset[str]:
        """Every metric name (the part before the first dot of a recorded key)."""
        return frozenset(v for k, v in vars(cls).items() if k.isupper())


def per_stage(metric: str, stage: str) -> str:
    """The name of ``metric`` for one stage (or layer): ``<metric>.<stage>``."""
    return f"{metric}.{stage}"


class TrialAttr:
    """Keys of a trial's Optuna user attributes."""

    METRICS: Final = "metrics"  # the flat figures, {Metric: float}
    MLFLOW_RUN_ID: Final = "mlflow_run_id"
    PACKED_MODEL: Final = "packed_model"  # path of the trial's .admm file
    NORMALISATION: Final = "normalisation"  # the input normalisation, or None
    PRUNING_CACHE_HIT: Final = "pruning_cache_hit"
    FAIL_REASON: Final = "fail_reason"
    INTERRUPTED: Final = "interrupted"  # stopped by something else than its settings: queued again
    WORKER: Final = "worker"  # which process ran it
    SEEDED: Final = "seeded"  # its settings came from the sensitivity allocation
    PRIOR: Final = "prior"  # its settings came from a zero-cost allocation prior (family, target)
    ENQUEUED: Final = "enqueued"  # from the study file's ``enqueue`` (the entry's index)
    RETRY_OF: Final = "retry_of"  # the trial number it repeats
    TIMINGS: Final = "timings"  # seconds per part of the trial (admmsearch.timing), training too
    RUNG: Final = "rung"  # its rung of successive halving (0: the shortest)
    CONTINUES: Final = "continues"  # the lower-rung trial whose model it continues
    EPOCHS: Final = "epochs"  # training epochs it runs: reserved when claimed, actual when done
    #: What a trial queued again (lost, interrupted, errored) keeps of the trial it repeats.
    CARRIED: Final = ("rung", "continues")


class StudyAttr:
    """Keys of a study's Optuna user attributes."""

    CONFIG: Final = "config"  # the resolved study file
    LAYERS: Final = "layers"  # the compressed layers
    DENSE: Final = "dense"  # DenseFigures
    MLFLOW_PARENT_RUN_ID: Final = "mlflow_parent_run_id"
    REQUEUED: Final = "requeued"  # trial numbers already queued again
    FRONT_MODELS_LOGGED: Final = "front_models_logged"
    FRONT_TAGGED: Final = "front_tagged"  # trial numbers whose runs are tagged on the front
    SENSITIVITY: Final = "sensitivity"  # the key of the sensitivity result the seeds came from
    STOPPED_BY_TIMEOUT: Final = "stopped_by_timeout"
    BUDGET: Final = "budget"  # the trial budget of the last run (--trials, else the file's)
    EPOCH_BUDGET: Final = "epoch_budget"  # the epoch budget of the last run (--epochs, else file)
    TOP_RUNG: Final = "top_rung"  # the full-fidelity rung of successive halving (None: no rungs)


class DenseFigures(TypedDict):
    """The study's dense model, as :attr:`StudyAttr.DENSE` records it."""

    val_accuracy: float
    test_accuracy: float
    storage_bits: int  # its packed file, weights uncompressed
