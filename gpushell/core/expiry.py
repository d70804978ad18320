"""Accounts that end: a student's `expires:` day, the lab's grace period, what students read (pure).

A day is a (year, month, day) tuple, as the compiled registry copy keeps
it: the helper compares it with `time.localtime()` on every call, without
importing `datetime` (the login path keeps it off).  An account is expired
from 00:00 local time on its day; `gpushell-admin expire` removes it once
the registry's `expire_grace` has passed since then.
"""

from __future__ import annotations

import time

Day = tuple[int, int, int]

WARN_DAYS = 14  # the banner names the day during an account's last 14 days
DEFAULT_CONTACT = "your administrator"
DEFAULT_GRACE = 30 * 86400  # seconds after the day begins before `expire` removes the account
EXAMPLE = "a date like 2025-06-30"
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def valid(day: Day) -> bool:
    """Whether (year, month, day) is a day of the calendar (years 1970-9999)."""
    year, month, number = day
    if not 1970 <= year <= 9999 or not 1 <= month <= 12:
        return False
    last = 29 if month == 2 and _leap(year) else _MONTH_DAYS[month - 1]
    return 1 <= number <= last


def parse_day(text: str) -> Day:
    """`2025-06-30` -> (2025, 6, 30); ValueError for anything else (another form, no such day)."""
    parts = text.split("-") if isinstance(text, str) else []
    if [len(part) for part in parts] != [4, 2, 2] or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not {EXAMPLE}")
    day = (int(parts[0]), int(parts[1]), int(parts[2]))
    if not valid(day):
        raise ValueError(f"{text!r} is not a day of the calendar (1970-01-01 to 9999-12-31)")
    return day


def day_text(day: Day) -> str:
    return f"{day[0]:04d}-{day[1]:02d}-{day[2]:02d}"


def day_number(day: Day) -> int:
    """Days since 1970-01-01 (the proleptic Gregorian calendar's count, without `datetime`)."""
    year, month, number = day
    year -= month <= 2
    era = year // 400
    of_era = year - era * 400
    of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + number - 1
    of_era_days = of_era * 365 + of_era // 4 - of_era // 100 + of_year
    return era * 146097 + of_era_days - 719468


def today(now: float | None = None) -> Day:
    """The local calendar day at `now` (epoch seconds; default: now)."""
    local = time.localtime(now)
    return (local.tm_year, local.tm_mon, local.tm_mday)


def is_expired(expires: Day | None, on: Day) -> bool:
    """Whether an account that expires on `expires` is expired on the day `on` (None: never expires)."""
    return expires is not None and on >= expires


def days_left(expires: Day, on: Day) -> int:
    """Whole days from `on` to the expiry day (1: it expires tomorrow; 0 or less: expired)."""
    return day_number(expires) - day_number(on)


def shown_soon(expires: Day | None, on: Day) -> bool:
    """Whether the banner names the day: within the last WARN_DAYS days before it."""
    return expires is not None and 0 < days_left(expires, on) <= WARN_DAYS


def day_start(day: Day) -> float:
    """Local midnight at the start of `day`, as epoch seconds."""
    return time.mktime((day[0], day[1], day[2], 0, 0, 0, 0, 0, -1))


def removable_from(expires: Day, grace: int) -> float:
    """When `gpushell-admin expire` may remove the account (epoch seconds): its day's start plus the grace."""
    return day_start(expires) + grace


def expired_message(expires: Day, contact: str) -> str:
    """What an expired student reads, whatever they asked for."""
    return f"your account expired on {day_text(expires)}; ask {contact}"


def soon_text(expires_text: str, days: int) -> str:
    """The banner's line during the last days: `Your account expires on 2025-06-30 (in 3 days)`."""
    return f"Your account expires on {expires_text} (in {days} day{'' if days == 1 else 's'})"
