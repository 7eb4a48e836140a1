"""The figures of one compression, named once in :mod:`admmsearch.record`: accuracy and its
drop from dense, the packed file's size, the storage accounting and its ratios, and whether
ADMM converged and retraining helped."""

from __future__ import annotations

import math
from typing import Protocol

from .packed import PackInfo
from .pipeline import PipelineResult
from .record import BITS_PER_BYTE, Metric, per_stage

__all__ = ["Reference", "collapsed", "convergence_metrics", "trial_metrics"]


class Reference(Protocol):
    """The dense model's accuracy that drops are measured from (a study's dense model, or a
    pipeline's own dense stage)."""

    val_accuracy: float
    test_accuracy: float | None


def collapsed(accuracy: float, num_classes: int) -> bool:
    """Whether an accuracy is at chance level (at most 1.2 / ``num_classes``) or not finite:
    the sign of a diverged or untrained model."""
    return not math.isfinite(accuracy) or accuracy <= 1.2 / num_classes


def trial_metrics(result: PipelineResult, dense: Reference, packed: PackInfo) -> dict[str, float]:
    """Flat metrics of one finished pipeline (:class:`~admmsearch.record.Metric`): accuracy,
    drop from ``dense`` (the study's dense model, or the pipeline's own dense stage), storage
    and ratios.

    ``storage_bits_with_index`` is the packed file's whole size in bits (what is deployed);
    ``payload_bits`` is the accounting's figure beside it (the file without its header and byte
    padding, ``model_stored_bits``); ``compression_ratio_with_index`` is the dense float32
    model's bits over the file's.
    """
    final = result.final
    file_bits = BITS_PER_BYTE * packed.file_bytes
    metrics = {
        Metric.VAL_ACCURACY: final.val_accuracy,
        Metric.TEST_ACCURACY: final.test_accuracy,
        Metric.DENSE_VAL_ACCURACY: dense.val_accuracy,
        Metric.DENSE_TEST_ACCURACY: dense.test_accuracy,
        Metric.ACCURACY_DROP: dense.val_accuracy - final.val_accuracy,
        Metric.TEST_ACCURACY_DROP: dense.test_accuracy - final.test_accuracy,
        Metric.STORAGE_BITS: file_bits,
        Metric.PAYLOAD_BITS: result.storage.model_stored_bits,
        Metric.HEADER_BITS: BITS_PER_BYTE * packed.header_bytes,
        Metric.COMPRESSION_RATIO: result.storage.model_dense_bits / file_bits,
    }
    metrics.update(result.storage.summary())
    for stage in result.stages:
        metrics[per_stage(Metric.VAL_ACCURACY, stage.name)] = stage.val_accuracy
        if stage.test_accuracy is not None:  # measured after the last stage only
            metrics[per_stage(Metric.TEST_ACCURACY, stage.name)] = stage.test_accuracy
        metrics[per_stage(Metric.SECONDS, stage.name)] = stage.seconds
    metrics.update(convergence_metrics(result))
    for row in result.storage.layers:
        metrics[per_stage(Metric.SPARSITY, row.name)] = row.sparsity
        per_nonzero = (row.stored_bits - row.index_bits) / row.nonzeros
        metrics[per_stage(Metric.BITS_PER_NONZERO, row.name)] = per_nonzero
    return metrics


def convergence_metrics(result: PipelineResult) -> dict[str, float]:
    """Whether ADMM converged and retraining helped, per stage.

    * ``primal_residual_final.<admm stage>``: ||W - Z|| over the layers at the stage's last
      Z/U update; near 0 when the weights reached their constraint sets.
    * ``val_accuracy.before_projection.<stage>`` and ``.after_projection.<stage>`` for a stage
      that starts with a hard projection (``retrain``: the prune; ``quant_retrain``: every
      weight on its levels), and ``projection_loss.<stage>``, before minus after: what the
      projection threw away of what the stage before it (ADMM, if any) reached.
    * ``kept_epoch.<stage>``: the epoch a retraining stage kept (its best on validation).
    """
    out: dict[str, float] = {}
    for before, stage in zip(result.stages, result.stages[1:], strict=False):
        if stage.projected_val_accuracy is not None:
            out[f"{Metric.VAL_ACCURACY}.before_projection.{stage.name}"] = before.val_accuracy
            out[f"{Metric.VAL_ACCURACY}.after_projection.{stage.name}"] = (
                stage.projected_val_accuracy
            )
            out[per_stage(Metric.PROJECTION_LOSS, stage.name)] = (
                before.val_accuracy - stage.projected_val_accuracy
            )
    for stage in result.stages:
        if stage.residuals:
            out[per_stage(Metric.PRIMAL_RESIDUAL_FINAL, stage.name)] = stage.residuals[
                -1
            ].primal_total
        if stage.kept_epoch is not None:
            out[per_stage(Metric.KEPT_EPOCH, stage.name)] = float(stage.kept_epoch)
    return out
