"""The streak of trials failing with the same error that stops a study."""

from __future__ import annotations

import pytest

from admmsearch.errors import UserCodeError
from admmsearch.search.failures import FailureStreak, RepeatedFailure


def test_the_third_same_error_in_a_row_stops_and_names_the_trials() -> None:
    streak = FailureStreak()
    streak.record(0, RuntimeError("out of memory"))
    streak.record(1, RuntimeError("out of memory"))
    with pytest.raises(RepeatedFailure) as err:
        streak.record(2, RuntimeError("out of memory"))
    assert str(err.value).startswith(
        "trials 0, 1, 2 failed with the same error, so it does not depend on their settings: "
        "RuntimeError: out of memory; the study stopped"
    )
    assert isinstance(err.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    "between",
    [None, RuntimeError("another error"), UserCodeError("out of memory")],
    ids=["a-trial-that-completes", "another-error", "another-type"],
)
def test_anything_else_between_starts_the_count_again(between) -> None:
    streak = FailureStreak()
    for number, error in enumerate(
        [RuntimeError("out of memory")] * 2 + [between] + [RuntimeError("out of memory")] * 2
    ):
        streak.record(number, error)
    assert streak.trials == [3, 4]
