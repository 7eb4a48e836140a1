"""Many trials on one device: which device each worker process uses, and its share of it.

The networks admmsearch compresses are small, so one trial leaves a GPU mostly idle: its time
goes to kernel launches and the host, not to arithmetic. Running several trials at once, each in
a worker process of its own, fills the device; the exact budget, heartbeats, tracking and caches
work as for any set of workers (see :mod:`._workers`). ``per_device`` workers share each
device:

* ``cpu``: ``per_device`` processes, the cores split between them;
* ``cuda:K``: ``per_device`` processes on GPU K;
* ``cuda`` (no index): ``per_device`` processes on every visible GPU, assigned in turn.

On a GPU each process may take at most its share of the device's memory
(:func:`share_device`), so one trial cannot starve the others. Where NVIDIA's Multi-Process
Service runs (``nvidia-cuda-mps-control -d``, started by whoever administers the machine), the
processes' kernels run side by side instead of taking turns; admmsearch does not start it.
(The second example needs a second GPU.)

>>> worker_devices("cpu", 3)
['cpu', 'cpu', 'cpu']
>>> worker_devices("cuda:1", 2)  # doctest: +SKIP
['cuda:1', 'cuda:1']
"""

from __future__ import annotations

import os

import torch

from ..errors import ConfigError, quote
from ..preflight import check_device

__all__ = ["MEMORY_HEADROOM", "mps_active", "share_device", "worker_devices"]

#: Share of a GPU's memory left out of the workers' caps (the CUDA context, other processes).
MEMORY_HEADROOM = 0.05


def worker_devices(device: str, per_device: int) -> list[str]:
    """The device of each worker process, ``per_device`` to a device.

    Args:
        device: the study's device: ``cpu``, ``mps``, ``cuda`` (every visible GPU) or ``cuda:K``.
        per_device: worker processes per device, at least 1.

    Raises:
        ConfigError: ``per_device`` is below 1, or the device is not on this machine.
    """
    if isinstance(per_device, bool) or not isinstance(per_device, int) or per_device < 1:
        raise ConfigError(f"per_device: must be an integer >= 1, got {quote(per_device)}")
    check_device(device)
    if device != "cuda":
        return [device] * per_device
    count = torch.cuda.device_count()
    return [f"cuda:{i % count}" for i in range(per_device * count)]


def share_device(device: str, workers: int) -> None:
    """Cap this process's memory on a GPU at its share of ``workers`` processes (no-op on CPU).

    Each of ``workers`` processes on one GPU may allocate at most
    ``(1 - MEMORY_HEADROOM) / workers`` of its memory; past that, torch raises out-of-memory in
    that process alone instead of starving the others.
    """
    if not device.startswith("cuda") or workers <= 1:
        return
    fraction = (1.0 - MEMORY_HEADROOM) / workers
    torch.cuda.set_per_process_memory_fraction(fraction, torch.device(device))


def mps_active() -> bool:
    """Whether this process talks to NVIDIA's Multi-Process Service (its pipe is visible)."""
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    return os.path.exists(os.path.join(pipe, "control"))
