"""doctor asks the lab's real sshd what it applies to a student, and sees whether it reloaded.

The lab's sshd runs with its own sshd_config, which includes the lab's
drop-in on its first line.  Each test that edits a file puts back its text
and its mtime: the lab's sshd never reads the edited version, so afterwards
it is exactly as before.  The one SIGHUP is the fix doctor gives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

from .lab import Lab, Student


def failures(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("FAIL")]


def sshd_pid(lab: Lab) -> int:
    assert lab.sshd is not None and lab.sshd.poll() is None
    return lab.sshd.pid


def pidfile(lab: Lab) -> str:
    return f"{lab.root}/sshd.pid"


@contextlib.contextmanager
def file_restored(path: str) -> Iterator[str]:
    """The file's text, given back with its mtime afterwards, whatever the test did."""
    before = os.stat(path)
    with open(path, encoding="utf-8") as stream:
        text = stream.read()
    try:
        yield text
    finally:
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)


def reload_sshd(lab: Lab) -> None:
    """SIGHUP the lab's sshd, which it started, and wait until it has written its pid file again."""
    before = os.stat(pidfile(lab)).st_mtime_ns
    os.kill(sshd_pid(lab), signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if os.stat(pidfile(lab)).st_mtime_ns != before:
                with socket.create_connection((lab.host_ip, lab.sshd_port), 1):
                    return
        time.sleep(0.05)
    raise RuntimeError(f"the lab's sshd did not come back after SIGHUP; see {lab.root}/sshd.log")


def newest(*paths: str) -> str:
    return max(paths, key=lambda path: os.stat(path).st_mtime_ns)


def test_doctor_passes_with_the_lab_sshd_and_its_drop_in(lab: Lab, student: Student) -> None:
    config, dropin = lab.paths["sshd_config"], lab.paths["sshd_dropin"]
    result = lab.admin("doctor", check=False)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert f"ok: sshd reads {dropin} through {config}" in lines
    (gives,) = [line for line in lines if line.startswith("ok: sshd gives ")]
    assert student.name in gives and gives.endswith(
        f"(group {lab.group}): no forwarding of any kind, no ~/.ssh/rc, "
        "no client environment, no ForceCommand, no internal-sftp"
    )
    assert (
        f"ok: sshd PID {sshd_pid(lab)} has read its configuration since {newest(config, dropin)} last changed"
        in lines
    )


def test_doctor_reports_a_config_that_no_longer_includes_the_drop_in(lab: Lab, student: Student) -> None:
    config, dropin, pid = lab.paths["sshd_config"], lab.paths["sshd_dropin"], sshd_pid(lab)
    include = (
        f"add `Include {lab.root}/*.conf` as the first line of {config}, then reload sshd: kill -HUP {pid}"
    )
    with file_restored(config) as original:
        assert original.startswith(f"Include {dropin}\n")
        write(config, original.replace(f"Include {dropin}\n", ""))
        result = lab.admin("doctor", check=False)
        assert result.returncode != 0
        fails = failures(result)
        assert fails[0] == f"FAIL: sshd never reads {dropin}: {config} does not include it — fix: {include}"
        # sshd's defaults, which the lab's sshd_config does not change, in doctor's order.
        wrong = [
            ("disableforwarding", "no", "yes"), ("allowtcpforwarding", "yes", "no"),
            ("allowagentforwarding", "yes", "no"), ("allowstreamlocalforwarding", "yes", "no"),
            ("permitopen", "any", "none"), ("permitlisten", "any", "none"), ("permituserrc", "yes", "no"),
        ]  # fmt: skip
        assert fails[1:-1] == [
            f"FAIL: sshd would give {student.name} `{key} {got}`, not `{key} {want}` — fix: {include}"
            for key, got, want in wrong
        ]
        assert fails[-1].startswith(f"FAIL: sshd PID {pid} last read its configuration at ")
        assert f"before {config} changed at " in fails[-1]
        assert fails[-1].endswith(f" — fix: reload sshd: kill -HUP {pid}")
    # Text and mtime back: the running sshd, which never read the edit, is in effect again.
    assert lab.admin("doctor", check=False).returncode == 0


def test_doctor_names_the_line_that_overrides_the_drop_in(lab: Lab, student: Student) -> None:
    config, pid = lab.paths["sshd_config"], sshd_pid(lab)
    with file_restored(config) as original:
        write(
            config,
            "PermitUserEnvironment yes\n" + original.replace("/usr/lib/openssh/sftp-server", "internal-sftp"),
        )
        fails = failures(lab.admin("doctor", check=False))
        assert fails[:2] == [
            f"FAIL: sshd would give {student.name} `permituserenvironment yes`, not "
            f"`permituserenvironment no` — fix: take out the line that sets it at {config}:1 (sshd keeps"
            f" the first value it reads, and a matching Match block overrides a global line), then reload"
            f" sshd: kill -HUP {pid}",
            f"FAIL: sshd would run subsystem sftp for {student.name} as internal-sftp, which bypasses the"
            " login shell — fix: make it `Subsystem sftp /usr/lib/openssh/sftp-server` at"
            f" {config}:{len(original.splitlines()) + 1}, then reload sshd: kill -HUP {pid}",
        ]
        assert len(fails) == 3 and fails[2].startswith(f"FAIL: sshd PID {pid} last read its configuration")
    assert lab.admin("doctor", check=False).returncode == 0


def test_doctor_sees_sshd_not_reloaded_since_the_drop_in_changed_until_it_is(
    lab: Lab, student: Student
) -> None:
    config, dropin, pid = lab.paths["sshd_config"], lab.paths["sshd_dropin"], sshd_pid(lab)
    with file_restored(dropin):
        # Changed just after sshd last read it (same text: only the time tells).
        loaded = os.stat(pidfile(lab)).st_mtime_ns
        os.utime(dropin, ns=(loaded + 1, loaded + 1))
        assert newest(config, dropin) == dropin
        stale = lab.admin("doctor", check=False)
        assert stale.returncode != 0
        (line,) = failures(stale)
        assert line.startswith(f"FAIL: sshd PID {pid} last read its configuration at ")
        changed = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(loaded / 1e9))
        assert line.endswith(f", before {dropin} changed at {changed} — fix: reload sshd: kill -HUP {pid}")
        # The fix doctor gives: a SIGHUP re-executes sshd, same PID, and it writes its pid file again.
        reload_sshd(lab)
        assert sshd_pid(lab) == pid
        reloaded = lab.admin("doctor", check=False)
        assert reloaded.returncode == 0, reloaded.stdout
        assert f"ok: sshd PID {pid} has read its configuration since {dropin} last changed" in reloaded.stdout
    # The drop-in's old mtime is back, older than the reload: still in effect.
    assert lab.admin("doctor", check=False).returncode == 0
    # And the reloaded sshd still lets the student in, to the menu only.
    logged_in = lab.ssh(student, "status")
    assert logged_in.returncode == 0, logged_in.stderr
