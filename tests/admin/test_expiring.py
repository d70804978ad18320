"""Semesters, the admin's side: set/add expires, expire's plan and command, a removed student's loans."""

from __future__ import annotations

import datetime
import os
from types import SimpleNamespace

import pytest

from gpushell.admin import commands, editing, expiring, removal
from gpushell.core import expiry, registry_edit, usersettings
from gpushell.core.errors import ExitStatus, GpushellError
from gpushell.core.lending import Loan, LoanBook, Waiter
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from gpushell.system import loanstore, registry_store

PATH = "/etc/gpushell.yaml"
TEXT = """\
expire_grace: 30d
users:
  alice:
    port: 22001
    ip: 10.0.3.2
    idmap: 1000000
    expires: 2025-06-30   # end of the summer term
  bob:
    port: 22002
    ip: 10.0.3.3
    idmap: 1065536
    expires: 2025-07-20
  carol:
    port: 22003
    ip: 10.0.3.4
    idmap: 1131072
    expires: 2025-08-10
  dave:
    port: 22004
    ip: 10.0.3.5
    idmap: 1196608
"""
REG = parse(TEXT, PATH)


def at(day: expiry.Day, hour: int = 12) -> float:
    return expiry.day_start(day) + hour * 3600


# --- the plan (pure) -----------------------------------------------------------------------


def test_nobody_expired_before_the_first_day() -> None:
    assert expiring.plan(REG, at((2025, 6, 29), 23)) == []


def test_expired_from_midnight_removable_after_the_grace() -> None:
    assert expiring.plan(REG, expiry.day_start((2025, 6, 30))) == [
        expiring.Expired("alice", (2025, 6, 30), expiry.removable_from((2025, 6, 30), 30 * 86400), False)
    ]
    found = expiring.plan(REG, at((2025, 7, 30)))
    assert [(item.name, item.due) for item in found] == [("alice", True), ("bob", False)]
    assert expiring.plan(REG, expiry.removable_from((2025, 6, 30), 30 * 86400) - 1)[0].due is False


def test_a_zero_grace_removes_on_the_day_itself() -> None:
    reg = parse(TEXT.replace("expire_grace: 30d", "expire_grace: 0"), PATH)
    found = expiring.plan(reg, expiry.day_start((2025, 7, 20)))
    assert [(item.name, item.due) for item in found] == [("alice", True), ("bob", True)]


def test_upcoming_within_fourteen_days_soonest_first() -> None:
    assert expiring.upcoming(REG, at((2025, 7, 10))) == [("bob", (2025, 7, 20), 10)]
    assert expiring.upcoming(REG, at((2025, 7, 28))) == [("carol", (2025, 8, 10), 13)]
    assert expiring.upcoming(REG, at((2025, 8, 10))) == []  # carol expired: not upcoming


def test_the_lines_name_the_day_and_what_goes() -> None:
    item = expiring.plan(REG, at((2025, 7, 30)))[0]
    line = expiring.dry_run_line(item, REG, 1, "/srv/archive")
    assert line.startswith("would remove alice (expired on 2025-06-30, grace ended 2025-07-30 ")
    assert line.endswith(
        "container alice and its snapshots, the forward of port 22001, host account, 1 GPU loan; "
        "its rootfs archived to /srv/archive first"
    )
    waiting = expiring.waiting_line(expiring.plan(REG, at((2025, 7, 30)))[1], REG)
    assert waiting.startswith("kept bob: expired on 2025-07-20, removed from 2025-08-19 ")
    assert waiting.endswith("(expire_grace 30d)")


# --- set and add ---------------------------------------------------------------------------


def test_set_expires_and_never() -> None:
    assert usersettings.parse_assignments(["expires=2026-01-31"]) == {"expires": datetime.date(2026, 1, 31)}
    assert usersettings.parse_assignments(["expires=never"]) == {"expires": None}
    text = editing.edit_user(TEXT, "dave", {"expires": datetime.date(2026, 1, 31)})
    assert "    expires: 2026-01-31\n" in text  # unquoted, as an admin writes it
    assert parse(text, PATH).users["dave"].expires == (2026, 1, 31)
    text = editing.edit_user(TEXT, "alice", {"expires": None})
    assert parse(text, PATH).users["alice"].expires is None
    assert "end of the summer term" not in text and text.count("expires:") == 2
    assert editing.edit_user(TEXT, "dave", {"expires": None}) == TEXT  # nothing to remove
    assert usersettings.describe("expires", None) == "expires=never"
    assert usersettings.describe("expires", datetime.date(2026, 1, 31)) == "expires=2026-01-31"


@pytest.mark.parametrize("value", ["2026-02-30", "31.01.2026", "", "tomorrow"])
def test_set_expires_refuses(value: str) -> None:
    with pytest.raises(GpushellError) as raised:
        usersettings.parse_assignments([f"expires={value}"])
    assert raised.value.user_message == f"expires={value}: use a date like 2025-06-30, or never"
    assert raised.value.status == ExitStatus.USAGE


def test_remove_user_key_keeps_the_rest() -> None:
    text = registry_edit.remove_user_key(TEXT, "bob", "expires")
    assert text == TEXT.replace("    expires: 2025-07-20\n", "")
    with pytest.raises(GpushellError):
        registry_edit.remove_user_key(TEXT, "zoe", "expires")


def test_set_says_what_an_expiry_change_does() -> None:
    alice, dave = REG.users["alice"], REG.users["dave"]
    today = (2025, 7, 1)
    assert editing.set_effects(dave, dave.replace(expires=(2025, 9, 1)), False, today) == [
        "expires never -> 2025-09-01: logins refused from 2025-09-01 (the banner says so from 14 days before)"
    ]
    assert editing.set_effects(dave, dave.replace(expires=(2025, 7, 1)), True, today) == [
        "expires never -> 2025-07-01: expired now: every login refused, the container stopped"
    ]
    assert editing.set_effects(alice, alice.replace(expires=None), False, today) == [
        "expires 2025-06-30 -> never: the account no longer expires"
    ]


def test_add_expires_option() -> None:
    parser = commands.build_parser()
    args = parser.parse_args(["add", "eve", "--expires", "9999-12-31"])
    assert args.expires == datetime.date(9999, 12, 31)
    for value in ["2020-01-01", "2025-13-01", "soon"]:
        with pytest.raises(SystemExit):
            parser.parse_args(["add", "eve", "--expires", value])
    assert commands.build_parser().parse_args(["add", "eve"]).expires is None


# --- the expire command, with the removal stood in for -------------------------------------


@pytest.fixture
def admin(monkeypatch, tmp_path):
    removed: list[tuple[str, str | None, bool]] = []
    monkeypatch.setattr(registry_store, "load", lambda paths: REG)
    monkeypatch.setattr(expiring, "now", lambda: at((2025, 7, 30)))
    monkeypatch.setattr(loanstore, "read", lambda paths: LoanBook([Loan("alice", 1, 0.0, 9e9)]))

    def remove(paths, name, archive_dir, purge, warn, still_wanted=None):
        if still_wanted is not None:
            still_wanted(REG, REG.users[name])
        removed.append((name, archive_dir, purge))
        return removal.Removed(
            REG.users[name], f"{archive_dir}/{name}-x.tar" if archive_dir else "", 1, True, True, "rootfs"
        )

    monkeypatch.setattr(removal, "remove_student", remove)
    return removed


def expire(*words: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    args = commands.build_parser().parse_args(["expire", *words])
    return expiring.cmd_expire(Paths(), args, lines.append), lines


def test_expire_dry_run_changes_nothing(admin) -> None:
    status, lines = expire("--dry-run", "--archive", "/srv/archive")
    assert status == ExitStatus.OK and admin == []
    assert lines[0].startswith("would remove alice (expired on 2025-06-30")
    assert lines[0].endswith("1 GPU loan; its rootfs archived to /srv/archive first")
    assert lines[1].startswith("kept bob: expired on 2025-07-20")
    assert len(lines) == 2


def test_expire_removes_only_those_past_their_grace_with_purge(admin) -> None:
    status, lines = expire("--archive", "/srv/archive")
    assert status == ExitStatus.OK
    assert admin == [("alice", "/srv/archive", True)]
    assert lines[0] == (
        "removed alice (expired on 2025-06-30): container alice destroyed, port 22001 freed, "
        "host account deleted, 1 GPU loan dropped; rootfs kept in /srv/archive/alice-x.tar"
    )


def test_a_failed_removal_is_exit_status_one(admin, monkeypatch, capsys) -> None:
    def fail(*args, **kwargs):
        raise GpushellError("cannot create archive directory /srv/archive: Permission denied")

    monkeypatch.setattr(removal, "remove_student", fail)
    status, _lines = expire("--archive", "/srv/archive")
    assert status == ExitStatus.ERROR
    assert "alice not removed: cannot create archive directory" in capsys.readouterr().err


def test_a_student_whose_expiry_moved_meanwhile_is_not_removed(monkeypatch) -> None:
    monkeypatch.setattr(expiring, "now", lambda: at((2025, 7, 30)))
    expiring.still_due(REG, REG.users["alice"])  # due: nothing raised
    moved = REG.users["alice"].replace(expires=(2025, 7, 29))
    with pytest.raises(GpushellError) as raised:
        expiring.still_due(REG, moved)
    assert "no longer past their expiry" in raised.value.user_message


def test_nothing_expired_says_so(monkeypatch) -> None:
    monkeypatch.setattr(registry_store, "load", lambda paths: REG)
    monkeypatch.setattr(expiring, "now", lambda: at((2025, 1, 1)))
    assert expire() == (ExitStatus.OK, ["no student's account has expired"])


# --- the loans of a removed student ----------------------------------------------------------


def test_drop_loans_takes_the_students_loans_and_place_in_line(tmp_path) -> None:
    paths = Paths(run_dir=os.path.join(tmp_path, "run"), state_dir=os.path.join(tmp_path, "state"))
    assert removal.drop_loans(paths, "alice") == 0
    assert not os.path.exists(paths.state_dir)  # a lab that never lent gets no state directory
    book = LoanBook(
        [Loan("alice", 1, 0.0, 9e9), Loan("alice", 2, 0.0, 9e9), Loan("bob", 3, 0.0, 9e9)],
        [Waiter("alice", 1, 3600, 5.0), Waiter("carol", 1, 3600, 6.0)],
    )
    loanstore.update(paths, lambda _old: (book, None))
    assert removal.drop_loans(paths, "alice") == 2
    left = loanstore.read(paths)
    assert [loan.user for loan in left.loans] == ["bob"]
    assert [waiter.user for waiter in left.queue] == ["carol"]
    assert removal.drop_loans(paths, "alice") == 0


def test_remove_command_prints_as_before(monkeypatch, capsys) -> None:
    user = REG.users["alice"]
    monkeypatch.setattr(
        removal, "remove_student", lambda *args, **kwargs: removal.Removed(user, "", 0, False, True, "rootfs")
    )
    args = SimpleNamespace(user="alice", archive=None, purge=False)
    assert commands.cmd_remove(Paths(), args) == ExitStatus.OK
    assert (
        capsys.readouterr().out
        == "removed alice: container alice destroyed, port 22001 freed, host account kept\n"
    )


# --- list, doctor and apply ----------------------------------------------------------------


def test_list_shows_an_expires_column_only_in_a_lab_with_semesters() -> None:
    from gpushell.admin.listing import Row, render_table

    plain = Row("dave", 22004, "10.0.3.5", "dave", "STOPPED", "none")
    assert "EXPIRES" not in render_table([plain])
    rows = [
        Row("alice", 22001, "10.0.3.2", "alice", "STOPPED", "none", expires="2025-06-30", expires_in_days=-3),
        Row("bob", 22002, "10.0.3.3", "bob", "STOPPED", "none", expires="2025-07-20", expires_in_days=1),
        Row("carol", 22003, "10.0.3.4", "carol", "STOPPED", "none", expires="2025-08-10", expires_in_days=22),
        plain,
    ]
    lines = render_table(rows).splitlines()
    assert lines[0].endswith("UPTIME  EXPIRES")
    assert [line.split("  ")[-1].strip() for line in lines[1:]] == [
        "2025-06-30 (expired)", "2025-07-20 (in 1 day)", "2025-08-10", "-"
    ]  # fmt: skip


def test_doctor_names_upcoming_and_expired_accounts() -> None:
    from gpushell.admin import doctor

    facts = SimpleNamespace(now=at((2025, 7, 30)))
    lines = [item.line() for item in doctor.check_expiries(REG, Paths(), facts)]  # type: ignore[arg-type]
    assert lines[0] == "ok: carol's account expires on 2025-08-10 (in 11 days)"
    assert lines[1].startswith(
        "warning: alice's account expired on 2025-06-30 and its grace ended 2025-07-30 "
    )
    assert lines[1].endswith("— gpushell-admin expire [--archive DIR] removes it")
    assert lines[2].startswith("ok: bob's account expired on 2025-07-20; kept until 2025-08-19 ")
    assert len(lines) == 3
    quiet = doctor.check_expiries(REG, Paths(), SimpleNamespace(now=at((2025, 1, 1))))  # type: ignore[arg-type]
    assert [item.line() for item in quiet] == ["ok: no student's account expires within 14 days"]
    assert doctor.check_expiries(parse("users: {}\n", PATH), Paths(), facts) == []  # type: ignore[arg-type]


def test_apply_starts_no_expired_autostart_container(monkeypatch) -> None:
    from gpushell.admin import apply

    text = TEXT.replace("    expires: 2025-06-30   # end of the summer term\n", "    autostart: true\n")
    text = text.replace("    expires: 2025-07-20\n", "    expires: 2025-07-20\n    autostart: true\n")
    reg = parse(text, PATH)
    monkeypatch.setattr(expiry, "today", lambda now=None: (2025, 7, 21))
    from gpushell.core.forward import NatTable

    state = apply.HostState(
        table=NatTable(""), bridge_ready=True, forwarding_on=True,
        configs={"alice": "x", "bob": "x"}, accounts={}, states={"alice": "STOPPED", "bob": "STOPPED"},
    )  # fmt: skip
    changes = apply.plan(reg, Paths(), state).changes
    assert [change.subject for change in changes if change.kind == apply.START] == ["alice"]
