"""``torch.fx`` symbolic tracing, one trace at a time in a process.

``torch.fx.symbolic_trace`` patches ``torch.nn.Module.__call__`` (and ``__getattr__``) for
every module in the process while it traces. Two threads tracing at once (racing workers
in one process, as ``tests/test_workers.py`` runs them) each route the other's module calls
into their own tracer, which stops with ``NameError: module is not installed as a
submodule``. Every trace admmsearch makes (BatchNorm folding, the packed file's network
graph) goes through :func:`symbolic_trace`, which holds a process-wide lock.
"""

from __future__ import annotations

import threading

from torch import fx, nn

__all__ = ["symbolic_trace"]

_LOCK = threading.Lock()


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(model)`` while no other thread of this process traces.

    Raises:
        Exception: whatever ``torch.fx.symbolic_trace`` raises on a model it cannot trace.
    """
    with _LOCK:
        return fx.symbolic_trace(model)
