"""Accounts that end: expiry.py's days, the registry's expires/expire_grace/contact, the compiled copy."""

from __future__ import annotations

import datetime
import marshal

import pytest

from gpushell.core import expiry
from gpushell.core.registry import RegistryError, parse
from gpushell.system import registry_cache

PATH = "/etc/gpushell.yaml"
ALICE = "users:\n  alice:\n    port: 22001\n    ip: 10.0.3.2\n    idmap: 1000000\n"


def problems(text: str) -> list[str]:
    with pytest.raises(RegistryError) as info:
        parse(text, PATH)
    return info.value.problems


# --- days, without datetime ----------------------------------------------------------------


@pytest.mark.parametrize(
    "day", [(1970, 1, 1), (2000, 2, 29), (2024, 12, 31), (2025, 3, 1), (2100, 3, 1), (9999, 12, 31)]
)
def test_day_number_counts_as_datetime_does(day: expiry.Day) -> None:
    assert expiry.day_number(day) == (datetime.date(*day) - datetime.date(1970, 1, 1)).days


def test_every_day_of_four_centuries_counts_as_datetime_does() -> None:
    first = datetime.date(1970, 1, 1)
    for offset in range(0, 146097, 7):
        date = first + datetime.timedelta(days=offset)
        assert expiry.day_number((date.year, date.month, date.day)) == offset


@pytest.mark.parametrize(
    ("text", "day"),
    [("2025-06-30", (2025, 6, 30)), ("2024-02-29", (2024, 2, 29)), ("1970-01-01", (1970, 1, 1))],
)
def test_parse_day(text: str, day: expiry.Day) -> None:
    assert expiry.parse_day(text) == day
    assert expiry.day_text(day) == text


@pytest.mark.parametrize(
    "text",
    ["2025-6-30", "2025-06-31", "2023-02-29", "2025-13-01", "2025-00-10", "1969-12-31", "30.06.2025",
     "2025-06-30 ", "\uff12\uff10\uff12\uff15-06-30", "", "never", "2025-06-30T00:00"],
)  # fmt: skip
def test_parse_day_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        expiry.parse_day(text)


def test_expired_from_the_day_itself() -> None:
    day = (2025, 6, 30)
    assert not expiry.is_expired(day, (2025, 6, 29))
    assert expiry.is_expired(day, (2025, 6, 30))
    assert expiry.is_expired(day, (2026, 1, 1))
    assert not expiry.is_expired(None, (9999, 12, 31))


def test_the_banner_names_the_day_in_the_last_fourteen_days() -> None:
    day = (2025, 7, 10)
    assert expiry.days_left(day, (2025, 6, 26)) == 14
    assert expiry.shown_soon(day, (2025, 6, 26))
    assert not expiry.shown_soon(day, (2025, 6, 25))
    assert expiry.shown_soon(day, (2025, 7, 9)) and expiry.days_left(day, (2025, 7, 9)) == 1
    assert not expiry.shown_soon(day, (2025, 7, 10))  # expired: refused, not warned
    assert not expiry.shown_soon(None, (2025, 7, 9))
    assert expiry.soon_text("2025-07-10", 1) == "Your account expires on 2025-07-10 (in 1 day)"
    assert expiry.soon_text("2025-07-10", 3) == "Your account expires on 2025-07-10 (in 3 days)"


def test_today_and_day_start_are_local_time() -> None:
    start = expiry.day_start((2025, 6, 30))
    assert expiry.today(start) == (2025, 6, 30)
    assert expiry.today(start - 1) == (2025, 6, 29)
    assert expiry.removable_from((2025, 6, 30), 3600) == start + 3600
    assert expiry.removable_from((2025, 6, 30), 0) == start


def test_the_expired_message_names_the_day_and_whom_to_ask() -> None:
    assert (
        expiry.expired_message((2025, 6, 30), "Dr. Rossi, room 3.14")
        == "your account expired on 2025-06-30; ask Dr. Rossi, room 3.14"
    )


# --- the registry ---------------------------------------------------------------------------


def test_defaults_no_expiry_thirty_days_grace_and_the_administrator() -> None:
    reg = parse(ALICE, PATH)
    assert reg.users["alice"].expires is None
    assert reg.expire_grace == 30 * 86400
    assert reg.contact == "your administrator"


@pytest.mark.parametrize("written", ["2025-06-30", "'2025-06-30'", '"2025-06-30"'])
def test_expires_unquoted_or_quoted(written: str) -> None:
    reg = parse(ALICE + f"    expires: {written}\n", PATH)
    assert reg.users["alice"].expires == (2025, 6, 30)


def test_grace_and_contact_given() -> None:
    text = "expire_grace: 14d\ncontact: 'Dr. Rossi, room 3.14, rossi@lab.example'\n" + ALICE
    reg = parse(text, PATH)
    assert reg.expire_grace == 14 * 86400
    assert reg.contact == "Dr. Rossi, room 3.14, rossi@lab.example"
    assert parse("expire_grace: 0\n", PATH).expire_grace == 0  # removable on the day itself


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2025-06-31", "users.alice.expires: '2025-06-31' is not a day of the calendar"),
        ("30.06.2025", "users.alice.expires: '30.06.2025' is not a date like 2025-06-30"),
        ("2025-06-30 10:00:00", "users.alice.expires: '2025-06-30 10:00:00' is not a date like"),
        ("20250630", "users.alice.expires: '20250630' is not a date like 2025-06-30"),
        ("[2025, 6, 30]", "users.alice.expires: [2025, 6, 30] is not a date like 2025-06-30"),
        ("never", "users.alice.expires: 'never' is not a date like 2025-06-30"),
    ],
)
def test_expires_validated(value: str, message: str) -> None:
    found = problems(ALICE + f"    expires: {value}\n")
    assert len(found) == 1 and found[0].startswith(f"{PATH}:6: {message}"), found


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("expire_grace: 30", "expire_grace: 30 is not a duration like 30m, 8h or 2d"),
        ("expire_grace: forever", "expire_grace: 'forever' is not a duration"),
        ("expire_grace: 4000d", "expire_grace: '4000d' is longer than 3650d"),
        ("contact: ''", "contact: must be one line of text"),
        ("contact: 42", "contact: must be one line of text"),
        ('contact: "a\\nb"', "contact: must be one line of at most 200 printable characters"),
        (f"contact: {'x' * 201}", "contact: must be one line of at most 200 printable characters"),
        ("contact: see /etc/motd", "contact: must not contain a word starting with /"),
    ],
)
def test_grace_and_contact_validated(setting: str, message: str) -> None:
    found = problems(setting + "\n")
    assert len(found) == 1 and found[0].startswith(f"{PATH}:1: {message}"), found


def test_the_compiled_copy_keeps_a_plain_tuple_and_round_trips() -> None:
    text = "expire_grace: 7d\ncontact: Dr. Rossi\n" + ALICE + "    expires: 2025-06-30\n"
    full = parse(text, PATH)
    plain = registry_cache.to_plain(full)
    marshal.dumps(plain)  # marshal-able: no date objects in it
    reg, user = registry_cache.from_plain(marshal.loads(marshal.dumps(plain)), "alice")
    assert user.expires == (2025, 6, 30) and user == full.users["alice"]
    assert (reg.expire_grace, reg.contact) == (7 * 86400, "Dr. Rossi")
    assert registry_cache.registry_from_plain(plain) == full


# --- GPU loans of an expired student ---------------------------------------------------------


def test_a_tick_revokes_an_expired_students_loans_and_drops_them_from_the_line() -> None:
    from gpushell.core import lending
    from gpushell.core.lending import Loan, LoanBook, Waiter

    text = (
        "lending: {gpus: all, max_per_student: 2}\n" + ALICE + "    expires: 2025-06-30\n"
        "  bob:\n    port: 22002\n    ip: 10.0.3.3\n    idmap: 1065536\n"
    )
    reg = parse(text, PATH)
    before = expiry.day_start((2025, 6, 30)) - 60
    book = LoanBook([Loan("alice", 0, before - 600, before + 86400)], [Waiter("alice", 1, 3600, before)])
    kept = lending.tick(reg, book, before, [0, 1], None)
    assert kept.revoked == () and [loan.user for loan in kept.book.loans] == ["alice", "alice"]
    after = expiry.day_start((2025, 6, 30)) + 60
    book = LoanBook(
        [Loan("alice", 0, after - 600, after + 86400)],
        [Waiter("alice", 1, 3600, after), Waiter("bob", 1, 3600, after)],
    )
    decided = lending.tick(reg, book, after, [0, 1], None)
    assert [(loan.user, loan.gpu) for loan in decided.revoked] == [("alice", 0)]
    assert [waiter.user for waiter in decided.dropped] == ["alice"]
    assert [(loan.user, loan.gpu) for loan in decided.book.loans] == [
        ("bob", 1)
    ]  # bob's turn: GPU 0 ended now
