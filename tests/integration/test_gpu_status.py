"""`gpus` and `kill-gpu-process` on real containers, real sshd, real sudo: no GPU here.

This machine has no NVIDIA driver or GPU, so NVML (pynvml) cannot answer:
the real path through sshd, the login shell and the root helper is the
no-driver one.  What does not need a driver is tested for real: the
mapping of host PIDs to students' containers, and every refusal of
`gpu-kill` that comes before NVML is asked (another student's process, a
host process, garbage).  The one path that needs NVML to name a process
as a GPU user, the allowed kill, runs in-process with a stand-in NVML
object (`gpustatus.kill` takes it as an argument) that reports a REAL
process of the caller's container: the cgroup check and the signal are real.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import types
from collections.abc import Iterator

import pytest

from gpushell import gpustatus
from gpushell.errors import GpushellError

from .conftest import Syslog
from .lab import ENV, Lab, Student, sh

NO_DRIVER_LINE = "no NVIDIA driver/GPU on this host\n"


class OneGpuNvml:
    """Stands in for pynvml: one GPU whose only compute process is `pid`."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, _handle: int) -> str:
        return "Stand-in GPU"

    def nvmlDeviceGetMemoryInfo(self, _handle: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(used=1 << 30, total=16 << 30)

    def nvmlDeviceGetUtilizationRates(self, _handle: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(gpu=50)

    def nvmlDeviceGetTemperature(self, _handle: int, _sensor: int) -> int:
        return 40

    def nvmlDeviceGetComputeRunningProcesses(self, _handle: int) -> list[types.SimpleNamespace]:
        return [types.SimpleNamespace(pid=self.pid, usedGpuMemory=1 << 30)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, _handle: int) -> list[types.SimpleNamespace]:
        return []

    def nvmlShutdown(self) -> None:
        pass


def find_pids(argv: list[str]) -> list[int]:
    """Host PIDs whose command line is exactly argv, by scanning /proc."""
    wanted = "\0".join(argv) + "\0"
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", encoding="utf-8") as stream:
                if stream.read() == wanted:
                    found.append(int(entry))
    return found


@contextlib.contextmanager
def sleeper(lab: Lab, student: Student, seconds: str) -> Iterator[int]:
    """A `sleep` started in the student's container by lxc-attach; yields its host PID."""
    attach = subprocess.Popen(
        ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--", "sleep", seconds],
        env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not (pids := find_pids(["sleep", seconds])) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pids) == 1, f"expected one sleep {seconds}, found {pids}"
        yield pids[0]
    finally:
        attach.kill()
        for pid in find_pids(["sleep", seconds]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        attach.wait(10)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stream:
            return stream.read().split(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def other(lab: Lab) -> Iterator[Student]:
    made = lab.add_student("gk")
    try:
        yield made
    finally:
        lab.admin("remove", made.name, "--purge", check=False)


def stop(lab: Lab, *students: Student) -> None:
    for one in students:
        sh(["lxc-stop", "-P", lab.lxcpath, "-n", one.container, "-k"], check=False)


def test_gpus_without_a_driver_is_one_line_and_exit_0(lab: Lab, student: Student, syslog: Syslog) -> None:
    result = lab.ssh(student, "gpus")
    assert (result.returncode, result.stdout, result.stderr) == (0, NO_DRIVER_LINE, "")
    deadline = time.monotonic() + 5
    while not syslog.matching(f"user={student.name}", "action=gpus", "result=ok", "state=no-driver"):
        assert time.monotonic() < deadline, "no audit line for gpus"
        time.sleep(0.05)
    # Everything else keeps working beside it.
    assert lab.ssh(student, "status").returncode == 0


def test_real_container_processes_map_to_their_student(lab: Lab, student: Student) -> None:
    assert lab.ssh(student, "start").returncode == 0
    try:
        owners = {student.container: student.name}
        init = lab.init_pid(student)
        assert gpustatus.pid_container(init) == student.container
        assert gpustatus.pid_owner(init, owners) == student.name
        with sleeper(lab, student, "4711.1") as pid:
            assert pid != init
            assert gpustatus.pid_owner(pid, owners) == student.name
            assert gpustatus.pid_command(pid) == "sleep"
        # The host's own processes belong to no student.
        assert gpustatus.pid_owner(os.getpid(), owners) is None
        assert gpustatus.pid_owner(1, owners) is None
    finally:
        stop(lab, student)


def test_gpu_kill_refusals_for_real(lab: Lab, student: Student, other: Student, syslog: Syslog) -> None:
    for one in (student, other):
        assert lab.ssh(one, "start").returncode == 0
    host_sleep = subprocess.Popen(["sleep", "4711.4"], env=ENV)
    try:
        with sleeper(lab, other, "4711.2") as theirs, sleeper(lab, student, "4711.3") as mine:
            cases = [
                (theirs, f"process {theirs} is not in your container"),
                (host_sleep.pid, f"process {host_sleep.pid} is not in your container"),
                (mine, "no NVIDIA driver on this host"),  # the student's own: NVML decides, and is absent
            ]
            for pid, message in cases:
                result = lab.ssh(student, f"kill-gpu-process {pid}")
                assert (result.returncode, result.stdout, result.stderr) == (1, "", f"gpushell: {message}\n")
                assert alive(pid)
            deadline = time.monotonic() + 5
            while len(syslog.matching(f"user={student.name}", "action=gpu-kill", "result=failed")) < 3:
                assert time.monotonic() < deadline, "no audit lines for the refused gpu-kill"
                time.sleep(0.05)
            assert syslog.matching(f"user={student.name}", "action=gpu-kill", f"{theirs}: refused")

            # Garbage through the shell never reaches the helper.
            for garbage in ("12;id", "$(id)", "-1", "99999999", ""):
                result = lab.ssh(student, f"kill-gpu-process {garbage}")
                assert result.returncode == 2
                assert "usage: kill-gpu-process PID" in result.stderr or "not allowed" in result.stderr
            # Garbage straight to the helper through sudo, as the student, bypassing the shell.
            for garbage in ("12;id\n", f"{theirs} {mine}\n", "\n", "0\n", f" {mine}\n"):
                direct = sh(
                    ["runuser", "-u", student.name, "--", "sudo", "-n", lab.paths["helper"], "gpu-kill"],
                    check=False, input=garbage,
                )  # fmt: skip
                assert direct.returncode == 1
                assert direct.stdout == "error=not a process number\nstatus=1\n"
            assert alive(theirs) and alive(mine) and host_sleep.poll() is None
    finally:
        host_sleep.kill()
        host_sleep.wait()
        stop(lab, student, other)


def test_gpu_kill_allowed_only_for_a_gpu_process_in_the_callers_container(
    lab: Lab, student: Student, other: Student
) -> None:
    """The allow path with a stand-in NVML (no driver here) naming a real process as a GPU user."""
    for one in (student, other):
        assert lab.ssh(one, "start").returncode == 0
    try:
        with sleeper(lab, other, "4711.5") as theirs, sleeper(lab, student, "4711.6") as mine:
            # NVML says the other student's process uses a GPU: still not the caller's to end.
            with pytest.raises(GpushellError) as info:
                gpustatus.kill(theirs, student.container, lambda: OneGpuNvml(theirs))
            assert info.value.user_message == f"process {theirs} is not in your container"
            # The caller's own process, but NVML does not list it: refused.
            with pytest.raises(GpushellError) as info:
                gpustatus.kill(mine, student.container, lambda: OneGpuNvml(theirs))
            assert info.value.user_message == f"process {mine} is not using a GPU"
            assert alive(mine) and alive(theirs)

            assert gpustatus.kill(mine, student.container, lambda: OneGpuNvml(mine)) == {
                "state": "ok",
                "killed": mine,
            }
            deadline = time.monotonic() + 5
            while alive(mine):
                assert time.monotonic() < deadline, "SIGTERM did not end the process"
                time.sleep(0.05)
            assert alive(theirs)
    finally:
        stop(lab, student, other)
