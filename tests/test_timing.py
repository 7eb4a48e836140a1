"""Where a trial's time goes: the parts outside training, counted wherever they happen."""

from __future__ import annotations

import math

from admmsearch.models import create_model
from admmsearch.pipeline import run_pipeline
from admmsearch.plan import Plan
from admmsearch.settings import (
    AdmmSettings,
    PipelineSettings,
    QuantRetrainSettings,
    RhoSchedule,
    TrainSettings,
)
from admmsearch.timing import PARTS, Timings, active, part


def test_parts_add_up_and_report_into_the_active_timings() -> None:
    outer, inner = Timings(), Timings()
    with part("pack"):  # no active timings: nothing is recorded, nothing fails
        pass
    with outer.activate():
        assert active() is outer
        with part("pack"):
            pass
        with inner.activate():
            with part("evaluate"):
                pass
        assert active() is outer
        with part("pack"):
            pass
    assert active() is None
    assert set(outer.seconds) == {"pack"} and set(inner.seconds) == {"evaluate"}
    assert outer.total("pack") >= 0 and outer.total("evaluate") == 0.0


def _settings() -> PipelineSettings:
    admm = AdmmSettings(
        train=TrainSettings(epochs=1, lr=0.02, batch_size=64), rho=RhoSchedule(1e-2, 0.1, 4)
    )
    return PipelineSettings(
        pretrain=None,
        admm_prune=admm,
        retrain=TrainSettings(epochs=2, lr=0.01, batch_size=64, keep_best=True),
        admm_quantize=admm,
        quant_retrain=QuantRetrainSettings(
            train=TrainSettings(epochs=1, lr=0.005, batch_size=64), shares=(0.5, 1.0)
        ),
    )


def test_a_pipeline_counts_evaluation_codebooks_and_accounting_outside_its_stages(
    digits, dense_digits
) -> None:
    """Evaluation (after stages, after projections, per epoch of a best-epoch retraining),
    codebook fits and the accounting are parts of their own; test accuracy is measured for
    the dense reference (here given) and the final result only."""
    model = create_model("digits-cnn", num_classes=10, input_shape=(1, 8, 8))
    model.load_state_dict(dense_digits)
    plan = Plan.uniform(["conv1", "conv2", "fc1", "fc2"], keep=0.5, bits=4)
    timings = Timings()
    with timings.activate():
        result = run_pipeline(model, digits, plan, _settings(), dense_accuracy=(0.5, 0.25))
    assert {"evaluate", "codebook", "accounting"} <= set(timings.seconds) <= set(PARTS)
    assert all(seconds > 0 for seconds in timings.seconds.values())
    stages = result.stages
    assert [s.name for s in stages] == [
        "dense",
        "admm_prune",
        "retrain",
        "admm_quantize",
        "quant_retrain",
    ]
    assert (stages[0].val_accuracy, stages[0].test_accuracy) == (0.5, 0.25)  # as given
    assert [s.test_accuracy for s in stages[1:-1]] == [None, None, None]
    assert stages[-1].test_accuracy is not None and 0 <= stages[-1].test_accuracy <= 1
    assert all(s.seconds >= 0 for s in stages)


def test_stage_seconds_count_training_steps_alone(dense_digits, digits, monkeypatch) -> None:
    """On a fake clock where a training forward pass takes 1 s and an evaluation batch 10 s,
    each stage's seconds are exactly its training steps, although best-epoch retraining and the
    hard projection evaluate inside the stage (and no Timings is active: a library call)."""
    import time

    clock = {"now": 0.0}
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])
    model = create_model("digits-cnn", num_classes=10, input_shape=(1, 8, 8))
    model.load_state_dict(dense_digits)
    forward = type(model).forward

    def ticking(self, x):
        clock["now"] += 1.0 if self.training else 10.0
        return forward(self, x)

    monkeypatch.setattr(type(model), "forward", ticking)
    plan = Plan.uniform(["conv1", "conv2", "fc1", "fc2"], keep=0.5)
    settings = _settings().replace(admm_quantize=None, quant_retrain=None)
    result = run_pipeline(model, digits, plan, settings)
    batches = math.ceil(len(digits.y_train) / 64)
    seconds = {s.name: s.seconds for s in result.stages}
    assert seconds == {"dense": 0.0, "admm_prune": 1.0 * batches, "retrain": 2.0 * batches}
    assert active() is None
