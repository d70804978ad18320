"""Durations as people write and read them (pure): `30m`, `8h`, `2d`, `1h30m`; `7h 59m`.

Written by the registry (lending's `max_duration`, `idle_return`) and by
students (`borrow 1 8h`, `extend 3 2h`), shown back in the banner and in
messages.  No `re`: the helper may format a loan's time left on a login,
and the login path keeps `re` off (test_login_imports.py).
"""

from __future__ import annotations

UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}  # largest first: the order parts must come in
MAX_DIGITS = 6  # per part: 999999d is far past any sensible loan, and bounds the work
EXAMPLE = "a duration like 30m, 8h or 2d"


def parse_duration(text: object, never: bool = False) -> int:
    """Seconds in `text`: one or more number-and-unit parts, largest unit first (`1d12h`, `1h 30m`).

    Units: d, h, m, s.  A bare `0` means "never" and is accepted only where
    the caller allows it (`never`); other bare numbers are refused, since
    `90` could mean seconds or minutes.  Raises ValueError with a message
    fit for the registry's and the student's errors.
    """
    if never and (text == 0 or text == "0") and not isinstance(text, bool):
        return 0
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not {EXAMPLE}")
    seconds, rest, last = 0, text.strip(), -1
    if not rest:
        raise ValueError(f"{text!r} is not {EXAMPLE}")
    order = list(UNITS)
    while rest:
        digits = 0
        while digits < len(rest) and "0" <= rest[digits] <= "9":
            digits += 1
        unit = rest[digits : digits + 1]
        if not 0 < digits <= MAX_DIGITS or unit not in UNITS or order.index(unit) <= last:
            raise ValueError(f"{text!r} is not {EXAMPLE}")
        last = order.index(unit)
        seconds += int(rest[:digits]) * UNITS[unit]
        rest = rest[digits + 1 :].lstrip(" ")
    return seconds


def duration_text(seconds: float) -> str:
    """A duration for people, its two largest units, rounded down: `2d 3h`, `7h 59m`, `45m`, `30s`.

    Rounded down so that a time left never reads longer than it is; zero
    units are left out (`2d`, `1h`); anything under a second left reads `0s`.
    """
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        parts = [(days, "d"), (hours, "h")]
    elif hours:
        parts = [(hours, "h"), (minutes, "m")]
    else:
        parts = [(minutes, "m")]
    return " ".join(f"{count}{unit}" for count, unit in parts if count)
