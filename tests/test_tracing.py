"""torch.fx tracing one thread at a time (admmsearch/tracing.py): fx patches every module's
__call__ while it traces, so two threads tracing at once broke each other's trace (CI: racing
workers in one process stopped with 'module is not installed as a submodule')."""

from __future__ import annotations

import threading
import time

import torch
from torch import nn

from admmsearch.fold import conv_bn_pairs
from admmsearch.packed._tracing import trace_graph


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())


def test_every_trace_admmsearch_makes_waits_for_the_one_running(monkeypatch) -> None:
    real, guard = torch.fx.symbolic_trace, threading.Lock()
    inside, most = [0], [0]

    def slow_trace(model, *args, **kwargs):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.05)  # long enough for the other threads to arrive
        try:
            return real(model, *args, **kwargs)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(torch.fx, "symbolic_trace", slow_trace)
    start, errors = threading.Barrier(4), []

    def run(trace) -> None:
        start.wait()
        try:
            trace()
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    jobs = [lambda: conv_bn_pairs(_net()), lambda: trace_graph(_net(), (1, 6, 6), [])] * 2
    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and most[0] == 1


def test_threads_tracing_real_models_at_once_each_get_their_own_graph() -> None:
    results, start = [], threading.Barrier(4)

    def run() -> None:
        start.wait()
        for _ in range(5):
            results.append(conv_bn_pairs(_net()))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(("0", "1"),)] * 20
