"""One trial's figures (admmsearch.search.objective): the convergence metrics of its stages and the
metrics and user attributes a trial records."""

from __future__ import annotations

import pytest

from admmsearch.admm import RhoSchedule
from admmsearch.metrics import convergence_metrics
from admmsearch.pipeline import AdmmSettings, run_pipeline
from admmsearch.plan import Plan
from admmsearch.train import TrainSettings, evaluate

LAYERS = ("conv1", "conv2", "fc1", "fc2")


def test_a_retraining_stage_reports_its_kept_epoch_and_the_projection_loss(
    digits, dense_copy, prune_only
) -> None:
    admm = AdmmSettings(TrainSettings(epochs=1, lr=0.02, batch_size=32), RhoSchedule(updates=8))
    retrain = TrainSettings(epochs=3, lr=0.02, batch_size=32, keep_best=True)
    model = dense_copy()
    result = run_pipeline(
        model, digits, Plan.uniform(LAYERS, keep=0.05), prune_only(admm, retrain)
    )
    stage = result.stages[2]
    assert stage.name == "retrain" and 1 <= stage.kept_epoch <= 3
    # the accuracy recorded (measured once, when the kept epoch ended) is the model's
    assert stage.val_accuracy == evaluate(model, digits.x_val, digits.y_val)
    m = convergence_metrics(result)
    assert m["kept_epoch.retrain"] == stage.kept_epoch
    assert m["val_accuracy.before_projection.retrain"] == result.stages[1].val_accuracy
    after = m["val_accuracy.after_projection.retrain"]
    assert m["projection_loss.retrain"] == pytest.approx(result.stages[1].val_accuracy - after)
    assert m["primal_residual_final.admm_prune"] == result.stages[1].residuals[-1].primal_total
