"""GPU lending through the real login: `ssh HOST borrow`, `gpus`, `extend`, `return`.

Stand-in device nodes as in test_gpus.py (mknod c 195 N under the lab's
root, the registry's gpu_devices): open() inside the container says what
the devices cgroup allows, ENXIO for a lent GPU (no driver behind it),
ENOENT or EPERM once it is returned.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from gpushell.core.paths import Paths
from gpushell.system import loanstore

from .lab import ENV, Lab, Student
from .test_gpus import open_errno, stand_in_devices
from .test_selfservice import helper_pids

ENOENT, ENXIO, EPERM = "2", "6", "1"
LENDING = "lending: {gpus: all, max_per_student: 2, max_duration: 8h}\n"


@pytest.fixture(scope="module")
def lenders(lab: Lab) -> Iterator[tuple[Student, Student]]:
    """Two running students without GPUs of their own, in a lab that lends its two stand-in GPUs."""
    with stand_in_devices(lab), lab.setting_added(LENDING):
        made: list[Student] = []
        try:
            for suffix in ("lend1", "lend2"):
                made.append(lab.add_student(suffix))
                assert lab.ssh(made[-1], "start").returncode == 0
            yield made[0], made[1]
        finally:
            for student in made:
                lab.ssh(student, "return all")
                lab.admin("remove", student.name, "--purge", check=False)


def book(lab: Lab) -> dict[str, tuple[int, ...]]:
    loans = loanstore.read(Paths(**lab.paths)).loans
    return {
        user: tuple(loan.gpu for loan in loans if loan.user == user) for user in {loan.user for loan in loans}
    }


def test_a_lab_without_lending_refuses_borrow(lab: Lab, student: Student) -> None:
    """First in the module: the lenders fixture turns lending on for the rest."""
    result = lab.ssh(student, "borrow 1")
    assert result.returncode != 0
    assert "does not lend GPUs" in result.stderr


def test_a_borrowed_gpu_appears_in_the_running_container_and_goes_on_return(
    lab: Lab, lenders: tuple[Student, Student]
) -> None:
    first, second = lenders
    result = lab.ssh(first, "borrow 1 2h")
    assert result.returncode == 0, result.stderr
    assert "You have GPU 0 now." in result.stdout
    assert re.search(r"^Borrowed GPU 0: (2h|1h 59m) left$", result.stdout, re.M)  # whole seconds may pass
    assert open_errno(lab, first, "/dev/nvidia0") == ENXIO  # the cgroup lets it through to a missing driver
    assert open_errno(lab, first, "/dev/nvidiactl") == ENXIO
    assert open_errno(lab, second, "/dev/nvidia0") == ENOENT  # the neighbour got nothing
    shown = lab.ssh(first, "gpus")
    assert re.search(r"^Borrowed GPU 0: (2h|1h 59m) left$", shown.stdout, re.M)

    extended = lab.ssh(first, "extend 0 1h")
    assert extended.returncode == 0
    assert re.search(r"^Borrowed GPU 0: (3h|2h 59m) left$", extended.stdout, re.M)

    returned = lab.ssh(first, "return 0")
    assert returned.returncode == 0 and "Returned GPU 0." in returned.stdout
    assert open_errno(lab, first, "/dev/nvidia0") in (ENOENT, EPERM)
    assert open_errno(lab, first, "/dev/nvidiactl") in (ENOENT, EPERM)  # no GPU left: nor its control node
    assert book(lab) == {}


def test_two_students_ask_for_the_last_free_gpu_at_once_and_one_gets_it(
    lab: Lab, lenders: tuple[Student, Student]
) -> None:
    first, second = lenders
    assert lab.ssh(first, "borrow 1").returncode == 0  # GPU 0: GPU 1 is the last one free
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            asked = list(pool.map(lambda s: lab.ssh(s, "borrow 1 30m"), (first, second)))
        won = [result for result in asked if result.returncode == 0]
        lost = [result for result in asked if result.returncode != 0]
        assert len(won) == 1 and len(lost) == 1, [(r.returncode, r.stdout, r.stderr) for r in asked]
        assert "You have GPU 1 now." in won[0].stdout
        assert "none free" in lost[0].stderr
        assert sorted(gpu for gpus in book(lab).values() for gpu in gpus) == [0, 1]
    finally:
        for student in lenders:
            lab.ssh(student, "return all")
    assert book(lab) == {}


def test_a_queued_student_is_told_their_place(lab: Lab, lenders: tuple[Student, Student]) -> None:
    first, second = lenders
    assert lab.ssh(first, "borrow 2").returncode == 0
    try:
        queued = lab.ssh(second, "borrow 1 1h --wait")
        assert queued.returncode == 0, queued.stderr
        assert "Waiting for a GPU: place 1 in line" in queued.stdout
        assert open_errno(lab, second, "/dev/nvidia0") == ENOENT
        refused = lab.ssh(first, "extend 0 1h")
        assert refused.returncode != 0 and "waiting" in refused.stderr  # no extension while someone waits
    finally:
        lab.ssh(second, "return all")  # leaves the line
        lab.ssh(first, "return all")


def test_bad_lending_commands_are_refused_by_the_shell(lab: Lab, lenders: tuple[Student, Student]) -> None:
    first, _ = lenders
    for command in ("borrow 0", "borrow 1 8", "borrow 1 ../../x", "return -1", "extend 0"):
        result = lab.ssh(first, command)
        assert result.returncode == 2 and "usage: " in result.stderr, (command, result.stderr)
    too_long = lab.ssh(first, "borrow 1 9h")
    assert too_long.returncode != 0 and "at most 8h" in too_long.stderr
    assert book(lab) == {}


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.015, 0.03])
def test_a_borrow_killed_midway_leaves_a_loan_apply_completes_or_nothing(
    lab: Lab, lenders: tuple[Student, Student], delay: float
) -> None:
    """kill -9 of the helper at some point of a borrow: the book is written before the device
    is given, so what is left is no loan and no device, or a loan whose device `apply` puts in."""
    first, _ = lenders
    client = subprocess.Popen(
        [*lab.ssh_argv(first), "borrow 1 1h"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    try:
        deadline = time.monotonic() + 60
        pids = helper_pids(lab, "borrow")
        while not pids and client.poll() is None and time.monotonic() < deadline:
            pids = helper_pids(lab, "borrow")
        time.sleep(delay)
        for pid in pids:  # the helper this test's ssh started, by PID
            with contextlib.suppress(ProcessLookupError):  # finished already: a whole borrow
                os.kill(pid, signal.SIGKILL)
        client.wait(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    try:
        lent = book(lab).get(first.name, ())
        seen = open_errno(lab, first, "/dev/nvidia0")
        assert lent or seen in (ENOENT, EPERM), (lent, seen)  # never a device without a loan
        if lent:
            lab.admin("apply")
            assert open_errno(lab, first, "/dev/nvidia0") == ENXIO
    finally:
        assert lab.ssh(first, "return all").returncode == 0
    assert book(lab) == {}
