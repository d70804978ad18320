"""Semesters on a real lab: the banner's last days, an expired login refused, `expire` [--dry-run]."""

from __future__ import annotations

import datetime
import os
import pwd
import time
from collections.abc import Iterator

import pexpect
import pytest

from gpushell.core.lending import Loan, LoanBook
from gpushell.core.paths import Paths
from gpushell.system import loanstore

from .lab import Lab, Student
from .test_login import login

CONTACT = "Dr. Rossi, room 3.14, rossi@lab.example"


def day(offset: int) -> str:
    return (datetime.date.today() + datetime.timedelta(days=offset)).isoformat()


def set_expires(lab: Lab, student: Student, value: str) -> None:
    """The student's expires: written straight into the registry (as an admin's editor would)."""
    lines = [line for line in lab.read_registry().splitlines() if not line.strip().startswith("expires:")]
    at = next(index for index, line in enumerate(lines) if line.strip() == f"{student.name}:")
    lines.insert(at + 1, f"    expires: {value}")
    lab.write_registry("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def semester(lab: Lab) -> Iterator[Student]:
    """A student added with --expires in five days, in a lab with a contact."""
    with lab.setting_added(f"contact: '{CONTACT}'\n"):
        student = lab.add_student("exp", "--expires", day(5))
        try:
            yield student
        finally:
            lab.admin("remove", student.name, "--purge", check=False)


def test_the_banner_names_the_day_in_the_last_days(lab: Lab, semester: Student) -> None:
    child = login(lab, semester)
    assert f"Your account expires on {day(5)} (in 5 days)" in child.before
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    listed = lab.admin("list").stdout
    assert f"{day(5)} (in 5 days)" in listed
    assert (
        f"{semester.name}'s account expires on {day(5)} (in 5 days)"
        in lab.admin("doctor", check=False).stdout
    )


def test_set_expires_to_a_day_begun_stops_the_container_and_never_clears_it(
    lab: Lab, semester: Student
) -> None:
    assert lab.ssh(semester, "start").returncode == 0
    changed = lab.admin("set", semester.name, f"expires={day(0)}")
    assert f"expires {day(5)} -> {day(0)}: expired now" in changed.stdout
    assert lab.state(semester) == "STOPPED"
    cleared = lab.admin("set", semester.name, "expires=never")
    assert "the account no longer expires" in cleared.stdout
    assert "expires:" not in lab.read_registry()
    assert lab.ssh(semester, "start").returncode == 0


def test_an_expired_login_is_refused_with_the_day_and_the_container_stopped(
    lab: Lab, semester: Student
) -> None:
    assert lab.ssh(semester, "start").returncode == 0
    assert lab.state(semester) == "RUNNING"
    set_expires(lab, semester, day(-1))
    for command in ((), ("start",), ("status",)):
        refused = lab.ssh(semester, *command)
        assert refused.returncode == 1, refused
        assert f"your account expired on {day(-1)}; ask {CONTACT}" in refused.stderr
        assert "Welcome" not in refused.stdout
    assert lab.state(semester) == "STOPPED"
    assert len(lab.rules_for(semester.name)) == 1  # nothing else changed: the forward stays


def test_expire_dry_run_changes_nothing_and_within_the_grace_keeps(lab: Lab, semester: Student) -> None:
    set_expires(lab, semester, day(-1))  # within the 30 days of grace
    kept = lab.admin("expire")
    assert f"kept {semester.name}: expired on {day(-1)}" in kept.stdout
    set_expires(lab, semester, day(-40))
    before = lab.read_registry()
    result = lab.admin("expire", "--dry-run", "--archive", f"{lab.root}/archive")
    assert f"would remove {semester.name} (expired on {day(-40)}" in result.stdout
    assert lab.read_registry() == before
    assert pwd.getpwnam(semester.name)
    assert os.path.isdir(f"{lab.lxcpath}/{semester.container}")
    assert len(lab.rules_for(semester.name)) == 1
    assert not os.path.exists(f"{lab.root}/archive")


def test_expire_archives_then_removes_account_container_forward_and_loan(lab: Lab, semester: Student) -> None:
    set_expires(lab, semester, day(-40))
    paths = Paths(**lab.paths)
    now = time.time()
    loanstore.update(
        paths, lambda book: (LoanBook([*book.loans, Loan(semester.name, 5, now, now + 3600)]), None)
    )
    archive = f"{lab.root}/archive"
    result = lab.admin("expire", "--archive", archive)
    assert result.returncode == 0, result.stderr
    assert f"removed {semester.name} (expired on {day(-40)})" in result.stdout
    assert "1 GPU loan dropped" in result.stdout
    tarballs = [name for name in os.listdir(archive) if name.startswith(f"{semester.name}-")]
    assert len(tarballs) == 1 and tarballs[0].endswith(".tar")
    assert os.path.getsize(f"{archive}/{tarballs[0]}") > 1024 * 1024
    with pytest.raises(KeyError):
        pwd.getpwnam(semester.name)
    assert not os.path.exists(f"{lab.lxcpath}/{semester.container}")
    assert lab.rules_for(semester.name) == []
    assert f"  {semester.name}:" not in lab.read_registry()
    assert loanstore.read(paths).of(semester.name) == ()
    assert lab.admin("expire").stdout.strip() == "no student's account has expired"
