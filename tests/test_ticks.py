"""Readable ticks on a log axis (search.ticks): 1-2-5 per decade, finer or coarser by range."""

from __future__ import annotations

import pytest

from admmsearch.search.ticks import log_span, log_ticks, tick_label


def test_a_few_decades_get_one_two_five() -> None:
    assert log_ticks(1.0, 100.0) == [1, 2, 5, 10, 20, 50, 100]
    assert log_ticks(0.9, 23.0) == [1, 2, 5, 10, 20]


def test_a_narrow_range_gets_finer_steps_and_a_wide_one_decades() -> None:
    assert log_ticks(2.5, 6.0) == [3, 4, 5]
    assert log_ticks(0.5, 2e6) == [1, 10, 100, 1000, 10_000, 100_000, 1_000_000]
    assert log_ticks(1e-3, 1e20) == [1e-3, 1e0, 1e3, 1e6, 1e9, 1e12, 1e15, 1e18]


def test_labels_read_as_written_and_bad_ranges_are_refused() -> None:
    assert [tick_label(t) for t in (0.05, 1.5, 20.0, 1000.0)] == ["0.05", "1.5", "20", "1,000"]
    with pytest.raises(ValueError, match="positive range"):
        log_ticks(0.0, 10.0)


def test_the_axis_spans_the_round_values_around_its_data() -> None:
    assert log_span(3.2, 150.0, margin=1.0) == (2.0, 200.0)
    assert log_span(1.0, 100.0, margin=1.0) == (1.0, 100.0)
    low, high = log_span(3.1, 4.5)
    assert log_ticks(low, high) == [2, 3, 4, 5]  # a narrow range: finer steps
