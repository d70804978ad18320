"""durations: `30m`, `8h`, `2d` in, `7h 59m` out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpushell.core.durations import duration_text, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("8h", 8 * 3600),
        ("2d", 2 * 86400),
        ("1h30m", 5400),
        ("1d 12h", 86400 + 12 * 3600),
        (" 45m ", 2700),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
    ],
)
def test_parses_units_and_their_sums(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "90", "m", "1x", "1.5h", "-1h", "1H", "30m1h", "1h1h", "1 h", "1h,30m", "1234567d", "+5m", "٣m"],
)
def test_refuses_anything_else_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration like 30m, 8h or 2d"):
        parse_duration(text)


def test_a_bare_zero_is_never_only_where_allowed() -> None:
    assert parse_duration(0, never=True) == 0
    assert parse_duration("0", never=True) == 0
    for value in (0, "0"):
        with pytest.raises(ValueError):
            parse_duration(value)
    with pytest.raises(ValueError):
        parse_duration(False, never=True)  # YAML's `no` is not a duration
    with pytest.raises(ValueError):
        parse_duration(3600)  # a bare number: seconds or minutes? refused


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-5, "0s"),
        (0.9, "0s"),
        (45, "45s"),
        (60, "1m"),
        (45 * 60 + 59, "45m"),
        (3600, "1h"),
        (8 * 3600 - 1, "7h 59m"),
        (86400, "1d"),
        (2 * 86400 + 3 * 3600 + 59 * 60, "2d 3h"),
        (400 * 86400, "400d"),
    ],
)
def test_text_shows_two_units_rounded_down(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


@given(st.integers(min_value=60, max_value=10**8))
def test_text_reads_back_as_no_more_than_it_was(seconds: int) -> None:
    shown = parse_duration(duration_text(seconds).replace(" ", ""))
    assert shown <= seconds
    assert seconds - shown < 3600 if seconds >= 86400 else seconds - shown < 60
