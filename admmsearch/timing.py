"""Where a trial's wall time goes: training steps, and each kind of work around them.

A :class:`Timings` collects seconds per *part* of a trial. The trial's code marks its parts with
``with timings.part("pack"): ...``; code deep in the engine (:func:`admmsearch.train.evaluate`)
reports into whichever :class:`Timings` is :func:`active`, so evaluation is counted wherever it
happens (after a stage, right after a hard projection, once per epoch of a retraining that keeps
its best epoch). The parts of a trial (:data:`PARTS`):

* ``evaluate``: forward passes on the validation and test splits;
* ``codebook``: fitting the quantization levels the ADMM and hard quantization stages use;
* ``accounting``: the storage accounting of the compressed model;
* ``pack``: writing the packed model file;
* ``tracking``: MLflow calls (runs, params, metrics, artifacts) and the trial's records in the
  Optuna storage;
* ``cache``: reading and writing the stage cache;
* ``suggest``: the sampler's suggestions.

The stages' own times (``seconds.<stage>`` metrics) count their training steps alone. On a GPU a
part ends with ``torch.cuda.synchronize`` where it was asked for (``sync=True``), so that work
the device still runs is charged to the part that queued it; the training loop itself is never
synchronised by this module.

>>> t = Timings()
>>> with t.part("pack"):
...     pass
>>> sorted(t.seconds) == ["pack"] and t.seconds["pack"] >= 0
True
"""

from __future__ import annotations

import contextvars
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PARTS", "Timings", "active", "part"]

#: The parts of a trial outside its training steps, in reading order.
PARTS = ("evaluate", "codebook", "accounting", "pack", "tracking", "cache", "suggest")

_ACTIVE: contextvars.ContextVar[Timings | None] = contextvars.ContextVar("timings", default=None)


class Timings:
    """Seconds per part, summed over every time the part ran; ``device`` tells whether parts
    that ask for it synchronise a CUDA device at their end."""

    def __init__(self, device: str = "cpu") -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._cuda = str(device).startswith("cuda")

    @contextmanager
    def part(self, name: str, *, sync: bool = False) -> Iterator[None]:
        """Add the wall time of the block to ``name`` (after a device sync when ``sync``)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if sync and self._cuda:
                import torch

                torch.cuda.synchronize()
            self.seconds[name] += time.perf_counter() - start

    @contextmanager
    def activate(self) -> Iterator[Timings]:
        """Make these the timings :func:`part` reports into, for the block."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def total(self, name: str) -> float:
        return self.seconds.get(name, 0.0)


def active() -> Timings | None:
    """The timings of the trial running in this thread, if any."""
    return _ACTIVE.get()


@contextmanager
def part(name: str, *, sync: bool = False) -> Iterator[None]:
    """:meth:`Timings.part` of the :func:`active` timings; nothing when there are none."""
    timings = _ACTIVE.get()
    if timings is None:
        yield
        return
    with timings.part(name, sync=sync):
        yield
