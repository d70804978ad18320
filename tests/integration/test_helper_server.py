"""The resident helper for real: students' logins through its socket, sudo when it is gone, and attacks.

Every lab starts the server (lab.start_helper_server), as an enabled
gpushell-helper.service does on a host, so every login in the other tests
goes through it.  Here: that it is the server that answers (with sudo's
rule taken away, logins still work), that without it logins take sudo,
who may connect, and what a caller who holds connections open, sends
garbage or asks as root gets; and that a server stopped in the middle of
a student's restart leaves the restart to finish.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from gpushell.core import protocol
from gpushell.core.errors import CONTACT_ADMIN
from gpushell.helper import server

from .conftest import Syslog
from .lab import ENV, Lab, Student

# A caller's side of the wire, run as a given user: the request from argv[2] (`\n` escapes), the answer out.
ASK = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.connect(sys.argv[1])\n"
    "s.sendall(sys.argv[2].encode().decode('unicode_escape').encode('latin-1'))\n"
    "s.shutdown(socket.SHUT_WR)\n"
    "print(b''.join(iter(lambda: s.recv(65536), b'')).decode(), end='')\n"
)


def as_user(name: str, *groups: str) -> dict[str, object]:
    """subprocess keywords that run a program as name, with exactly groups besides its own."""
    entry = pwd.getpwnam(name)
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": [grp.getgrnam(g).gr_gid for g in groups],
    }


def ask_as(lab: Lab, name: str, request: str, *groups: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-I", "-c", ASK, lab.paths["helper_socket"], request],
        capture_output=True, text=True, env=ENV, timeout=60, cwd="/", **as_user(name, *groups),
    )  # fmt: skip


@contextlib.contextmanager
def sudo_rule_taken_away(lab: Lab) -> Iterator[None]:
    dropin = lab.paths["sudoers_dropin"]
    shutil.move(dropin, f"{lab.root}/sudoers.away")
    try:
        yield
    finally:
        shutil.move(f"{lab.root}/sudoers.away", dropin)


@contextlib.contextmanager
def server_stopped(lab: Lab) -> Iterator[None]:
    lab.stop_helper_server()
    try:
        yield
    finally:
        lab.start_helper_server()


def test_logins_are_answered_by_the_server_and_by_sudo_without_it(lab: Lab, student: Student) -> None:
    with sudo_rule_taken_away(lab):
        served = lab.ssh(student, "status")
        assert served.returncode == 0, served.stderr
        assert (
            f"Container {student.container}: stopped, IP {student.ip}, port {student.port}" in served.stdout
        )
        with server_stopped(lab):
            neither = lab.ssh(student, "status")
            assert neither.returncode != 0
            assert neither.stderr.strip() == f"gpushell: {CONTACT_ADMIN}", neither.stderr
    with server_stopped(lab):
        assert not os.path.exists(lab.paths["helper_socket"])  # the server took its socket with it
        through_sudo = lab.ssh(student, "start")
        assert through_sudo.returncode == 0, through_sudo.stderr
        assert f"Container {student.container}: running, IP {student.ip}" in through_sudo.stdout
    assert lab.ssh(student, "stop").returncode == 0


def test_only_the_group_may_connect_and_root_is_no_student(lab: Lab, student: Student) -> None:
    mode = os.stat(lab.paths["helper_socket"]).st_mode & 0o777
    assert mode == 0o660
    stranger = ask_as(lab, "nobody", "status\n")
    assert stranger.returncode != 0 and "PermissionError" in stranger.stderr
    as_root = subprocess.run(
        [sys.executable, "-I", "-c", ASK, lab.paths["helper_socket"], "status\\n"],
        capture_output=True, text=True, env=ENV, timeout=60,
    )  # fmt: skip
    answer = protocol.decode(as_root.stdout)
    assert answer.get("error") == "the helper answers students only", as_root.stdout
    # A student asks for their own status, and gets only their own.
    own = protocol.decode(ask_as(lab, student.name, "status\\n", lab.group).stdout)
    assert own.get("port") == str(student.port) and own.get("state") == "STOPPED", own


def test_garbage_and_unknown_verbs_are_refused_and_logged(lab: Lab, student: Student, syslog: Syslog) -> None:
    for request in ("--serve\\n", "status login\\n", "ls -la\\n", "\\xff\\xfe\\n", "status"):
        answer = protocol.decode(ask_as(lab, student.name, request, lab.group).stdout)
        assert answer.get("error") == "unknown helper request", (request, answer)
    # Each refusal is in the log under the student the kernel named (bytes that are no request: their uid).
    uid = pwd.getpwnam(student.name).pw_uid
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not syslog.matching(f"user='uid {uid}'", "unreadable request"):
        time.sleep(0.05)
    assert len(syslog.matching(f"user={student.name}", "refused helper argv")) >= 3, syslog.lines[-8:]
    assert syslog.matching(f"user='uid {uid}'", "unreadable request"), syslog.lines[-8:]


def test_a_caller_holding_connections_gets_busy_and_others_go_on(
    lab: Lab, student: Student, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = pwd.getpwnam(student.name).pw_uid
    held: list[socket.socket] = []
    pid = os.fork()
    if pid == 0:  # connect as the student, hold the connections without a word, until killed
        try:
            os.setgroups([grp.getgrnam(lab.group).gr_gid])
            os.setgid(pwd.getpwnam(student.name).pw_gid)
            os.setuid(uid)
            for _ in range(server.MAX_PER_CALLER):
                connection = socket.socket(socket.AF_UNIX)
                connection.connect(lab.paths["helper_socket"])
                held.append(connection)
            time.sleep(60)
        finally:
            os._exit(0)
    try:
        time.sleep(1)  # the server has forked a child for each
        busy = protocol.decode(ask_as(lab, student.name, "status\\n", lab.group).stdout)
        assert busy.get("error") == server.BUSY, busy
        neighbour = lab.add_student("nb")
        try:
            others = lab.ssh(neighbour, "status")  # another student is not held up
            assert others.returncode == 0, others.stderr
        finally:
            lab.admin("remove", neighbour.name, "--purge", check=False)
        # The held connections' children give up after REQUEST_SECONDS; then the student is answered.
        deadline = time.monotonic() + server.REQUEST_SECONDS + 20
        while time.monotonic() < deadline:
            again = protocol.decode(ask_as(lab, student.name, "status\\n", lab.group).stdout)
            if again.get("state") == "STOPPED":
                break
            time.sleep(1)
        assert again.get("state") == "STOPPED", again
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_a_server_stopped_mid_restart_lets_the_restart_finish(lab: Lab, student: Student) -> None:
    assert lab.ssh(student, "start").returncode == 0
    restart = subprocess.Popen(
        [*lab.ssh_argv(student), "restart"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 30  # the server's child has stopped the container: half way
        while lab.state(student) == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lab.state(student) != "RUNNING", "the restart never stopped the container"
        with server_stopped(lab):
            out, err = restart.communicate(timeout=120)
            assert restart.returncode == 0, err
            assert f"Container {student.container}: running, IP {student.ip}" in out
            assert lab.state(student) == "RUNNING"
    finally:
        if restart.poll() is None:
            restart.kill()
