"""What one student's container can make the root helper do: bounded output, time and waits.

Container root replaces the programs and files the helper uses (its own
systemctl, FIFOs in place of files) and the helper must neither buffer a
flood, nor hang, nor queue a second action behind a stuck first one.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from gpushell.system import bootslots

from .lab import Lab, Student, sh

SYSTEMCTL = "/usr/bin/systemctl"


def attach(lab: Lab, student: Student, script: str) -> subprocess.CompletedProcess[str]:
    """Run script as the container's root (what a student with sudo inside can do)."""
    return sh(["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--clear-env", "--",
               "/bin/sh", "-c", script], check=False, timeout=60)  # fmt: skip


def started(lab: Lab, student: Student) -> None:
    result = lab.ssh(student, "start")
    assert result.returncode == 0, result.stderr


@pytest.fixture
def planted_systemctl(lab: Lab, student: Student) -> Iterator[None]:
    started(lab, student)
    assert attach(lab, student, f"mv {SYSTEMCTL} {SYSTEMCTL}.real").returncode == 0
    try:
        yield
    finally:
        attach(lab, student, f"mv -f {SYSTEMCTL}.real {SYSTEMCTL}")


def plant_systemctl(lab: Lab, student: Student, body: str) -> None:
    result = attach(lab, student, f"printf '#!/bin/sh\\n{body}\\n' > {SYSTEMCTL} && chmod 755 {SYSTEMCTL}")
    assert result.returncode == 0, result.stderr


def helper_rss_kib(lab: Lab) -> int:
    """The largest resident size, in KiB, of any process answering a request now: a child of the
    lab's resident helper, or a `gpushell-helper keys` run through sudo."""
    server = lab.helper_server.pid if lab.helper_server is not None else -1
    largest = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", "rb") as stream:
                parent = int(stream.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                if parent != server and b"gpushell-helper\0keys" not in stream.read():
                    continue
            with open(f"/proc/{pid}/status") as stream:
                for line in stream:
                    if line.startswith("VmRSS:"):
                        largest = max(largest, int(line.split()[1]))
        except OSError:
            continue
    return largest


@pytest.mark.usefixtures("planted_systemctl")
def test_a_container_flooding_the_helper_costs_it_no_memory(lab: Lab, student: Student) -> None:
    plant_systemctl(lab, student, "head -c 3000000000 /dev/zero; head -c 1000000000 /dev/zero >&2")
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], helper_rss_kib(lab))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    began = time.monotonic()
    result = lab.ssh(student, "keys", timeout=400)
    took = time.monotonic() - began
    done.set()
    watcher.join()
    print(f"keys under a 4 GB flood: {took:.1f} s, helper peak RSS {peak[0]} KiB")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restarted sshd in your container" in result.stdout
    assert 0 < peak[0] < 100 * 1024  # a 4 GB flood went through a helper of tens of MiB
    assert took < 300


@pytest.mark.usefixtures("planted_systemctl")
def test_a_second_action_while_one_runs_is_told_busy(lab: Lab, student: Student) -> None:
    plant_systemctl(lab, student, "sleep 20")
    first: list[subprocess.CompletedProcess[str]] = []
    runner = threading.Thread(target=lambda: first.append(lab.ssh(student, "keys", timeout=200)))
    runner.start()
    time.sleep(3)  # keys holds the lock, waiting on the planted systemctl
    began = time.monotonic()
    second = lab.ssh(student, "stop", timeout=60)
    waited = time.monotonic() - began
    runner.join()
    assert second.returncode != 0
    assert "busy: another action of yours is running" in second.stdout + second.stderr
    assert waited < 15
    assert first[0].returncode == 0, first[0].stdout + first[0].stderr
    assert lab.state(student) == "RUNNING"  # the stop never ran


def test_fifos_planted_for_keys_hang_nothing(lab: Lab, student: Student) -> None:
    started(lab, student)
    home = f"/home/{student.name}"
    planted = attach(
        lab, student,
        f"rm -f {home}/.ssh/authorized_keys && mkfifo {home}/.ssh/authorized_keys"
        " && rm -f /etc/ssh/sshd_config && mkfifo /etc/ssh/sshd_config"
        " && rm -f /etc/ssh/ssh_host_ed25519_key.pub && mkfifo /etc/ssh/ssh_host_ed25519_key.pub",
    )  # fmt: skip
    assert planted.returncode == 0, planted.stderr
    began = time.monotonic()
    result = lab.ssh(student, "keys", timeout=200)
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - began < 60
    assert attach(lab, student, f"test -f {home}/.ssh/authorized_keys").returncode == 0


def test_a_fifo_at_the_host_accounts_authorized_keys_hangs_nothing(lab: Lab, student: Student) -> None:
    import pwd

    started(lab, student)
    home = pwd.getpwnam(student.name).pw_dir
    keys = f"{home}/.ssh/authorized_keys"
    saved = f"{keys}.saved-by-test"
    os.rename(keys, saved)
    os.mkfifo(keys)
    try:
        began = time.monotonic()
        # Over the container's own port: the host sshd needs the (now FIFO) file itself.
        result = sh(["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--", "true"], check=False)
        assert result.returncode == 0
        helper = sh(["sudo", "-n", "-u", student.name, "sudo", "-n", lab.paths["helper"], "keys"],
                    check=False, timeout=120)  # fmt: skip
        assert time.monotonic() - began < 60
        assert "authorized_keys" not in helper.stdout or home not in helper.stdout
    finally:
        os.unlink(keys)
        os.rename(saved, keys)


def disk_figure(status: str) -> float:
    """GiB from the status line's `disk 1.23 GiB (no quota...)`."""
    for part in status.split(", "):
        if part.startswith("disk "):
            return float(part.split()[1])
    raise AssertionError(f"no disk figure in {status!r}")


def test_a_rootfs_full_of_files_keeps_root_counting_it_a_small_share_of_the_time(
    lab: Lab, student: Student
) -> None:
    from gpushell.containers import diskcount

    started(lab, student)
    # 200 000 empty files cost the container nothing, and root's count of its disk 200 000 names.
    planted = attach(lab, student, "mkdir /many && cd /many && seq 200000 | xargs touch")
    assert planted.returncode == 0, planted.stderr
    record = f"{lab.paths['run_dir']}/disk-{student.name}.count"
    first = lab.ssh(student, "status")
    assert first.returncode == 0, first.stdout + first.stderr
    with open(record) as stream:
        count = diskcount.from_record(stream.read())
    assert count is not None and count.complete
    assert os.stat(record).st_mode & 0o777 == 0o600 and os.stat(record).st_uid == 0
    written = os.stat(record).st_mtime_ns
    stands_until = count.counted_at + diskcount.SPACING * count.took
    print(f"root's count of 200 000 planted files took {count.took:.3f} s")
    # A 64 MiB file, then status again at once: the last count stands in; root walked once.
    assert attach(lab, student, "head -c 67108864 /dev/urandom > /big && sync").returncode == 0
    second = lab.ssh(student, "status")
    assert time.time() < stands_until, f"the walk took {count.took:.3f} s: too short a window for this test"
    assert second.returncode == 0, second.stdout + second.stderr
    assert os.stat(record).st_mtime_ns == written
    assert disk_figure(second.stdout) == disk_figure(first.stdout)
    # Once its window has passed, the next look counts again and sees the file.
    assert stands_until - time.time() < 60
    time.sleep(max(0.0, stands_until - time.time()) + 0.5)
    third = lab.ssh(student, "status")
    assert third.returncode == 0, third.stdout + third.stderr
    assert os.stat(record).st_mtime_ns != written
    assert disk_figure(third.stdout) >= disk_figure(first.stdout) + 0.06
    # Removing the student forgets the count.
    lab.admin("remove", student.name)
    assert not os.path.exists(record)


def boot_turns(lab: Lab) -> list[str]:
    """The lock files of the host's boot turns (bootslots.py): one per CPU the helper may use."""
    return [f"{lab.paths['run_dir']}/boot-{number}.lock" for number in range(len(os.sched_getaffinity(0)))]


def turns_held(lab: Lab) -> int:
    held = 0
    for path in boot_turns(lab):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held += 1
        finally:
            os.close(fd)
    return held


def in_background(
    work: Callable[[], subprocess.CompletedProcess[str]],
) -> tuple[threading.Thread, list[subprocess.CompletedProcess[str]]]:
    done: list[subprocess.CompletedProcess[str]] = []
    thread = threading.Thread(target=lambda: done.append(work()))
    thread.start()
    return thread, done


def test_a_start_waits_for_a_boot_turn_and_boots_when_one_comes_back(lab: Lab, student: Student) -> None:
    assert lab.ssh(student, "stop").returncode == 0
    holders = []
    try:
        for path in boot_turns(lab):  # every turn taken, as by as many boots
            holders.append(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            fcntl.flock(holders[-1], fcntl.LOCK_EX)
        login, done = in_background(lambda: lab.ssh(student, "start", timeout=120))
        time.sleep(2)
        assert lab.state(student) == "STOPPED"  # waiting its turn
        os.close(holders.pop())  # one boot is over
        login.join(60)
        assert done and done[0].returncode == 0, done
        assert lab.state(student) == "RUNNING"
    finally:
        for fd in holders:
            os.close(fd)
    assert turns_held(lab) == 0  # given back once its sshd answered


def test_a_boot_whose_sshd_never_answers_gives_its_turn_back(lab: Lab, student: Student) -> None:
    started(lab, student)
    assert attach(lab, student, "systemctl mask ssh.service ssh.socket").returncode == 0
    login, done = None, []
    try:
        assert lab.ssh(student, "stop").returncode == 0
        login, done = in_background(lambda: lab.ssh(student, "start", timeout=120))
        deadline = time.monotonic() + 10
        while turns_held(lab) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert turns_held(lab) == 1  # its boot holds a turn
        time.sleep(bootslots.HOLD + 1)  # the half-second looks at the boot give it back
        assert login.is_alive()  # still waiting for an sshd that never comes
        assert turns_held(lab) == 0
    finally:
        sh(["lxc-stop", "-P", lab.lxcpath, "-n", student.container, "-k"], check=False)
        if login is not None:
            login.join(60)  # "your container stopped while it was starting"
        sh(
            ["lxc-start", "-P", lab.lxcpath, "-n", student.container]
        )  # unmasked by hand: its systemd is booting
        attach(lab, student, "rm -f /etc/systemd/system/ssh.service /etc/systemd/system/ssh.socket")
        sh(["lxc-stop", "-P", lab.lxcpath, "-n", student.container, "-k"])
    assert done and "your container stopped while it was starting" in done[0].stdout + done[0].stderr
    started(lab, student)  # its sshd answers again
