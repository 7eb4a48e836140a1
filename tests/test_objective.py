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


def _stage_end(name: str):
    from admmsearch.pipeline import StageResult

    return StageResult(name, val_accuracy=0.1, test_accuracy=None, seconds=1.0, layers={})


def test_a_failed_trial_is_charged_the_epochs_it_began() -> None:
    """Not the epochs it reserved: the ones it completed, plus the one it failed in unless the
    collapse check stopped it at a stage's end; never more than it reserved."""
    from admmsearch.errors import DivergenceError
    from admmsearch.search.objective import _Tally

    seen: list[tuple[str, int]] = []
    tally = _Tally(lambda stage, epoch, loss: seen.append((stage, epoch)))
    tally.epoch_done("admm_prune", 0, 0.7)
    tally.epoch_done("retrain", 0, 0.4)
    assert seen == [("admm_prune", 0), ("retrain", 0)]
    assert tally.charged({"epochs": 9}) == 3  # failed inside the third epoch

    def collapse(stage) -> None:
        raise DivergenceError(f"accuracy collapsed after stage {stage.name}")

    with pytest.raises(DivergenceError):
        tally.stage_checked(collapse)(_stage_end("retrain"))
    assert tally.charged({"epochs": 9}) == 2  # stopped at the stage's end
    assert tally.charged({"epochs": 1}) == 1  # at most what it reserved
    assert tally.charged({}) == 2
    tally.stage_checked(lambda stage: None)(_stage_end("retrain"))
    assert tally.charged({"epochs": 9}) == 3  # a check that passes: training went on
