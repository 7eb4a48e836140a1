"""`check` says how a study will spend its budget before any training: its first trials (the
file's enqueue, the allocation priors, the sensitivity seeds), the sampler's random start-up and,
with rungs, the settings screened and what each rung adds."""

from __future__ import annotations

from admmsearch.config import validate_study
from admmsearch.search.check import schedule_facts

PIPELINE = {
    "admm_prune": {"train": {"epochs": 2}},
    "retrain": {"epochs": 4},
    "admm_quantize": None,
    "quant_retrain": None,
}


def _knee_with_rungs(tiny_study, epochs: int, pipeline=PIPELINE, timeout_s=None, **changes):
    """A study of ``pipeline`` with knee-placed global and LAMP priors on 4 targets and rungs
    {eta: 2, count: 2}, within ``epochs`` (and ``timeout_s``)."""
    return tiny_study(
        budget={"epochs": epochs, "timeout_s": timeout_s},
        pipeline=pipeline,
        search={
            "keep": {"low": 0.1, "high": 1.0},
            "bits": None,
            "priors": {"families": ["global", "lamp"], "targets": 4},
            "rungs": {"eta": 2, "count": 2},
        },
        enqueue=[],
        **changes,
    )


def test_check_states_the_priors_the_start_up_and_the_rungs(tiny_study) -> None:
    # Rung 0 trains 1 ADMM + 2 retraining epochs (3), rung 1 adds 2: 20 epochs buy
    # floor(20 / (3 + 2 / 2)) = 5 screens, of which knee-placed priors take all but a third
    # (5 - 1 = 4); the budget buys 20 // 6 = 3 trials of the pipeline as written, so TPE is
    # guided after 2 (its least).
    path = _knee_with_rungs(tiny_study, 20, sampler={"name": "tpe"})
    facts = schedule_facts(*validate_study(path))
    assert facts["first trials"].startswith(
        "up to 4 allocation priors (global, lamp) at 4 storage targets"
    )
    assert "the knee" in facts["first trials"] and "sensitivity" not in facts["first trials"]
    assert facts["then"] == (
        "the tpe sampler, at random until 2 trials have finished, the first trials among them"
    )
    assert facts["rungs"] == (
        "2 (eta 2): about 5 settings screened at rung 0 (3 epochs each), all before any "
        "promotion; the best 1/2 of each rung continued (rung 1 adds 2 epochs); the front is "
        "rung 1's"
    )
    # a timeout may stop the run before the promotions: they come as soon as a trial may go up
    timed = _knee_with_rungs(tiny_study, 20, sampler={"name": "tpe"}, timeout_s=600)
    rungs = schedule_facts(*validate_study(timed))["rungs"]
    assert "about 5 settings screened" in rungs
    assert "each promoted as soon as it may go up" in rungs
    # a timeout alone plans no number of screens
    timed = _knee_with_rungs(tiny_study, None, sampler={"name": "tpe"}, timeout_s=600)
    rungs = schedule_facts(*validate_study(timed))["rungs"]
    assert rungs.startswith("2 (eta 2): settings screened at rung 0 (3 epochs each), each ")


def test_a_rung_of_one_epoch_is_said_in_the_singular(tiny_study) -> None:
    # No ADMM epoch and 2 retraining epochs: rung 0 trains 1, rung 1 adds 1.
    pipeline = {**PIPELINE, "admm_prune": {"train": {"epochs": 0}}, "retrain": {"epochs": 2}}
    path = _knee_with_rungs(tiny_study, 20, pipeline=pipeline)
    rungs = schedule_facts(*validate_study(path))["rungs"]
    assert "at rung 0 (1 epoch each)" in rungs and "(rung 1 adds 1 epoch)" in rungs


def test_check_states_seeds_and_grid_priors_and_no_rungs(tiny_study) -> None:
    # 12 trials: grid priors and seeds share half of them (6); 4 priors leave 2 seeds of 3.
    path = tiny_study(
        budget={"trials": 12},
        pipeline=PIPELINE,
        sampler={"name": "random"},
        sensitivity={"keep_points": 3, "budgets": 3},
        search={
            "keep": {"low": 0.1, "high": 1.0},
            "bits": None,
            "priors": {"families": ["global", "erk"], "targets": 2, "placement": "grid"},
        },
        enqueue=[{"keep.conv1": 0.5}],
    )
    facts = schedule_facts(*validate_study(path))
    assert facts["first trials"] == (
        "1 from the study file's enqueue; 4 allocation priors (global, erk) at 2 storage "
        "targets log-spaced over the search space, queued when the study starts; "
        "up to 2 seeded from the sensitivity pass"
    )
    assert facts["then"] == "the random sampler" and "rungs" not in facts


def test_one_prior_is_said_in_the_singular(tiny_study) -> None:
    # 8 epochs buy floor(8 / (3 + 2 / 2)) = 2 screens: one prior, one for the sampler.
    path = _knee_with_rungs(tiny_study, 8)
    facts = schedule_facts(*validate_study(path))
    assert facts["first trials"].startswith("up to 1 allocation prior (global, lamp) at 4 ")


def test_check_given_the_runs_budget_says_what_that_run_would_do(tiny_study, tmp_path) -> None:
    # `run --timeout` promotes at once and `run --epochs` screens what its epochs pay for;
    # check had no such options, so it described the file's budget instead.
    import json

    from click.testing import CliRunner

    from admmsearch.cli import main

    path = _knee_with_rungs(tiny_study, 20, sampler={"name": "tpe"})
    stores = ["--storage", f"sqlite:///{tmp_path / 'o.db'}"]
    stores += ["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    stores += ["--cache-dir", str(tmp_path / "cache"), "--format", "json"]

    def check(*options: str) -> dict:
        result = CliRunner().invoke(main, ["check", str(path), *options, *stores])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    plain = check()
    assert "all before any promotion" in plain["schedule"]["rungs"]
    assert plain["budget"] == {"epochs": 20}
    timed = check("--timeout", "60")
    assert "each promoted as soon as it may go up" in timed["schedule"]["rungs"]
    assert timed["budget"] == {"epochs": 20, "timeout_s": 60.0}
    longer = check("--epochs", "40")
    assert "about 10 settings screened" in longer["schedule"]["rungs"]
    assert longer["epochs"] > plain["epochs"]
    short = CliRunner().invoke(main, ["check", str(path), "--epochs", "2", *stores])
    assert short.exit_code == 2
    assert "--epochs: 2 epochs pay for no top-rung trial" in short.stderr
    # 4 epochs screen one setting (3) but cannot promote it (2 more): no front could exist
    screen_only = CliRunner().invoke(main, ["check", str(path), "--epochs", "4", *stores])
    assert screen_only.exit_code == 2
    assert "a setting screened at rung 0 (3 epochs) and promoted to rung 1 trains 5 in all" in (
        screen_only.stderr
    )
    # a trial budget under one trial a rung: a screen, no promotion
    one = CliRunner().invoke(main, ["check", str(path), "--trials", "1", *stores])
    assert one.exit_code == 2
    assert "--trials: 1 trial pays for no top-rung trial (the front's)" in one.stderr
