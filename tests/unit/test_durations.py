"""The one duration grammar behind every flag and setting that takes a length of time."""

from __future__ import annotations

import pytest

from aigw_proxy.config.durations import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 30.0), ("0.5", 0.5), ("30s", 30.0), ("500ms", 0.5), ("1m30s", 90.0), ("2h", 7200.0),
    ("60d", 60 * 86400.0), ("1d12h", 36 * 3600.0), (" 10S ", 10.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10 s", "1w", "-5", "-1s", "1.5.2s", "nan", "inf", "30s5"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_bare_numbers_and_fractions_can_be_refused() -> None:
    with pytest.raises(ValueError):
        parse_duration("60", bare_seconds=False)
    with pytest.raises(ValueError):
        parse_duration("1.5d", whole=True)
    assert parse_duration("1.5d") == 1.5 * 86400
