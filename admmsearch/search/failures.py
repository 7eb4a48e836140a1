"""Trials that fail with an error: not counted, and a study stopped when the error repeats.

A trial can end three ways besides completing: pruned, diverged (:class:`DivergenceError`: its
settings are at fault, so it counts) or failed with an error (anything else its pipeline raised:
a bug, a layer the code cannot handle, a resource running out). An error is most often the
same for every trial (a model the pipeline cannot fold, say, fails every trial the same way), so
an errored trial does not count against the budget (its settings are queued again when the
study resumes), and :class:`FailureStreak` stops the study once :data:`SAME_ERRORS` trials in a
row failed with the same one-line error, rather than let it spend its time failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import AdmmSearchError
from ..registry import one_line

__all__ = ["SAME_ERRORS", "FailureStreak", "RepeatedFailure"]

#: Trials in a row failing with the same error after which a worker stops its study.
SAME_ERRORS = 3


class RepeatedFailure(AdmmSearchError):
    """Trials in a row failed with the same error: it does not depend on their settings."""


@dataclass
class FailureStreak:
    """The trials of one worker that failed in a row with the same error."""

    limit: int = SAME_ERRORS
    reason: str | None = None
    trials: list[int] = field(default_factory=list)

    def record(self, number: int, error: BaseException | None) -> None:
        """Note how trial ``number`` ended: ``error`` if it failed with one, else None.

        Raises:
            RepeatedFailure: the last ``limit`` trials failed with this same error; the message
                names them and the error (``--debug`` shows its traceback).
        """
        reason = None if error is None else one_line(error)
        if reason is None or reason != self.reason:
            self.reason, self.trials = reason, []
        if reason is None:
            return
        self.trials.append(number)
        if len(self.trials) >= self.limit:
            numbers = ", ".join(str(n) for n in self.trials)
            raise RepeatedFailure(
                f"trials {numbers} failed with the same error, so it does not depend on their "
                f"settings: {reason}; the study stopped (they do not count, and run again when "
                "it resumes; --debug shows the traceback)"
            ) from error
