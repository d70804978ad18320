"""GPU lending, the admin side, on a real lab: `gpushell-admin tick`, `loans [revoke]`, `apply`, `report`.

Stand-in device nodes as in test_gpus.py, plus one that opens: GPU 7 is a
node with /dev/net/tun's numbers (10:200), as in test_gpu_live.py, so a
process inside can hold it open the way a CUDA program holds its GPU.
Loans are written into the book directly (loanstore), as a student's
borrow would leave them; what the tick and the other commands then do to
the running container is what is checked.  There is no NVIDIA driver here:
busy figures are unknown and no loan is ever idle.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpushell.core.lending import Loan, LoanBook
from gpushell.core.paths import Paths
from gpushell.system import loanstore

from .lab import ENV, Lab, Student, sh
from .test_gpus import attach, stand_in_devices

ENOENT = "2"
OPENS = (7, 10, 200)  # GPU 7: a stand-in that opens (/dev/net/tun's numbers)
LENDING = "lending: {gpus: [1, 7], max_per_student: 2, max_duration: 8h}\n"
HOLD = 'open(my $f, "<", "/dev/nvidia7") or die "open: $!"; $| = 1; print "held\\n"; sleep 600'


@pytest.fixture(scope="module")
def borrower(lab: Lab) -> Iterator[Student]:
    """A running student without GPUs of their own, in a lab that lends GPUs 1 and 7."""
    with stand_in_devices(lab) as directory:
        gpu, major, minor = OPENS
        node = f"{directory}/nvidia{gpu}"
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        try:
            with lab.setting_added(LENDING):
                student = lab.add_student("tick")
                try:
                    assert lab.ssh(student, "start").returncode == 0
                    yield student
                finally:
                    lab.admin("remove", student.name, "--purge", check=False)
        finally:
            os.unlink(node)


@pytest.fixture
def paths(lab: Lab, borrower: Student) -> Iterator[Paths]:
    """The lab's paths; the book emptied after each test (and the device with it)."""
    found = Paths(**lab.paths)
    yield found
    for loan in loanstore.read(found).loans:
        lab.admin("loans", "revoke", loan.user, str(loan.gpu), check=False)


def lend(paths: Paths, *loans: Loan) -> None:
    loanstore.update(paths, lambda book: (LoanBook([*book.loans, *loans], book.queue), None))


def end_now(paths: Paths, gpu: int) -> None:
    """The loan of gpu ends now, as if its time had run out."""
    now = time.time()

    def change(book: LoanBook) -> tuple[LoanBook, None]:
        ended = [loan.replace(ends=now - 1) if loan.gpu == gpu else loan for loan in book.loans]
        return LoanBook(ended, book.queue), None

    loanstore.update(paths, change)


def opens(lab: Lab, student: Student, path: str) -> str:
    return attach(lab, student, f'open(my $f, "<", "{path}") ? print "opened" : print $!+0')


def hold(lab: Lab, student: Student) -> subprocess.Popen[str]:
    """A process inside with /dev/nvidia7 open, as a CUDA program holds its GPU's node."""
    argv = ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--", "perl", "-e", HOLD]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    return process


def test_tick_ends_an_expired_loan_its_device_and_the_program_holding_it(
    lab: Lab, borrower: Student, paths: Paths
) -> None:
    now = time.time()
    lend(paths, Loan(borrower.name, 7, now - 30, now + 3600))  # a borrow whose helper died before the device
    first = lab.admin("tick")
    assert first.stdout == "" and first.stderr == ""  # a quiet minute: nothing to say
    assert opens(lab, borrower, "/dev/nvidia7") == "opened"  # the young loan got its device
    holder = hold(lab, borrower)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(holder.kill)
        end_now(paths, 7)
        began = time.monotonic()
        ticked = lab.admin("tick")
        assert ticked.stdout == f"expired: {borrower.name}'s loan of GPU 7\n"
        assert holder.wait(timeout=30) == 143  # SIGTERM, within the grace period
        assert time.monotonic() - began < 10
    assert opens(lab, borrower, "/dev/nvidia7") == ENOENT
    assert opens(lab, borrower, "/dev/nvidiactl") == ENOENT  # no GPU left: the shared nodes went too
    assert loanstore.read(paths).loans == ()
    assert not lab.admin("tick").stdout  # nothing left to end


def test_tick_writes_the_status_page_counting_the_loan_and_naming_nobody(
    lab: Lab, borrower: Student, paths: Paths
) -> None:
    now = time.time()
    lend(paths, Loan(borrower.name, 7, now - 30, now + 3600))
    ticked = lab.admin("tick")
    assert ticked.stderr == ""
    assert stat.S_IMODE(os.stat(paths.status_dir).st_mode) == 0o755
    page = json.loads(Path(paths.status_dir, "status.json").read_text())
    gpus = {gpu["gpu"]: gpu for gpu in page["gpus"]}
    assert {1, 7} <= set(gpus)  # stand-in nodes, no driver: listed, with no reading
    assert (gpus[7]["state"], gpus[7]["students"], gpus[7]["reading"]) == ("lent", 1, False)
    assert gpus[1]["state"] == "free" and page["host_figures"]["containers_running"] >= 1
    html = Path(paths.status_dir, "index.html").read_text()
    assert 'id="gpu-7"' in html and "lent to 1 student" in html and borrower.name not in html


def test_doctor_fails_while_no_tick_runs_and_passes_after_one(
    lab: Lab, borrower: Student, paths: Paths
) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{paths.run_dir}/tick.stamp")  # as after a boot with no tick timer enabled
    stopped = lab.admin("doctor", check=False)
    assert stopped.returncode != 0
    assert "FAIL: gpushell-admin tick has not run since boot: GPU loans do not end" in stopped.stdout
    lab.admin("tick")
    ticked = lab.admin("doctor", check=False).stdout
    assert "ok: gpushell-admin tick ran " in ticked and "tick has not run" not in ticked


def test_the_page_is_the_ticks_alone_not_applys(lab: Lab, borrower: Student, paths: Paths) -> None:
    for name in ("index.html", "status.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{paths.status_dir}/{name}")
    applied = lab.admin("apply")
    assert "status page" not in applied.stderr
    assert os.listdir(paths.status_dir) == []  # one writer of the page and its history: the tick
    ticked = lab.admin("tick")
    assert ticked.stderr == ""
    page = json.loads(Path(paths.status_dir, "status.json").read_text())
    assert 7 in {gpu["gpu"] for gpu in page["gpus"]}
    assert stat.S_IMODE(os.stat(f"{paths.status_dir}/index.html").st_mode) == 0o644


def test_loans_shows_the_book_and_revoke_ends_a_loan(lab: Lab, borrower: Student, paths: Paths) -> None:
    now = time.time()
    lend(paths, Loan(borrower.name, 7, now - 45, now + 2 * 3600))  # another start: another loan
    lab.admin("tick")
    assert opens(lab, borrower, "/dev/nvidia7") == "opened"
    table = lab.admin("loans").stdout.splitlines()
    assert table[0].split() == ["USER", "GPU", "STARTED", "ENDS", "LEFT", "WARNED"]
    assert table[1].split()[:2] == [borrower.name, "7"] and table[1].split()[-1] == "no"
    assert table[-1] == "nobody is waiting"
    shown = json.loads(lab.admin("loans", "--json").stdout)
    assert [(item["user"], item["gpu"]) for item in shown["loans"]] == [(borrower.name, 7)]

    revoked = lab.admin("loans", "revoke", borrower.name, "7")
    assert revoked.stdout.startswith(f"revoked: {borrower.name}'s loan of GPU 7")
    assert opens(lab, borrower, "/dev/nvidia7") == ENOENT
    assert loanstore.read(paths).loans == ()
    again = lab.admin("loans", "revoke", borrower.name, "7", check=False)
    assert again.returncode == 2 and f"GPU 7 is not lent to {borrower.name}" in again.stderr


def test_apply_puts_a_lent_gpu_back_after_a_restart_and_drops_an_ended_loan(
    lab: Lab, borrower: Student, paths: Paths
) -> None:
    now = time.time()
    lend(
        paths,
        Loan(borrower.name, 7, now - 3600, now + 3600),  # old enough that a tick does not give it again
        Loan(borrower.name, 1, now - 7200, now - 600),  # ended while the host was "down"
    )
    # Restarted behind gpushell's back (lxc-autostart, an admin's lxc-start): its config names no loan.
    sh(["lxc-stop", "-P", lab.lxcpath, "-n", borrower.container, "-k"])
    sh(["lxc-start", "-P", lab.lxcpath, "-n", borrower.container])
    sh(["lxc-wait", "-P", lab.lxcpath, "-n", borrower.container, "-s", "RUNNING", "-t", "30"])
    assert opens(lab, borrower, "/dev/nvidia7") == ENOENT

    dry = lab.admin("apply", "--dry-run").stdout
    assert f"would drop {borrower.name}'s loan of GPU 1, which ended at" in dry
    applied = lab.admin("apply")
    assert f"done: drop {borrower.name}'s loan of GPU 1, which ended at" in applied.stdout
    assert opens(lab, borrower, "/dev/nvidia7") == "opened"
    assert opens(lab, borrower, "/dev/nvidia1") == ENOENT
    assert [(loan.gpu, loan.last_used >= now) for loan in loanstore.read(paths).loans] == [(7, True)]
    assert f"drop {borrower.name}'s loan" not in lab.admin("apply").stdout  # done once


def test_report_shows_the_students_held_hours_from_the_ticks_samples(lab: Lab, borrower: Student) -> None:
    """The ticks above each sampled the borrower while a loan was held (one minute each)."""
    data = json.loads(lab.admin("report", "--json").stdout)
    (row,) = [row for row in data["students"] if row["user"] == borrower.name]
    # The first sample stands for a minute, each later one for the seconds since the one before.
    assert row["samples"] >= 3 and 1 / 60 <= row["gpu_hours_held"] <= row["samples"] / 60
    assert row["gpu_hours_busy"] is None and row["gpu_hours_unknown"] == row["gpu_hours_held"]  # no NVML here
    assert row["loans"] >= 2
    assert (
        row["cpu_hours"] is not None and row["peak_memory_bytes"] > 2**20
    )  # the container's cgroup was read
    table = lab.admin("report").stdout.splitlines()
    assert any(line.split()[0] == borrower.name and line.split()[2] == "unknown" for line in table[1:])
    csv_lines = lab.admin("report", "--csv", "--since", time.strftime("%Y-%m-%d")).stdout.splitlines()
    assert csv_lines[0].startswith("user,gpu_hours_held,gpu_hours_busy")
    assert any(line.startswith(f"{borrower.name},") and ",unknown," in line for line in csv_lines[1:])
    samples_dir = f"{lab.paths['state_dir']}/samples"
    assert oct(os.stat(samples_dir).st_mode & 0o777) == "0o700"
    assert all(
        oct(os.stat(f"{samples_dir}/{name}").st_mode & 0o777) == "0o600" for name in os.listdir(samples_dir)
    )
