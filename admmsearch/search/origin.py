"""Where a trial's settings came from: its origin, read from the user attributes the study
gave it when it queued or promoted it (:class:`~admmsearch.record.TrialAttr`).

==============  ================================================================
``enqueued``    the study file's ``enqueue`` (known-good settings, run first)
``prior``       a zero-cost allocation prior (:mod:`admmsearch.search.priors`)
``seeded``      the sensitivity pass's allocation (:mod:`admmsearch.search.seeding`)
``retry``       the settings of a trial that was lost or interrupted, run again
``promoted``    a lower rung's trial continued with more training (successive halving)
``sampled``     drawn by the study's sampler
==============  ================================================================

Example:
    >>> trial_origin({"rung": 1, "continues": 4}), trial_origin({})
    ('promoted', 'sampled')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..record import TrialAttr

__all__ = ["ORIGINS", "trial_origin"]

#: Every origin :func:`trial_origin` gives.
ORIGINS = ("enqueued", "prior", "seeded", "retry", "promoted", "sampled")


def trial_origin(attrs: Mapping[str, Any]) -> str:
    """The origin of a trial with user attributes ``attrs``, one of :data:`ORIGINS`: the
    first of prior, seeded, retry, promoted and enqueued that it is marked as (a retry of a
    promotion is a retry), else sampled."""
    for key, origin in (
        (TrialAttr.PRIOR, "prior"),
        (TrialAttr.SEEDED, "seeded"),
        (TrialAttr.RETRY_OF, "retry"),
        (TrialAttr.CONTINUES, "promoted"),
        (TrialAttr.ENQUEUED, "enqueued"),
    ):
        if key in attrs:
            return origin
    return "sampled"
