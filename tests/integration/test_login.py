"""A student logs in through a real sshd, from a client namespace, and reaches their container."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
import time

import pexpect
import psutil
import pytest

from gpushell.containers.lxc import LxcDriver
from gpushell.core.paths import Paths
from gpushell.system import nftgen
from gpushell.system.files import read_text_or_none

from .conftest import Syslog
from .lab import Lab, Student, sh

PROMPT = "gpushell>"


def login(lab: Lab, student: Student, term: str = "xterm") -> pexpect.spawn:
    """ssh into the menu on a real pty (ssh -tt), as a student would."""
    child = pexpect.spawn(
        lab.ssh_argv(student, "-tt")[0],
        lab.ssh_argv(student, "-tt")[1:],
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "TERM": term},
        encoding="utf-8",
        timeout=90,
        dimensions=(40, 120),
    )
    child.expect(PROMPT)
    return child


def shell_processes(name: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["username", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["username"] == name and any("gpushell" in part for part in cmdline):
            found.append(proc)
    return found


def wait_gone(name: str, seconds: float = 10) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while (left := shell_processes(name)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_login_starts_container_and_shows_banner_and_menu(lab: Lab, student: Student) -> None:
    assert lab.state(student) == "STOPPED"
    child = login(lab, student)
    banner = child.before
    assert lab.state(student) == "RUNNING"
    assert f"Welcome, {student.name}." in banner
    assert f"ssh -p {student.port} {student.name}@{lab.host_ip}" in banner
    assert f"scp -P {student.port}" in banner and f"sshfs -p {student.port}" in banner
    assert student.ip in banner
    words = ("status", "start", "stop", "restart", "gpus", "snapshot", "snapshots", "restore",
             "delete-snapshot", "rebuild", "keys", "help", "quit")  # fmt: skip
    for number, word in enumerate(words, 1):
        assert f"{number:>2}) {word} " in banner.replace("\x1b[1m", "").replace("\x1b[0m", "")
    # The banner never says ready before the container's sshd answers:
    # connecting now must work at once.
    inside = lab.ssh(student, "hostname", port=student.port)
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.strip() == student.container
    child.sendline("1")
    child.expect(PROMPT)
    assert "running" in child.before and student.ip in child.before
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_cold_start_waits_for_sshd_without_connecting_to_it(lab: Lab, student: Student) -> None:
    """The wait asks the host's kernel whether sshd listens: the booting container's
    sshd serves no connection of gpushell's (each cost it a re-exec and a journal line)."""
    assert lab.state(student) == "STOPPED"
    assert lab.ssh(student, "start").returncode == 0
    inside = lab.ssh(student, "true", port=student.port)  # ready means ready: the student's own connection
    assert inside.returncode == 0, inside.stderr
    journal = sh(["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--clear-env", "--",
                  "journalctl", "--no-pager", "-o", "cat", "_COMM=sshd"]).stdout  # fmt: skip
    assert f"Accepted publickey for {student.name}" in journal  # its log is there to be read
    assert "kex_exchange_identification" not in journal, journal


def test_forwarded_port_lands_in_own_container_as_own_user(lab: Lab, student: Student) -> None:
    assert lab.ssh(student, "start").returncode == 0
    result = lab.ssh(student, "hostname; id -un; sudo -n id -u", port=student.port)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [student.container, student.name, "0"]
    # Container root is nobody on the host: the init runs in the student's range.
    owner = psutil.Process(lab.init_pid(student)).uids().real
    assert owner >= 2000000000


def test_remote_actions_change_the_real_container(lab: Lab, student: Student) -> None:
    driver = LxcDriver(lab.lxcpath)
    assert driver.may_be_running(student.container) is False  # no LXC monitor for a stopped one
    result = lab.ssh(student, "start")
    assert (result.returncode, lab.state(student)) == (0, "RUNNING")
    assert "running" in result.stdout
    assert driver.may_be_running(student.container) is True
    first_init = lab.init_pid(student)

    result = lab.ssh(student, "restart")
    assert (result.returncode, lab.state(student)) == (0, "RUNNING")
    assert lab.init_pid(student) != first_init

    result = lab.ssh(student, "status")
    assert result.returncode == 0
    first, using = result.stdout.split("\n", 1)
    assert first == f"Container {student.container}: running, IP {student.ip}, port {student.port}"
    # measured from the container's cgroup and rootfs; a booted Debian uses some of each
    # against the default limits (8 GiB, 4 CPUs, 4096 processes)
    pattern = (
        r"Using: +CPU time \d+\.\d s \(at most 4 CPUs\), memory [1-9]\d* MiB of 8 GiB, "
        r"processes [1-9]\d* of 4096, disk 0\.[1-9]\d GiB \(no quota\)\n"
    )
    assert re.fullmatch(pattern, using), using

    result = lab.ssh(student, "stop")
    assert (result.returncode, lab.state(student)) == (0, "STOPPED")
    assert "stopped" in result.stdout
    assert driver.may_be_running(student.container) is False

    help_text = lab.ssh(student, "help")
    assert help_text.returncode == 0
    assert f"ssh -p {student.port} -L 8888:localhost:8888" in help_text.stdout
    assert lab.state(student) == "STOPPED"  # help changes nothing


def test_a_container_whose_init_dies_while_booting_is_said_at_once(lab: Lab) -> None:
    """Its sshd never comes: the login says so when the container stops, not after start_timeout."""
    student = lab.add_student("deadinit")
    try:
        init = f"{lab.lxcpath}/{student.container}/rootfs/sbin/init"
        os.unlink(init)  # what container root may do to its own disk
        with open(init, "w", encoding="utf-8") as script:
            script.write("#!/bin/sh\nsleep 2\nexit 0\n")
        os.chmod(init, 0o755)
        result = lab.ssh(student, "start")
        assert result.returncode == 1, result
        assert "your container stopped while it was starting" in result.stderr
        assert "did not answer" not in result.stderr
        assert lab.state(student) == "STOPPED"
    finally:
        lab.admin("remove", student.name, "--purge")


@pytest.mark.parametrize(
    "command",
    [
        "bash",
        "status; touch /tmp/{canary}",
        "status && touch /tmp/{canary}",
        "status\ntouch /tmp/{canary}",
        "touch /tmp/{canary}",
        "/usr/lib/openssh/sftp-server",
        "scp -t /tmp/{canary}",
        "rsync --server -e.Lsfx . /tmp/{canary}",
        "status status",
        "$(touch /tmp/{canary})",
        "sh -c 'touch /tmp/{canary}'",
    ],
)
def test_refused_commands_run_nothing(lab: Lab, student: Student, command: str) -> None:
    canary = f"{student.name}-canary"
    result = lab.ssh(student, command.format(canary=canary))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpushell: "), result.stderr
    assert "not allowed" in lines[0]
    assert result.stdout == ""
    assert not os.path.exists(f"/tmp/{canary}")
    assert lab.state(student) == "STOPPED"  # not even an allowed word ran


def test_sftp_and_scp_to_the_host_are_refused(lab: Lab, student: Student, tmp_path: object) -> None:
    argv = lab.ssh_argv(student)
    sftp = subprocess.run(
        ["ip", "netns", "exec", lab.netns, "sftp", *argv[5:-3], "-i", student.key,
         "-P", str(lab.sshd_port), f"{student.name}@{lab.host_ip}"],
        input="ls\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert sftp.returncode != 0
    scp = subprocess.run(
        ["ip", "netns", "exec", lab.netns, "scp", *argv[5:-3], "-i", student.key,
         "-P", str(lab.sshd_port), "/etc/hostname", f"{student.name}@{lab.host_ip}:x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert scp.returncode != 0


def test_two_simultaneous_logins_start_once_and_leave_one_rule(
    lab: Lab, student: Student, syslog: Syslog
) -> None:
    # A stale rule for this student, pointing at a wrong address, must go too.
    subprocess.run(
        ["iptables", "-t", "nat", "-A", lab.chain, "-p", "tcp", "--dport", str(student.port),
         "-m", "comment", "--comment", f"gpushell:{student.name}",
         "-j", "DNAT", "--to-destination", "10.255.255.254:22"],
        check=True,
    )  # fmt: skip
    assert len(lab.rules_for(student.name)) == 2
    results: list[subprocess.CompletedProcess[str]] = []
    threads = [threading.Thread(target=lambda: results.append(lab.ssh(student, "start"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert lab.rules_for(student.name) == [
        f"-A {lab.chain} -p tcp -m tcp --dport {student.port} -m comment --comment "
        f'"gpushell:{student.name}" -j DNAT --to-destination {student.ip}:22'
    ]
    starts = syslog.matching("gpushell-helper[", f"user={student.name}", "action=start", "result=ok")
    assert len(starts) == 2
    assert sum("started=True" in line for line in starts) == 1
    assert lab.ssh(student, "hostname", port=student.port).stdout.strip() == student.container


def test_login_restores_a_forward_removed_behind_its_back(lab: Lab, student: Student) -> None:
    """The login's shortcut (ruleset unchanged since last check) must notice a flush."""
    assert lab.ssh(student, "start").returncode == 0
    assert lab.ssh(student, "start").returncode == 0  # second time: the shortcut path
    assert len(lab.rules_for(student.name)) == 1
    subprocess.run(["iptables", "-t", "nat", "-F", lab.chain], check=True)
    assert lab.rules_for(student.name) == []
    assert lab.ssh(student, "start").returncode == 0
    assert len(lab.rules_for(student.name)) == 1
    inside = lab.ssh(student, "hostname", port=student.port)
    assert inside.stdout.strip() == student.container


def test_after_a_ruleset_change_one_login_checks_the_rules_for_the_whole_lab(
    lab: Lab, student: Student
) -> None:
    paths = Paths(**lab.paths)
    other = lab.add_student("stamp")
    try:
        assert lab.ssh(other, "start").returncode == 0
        lab.bump_ruleset()
        assert lab.ssh(student, "start").returncode == 0  # the first login since: reads the rules
        generation = nftgen.generation()
        lab_stamp = read_text_or_none(paths.forwards_stamp) or ""
        assert lab_stamp.startswith(f"{generation}\n")
        assert f" gpushell:{other.name} " in lab_stamp and f" gpushell:{student.name} " in lab_stamp
        own = read_text_or_none(paths.forward_stamp(other.name))
        assert own is not None and not own.startswith(f"{generation} ")
        assert lab.ssh(other, "start").returncode == 0
        assert (
            read_text_or_none(paths.forward_stamp(other.name)) == own
        )  # vouched for: no look at the rules of its own
        assert lab.ssh(other, "hostname", port=other.port).stdout.strip() == other.container

        # A chain missing a rule vouches for nobody: the rule's owner puts it back.
        rule = lab.rules_for(other.name)[0]
        subprocess.run(["iptables", "-t", "nat", "-D", *shlex.split(rule)[1:]], check=True)
        assert lab.ssh(student, "start").returncode == 0
        assert not (read_text_or_none(paths.forwards_stamp) or "").startswith(f"{nftgen.generation()}\n")
        assert lab.ssh(other, "start").returncode == 0
        assert lab.rules_for(other.name) == [rule]
        assert lab.ssh(other, "hostname", port=other.port).stdout.strip() == other.container
    finally:
        lab.admin("remove", other.name, "--purge", check=False)


def test_every_action_leaves_an_audit_line(lab: Lab, student: Student, syslog: Syslog) -> None:
    lab.ssh(student, "status")
    lab.ssh(student, "bash -i")
    assert syslog.matching(f"user={student.name}", "action=status", "result=ok")
    refused = syslog.matching(f"user={student.name}", "action=command", "result=refused")
    assert any("bash -i" in line for line in refused)
    # facility auth (4) at warning (4) or notice (5): PRI 36 or 37
    assert all(line.startswith(("<36>", "<37>")) for line in syslog.matching(f"user={student.name}"))


def test_broken_registry_fails_closed_with_one_line(lab: Lab, student: Student, syslog: Syslog) -> None:
    broken = lab.read_registry().replace("users:", "users:\n  : [", 1)
    with lab.registry_replaced(broken):
        result = lab.ssh(student, "status")
        menu = lab.ssh(student, options=("-tt",))
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "gpushell: gpushell is not available right now; please contact your administrator."
    )
    assert "Traceback" not in result.stdout + result.stderr
    assert menu.returncode != 0 and "contact your administrator" in menu.stdout + menu.stderr
    assert PROMPT not in menu.stdout
    details = syslog.matching(f"user={student.name}", "not valid YAML")
    assert details and lab.registry in details[-1]


def test_registry_writable_by_others_is_refused(lab: Lab, student: Student, syslog: Syslog) -> None:
    with lab.registry_replaced(lab.read_registry(), mode=0o666):
        result = lab.ssh(student, "start")
    assert result.returncode != 0
    assert "contact your administrator" in result.stderr
    assert lab.state(student) == "STOPPED"
    assert syslog.matching(f"user={student.name}", "writable by a user other than root")


def test_student_missing_from_registry_is_refused(lab: Lab, student: Student) -> None:
    text = lab.read_registry()
    from gpushell.core import registry_edit

    with lab.registry_replaced(registry_edit.remove_user(text, student.name)):
        result = lab.ssh(student, "start")
    assert result.returncode != 0
    assert "contact your administrator" in result.stderr
    assert lab.state(student) == "STOPPED"


def test_menu_reprompts_on_bad_input_and_ends_cleanly(lab: Lab, student: Student) -> None:
    child = login(lab, student)
    for bad in ("14", "bash", "status; id", "\x1b[31mred"):
        child.sendline(bad)
        child.expect("please choose 1-13")
        child.expect(PROMPT)
    child.sendline("3")  # stop
    child.expect(PROMPT)
    assert "stopped" in child.before
    assert lab.state(student) == "STOPPED"
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert not wait_gone(student.name)


@pytest.mark.parametrize("key", ["\x03", "\x1a", "\x1c"])  # Ctrl-C, Ctrl-Z, Ctrl-\
def test_interrupt_keys_end_the_session(lab: Lab, student: Student, key: str) -> None:
    child = login(lab, student)
    child.send(key)
    child.expect(pexpect.EOF)
    child.close()
    assert "Traceback" not in (child.before or "")
    assert not wait_gone(student.name)


def test_hangup_and_idle_timeout_end_the_session(lab: Lab, student: Student) -> None:
    child = login(lab, student)
    assert shell_processes(student.name)
    child.kill(signal.SIGKILL)  # the client vanishes: sshd hangs up the shell
    assert not wait_gone(student.name)

    text = lab.read_registry().replace("idle_timeout: 600", "idle_timeout: 2")
    with lab.registry_replaced(text):
        child = login(lab, student)
        child.expect("idle timeout", timeout=15)
        child.expect(pexpect.EOF)
    assert not wait_gone(student.name)


def test_colour_only_on_a_capable_terminal(lab: Lab, student: Student) -> None:
    coloured = login(lab, student, term="xterm")
    assert "\x1b[" in coloured.before
    coloured.sendline("quit")
    coloured.expect(pexpect.EOF)
    plain = login(lab, student, term="dumb")
    assert "\x1b[" not in plain.before
    plain.sendline("quit")
    plain.expect(pexpect.EOF)
    piped = lab.ssh(student, "status")
    assert "\x1b[" not in piped.stdout
