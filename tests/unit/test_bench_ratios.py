"""The proxy benchmark's goal ratios: paired rep by rep, the verdict on their median, the range shown."""

from __future__ import annotations

from bench.proxy.report_costs import paired, ratio_goal


def test_ratios_are_taken_within_each_rep() -> None:
    # The machine slows down in rep 2 for both targets alike: the per-rep ratio stays put, a ratio of the two
    # medians would not.
    ours, theirs = [10.0, 20.0, 11.0], [10.0, 20.0, 10.0]
    assert paired(ours, theirs) == [1.0, 1.0, 1.1]
    assert paired([5.0, 6.0], [0.0, 3.0]) == [2.0]  # a rep without a baseline figure is left out


def test_the_goal_reads_the_median_and_shows_the_range() -> None:
    assert ratio_goal([0.9, 1.2, 0.95], 1.0) == ("0.95 [0.90-1.20]x", True)
    assert ratio_goal([1.05, 0.98, 1.1], 1.0) == ("1.05 [0.98-1.10]x", False)
    assert ratio_goal([0.86], 0.5) == ("0.86x", False)
    assert ratio_goal([], 1.0) == ("-", False)
