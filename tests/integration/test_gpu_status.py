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
import stat
import subprocess
import time
import types
from collections.abc import Iterator

import pexpect
import pytest

from gpushell.core import registry
from gpushell.core.errors import GpushellError
from gpushell.core.paths import Paths
from gpushell.gpu import gpucache, gpustatus

from .conftest import Syslog
from .lab import ENV, Lab, Student, sh
from .test_gpus import stand_in_devices
from .test_login import login

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


def lab_owners(lab: Lab) -> gpustatus.Owners:
    """Container -> student, with each student's host id range, as the helper builds it."""
    reg = registry.parse(lab.read_registry(), lab.registry)
    return gpustatus.Owners(
        {entry.container: entry.name for entry in reg.users.values()},
        [(entry.idmap, reg.idmap_size, entry.name) for entry in reg.users.values()],
    )


def id_range(lab: Lab, student: Student) -> tuple[int, int]:
    reg = registry.parse(lab.read_registry(), lab.registry)
    return reg.users[student.name].idmap, reg.idmap_size


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
        owners = lab_owners(lab)
        init = lab.init_pid(student)
        first, count = id_range(lab, student)
        assert gpustatus.in_range(gpustatus.pid_uids(init), first, count)  # container root: first id
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
            first, count = id_range(lab, student)
            with pytest.raises(GpushellError) as info:
                gpustatus.kill(theirs, first, count, lambda: OneGpuNvml(theirs))
            assert info.value.user_message == f"process {theirs} is not in your container"
            # The caller's own process, but NVML does not list it: refused.
            with pytest.raises(GpushellError) as info:
                gpustatus.kill(mine, first, count, lambda: OneGpuNvml(theirs))
            assert info.value.user_message == f"process {mine} is not using a GPU"
            assert alive(mine) and alive(theirs)

            assert gpustatus.kill(mine, first, count, lambda: OneGpuNvml(mine)) == {
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


# --- the login banner's GPU lines, from the snapshot the helper keeps ---------------


class SharedGpuNvml(OneGpuNvml):
    """Stands in for pynvml: one GPU with a compute process for each of `pids`."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(pids[0])
        self.pids = pids

    def nvmlDeviceGetComputeRunningProcesses(self, _handle: int) -> list[types.SimpleNamespace]:
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=1 << 28) for pid in self.pids]


@pytest.fixture
def gpu_user(lab: Lab) -> Iterator[Student]:
    """A student with GPU 0 (a stand-in device node: no GPU here), removed afterwards."""
    with stand_in_devices(lab):
        made = lab.add_student("gb", "--gpus", "0")
        try:
            yield made
        finally:
            stop(lab, made)
            lab.admin("remove", made.name, "--purge", check=False)


def lab_paths(lab: Lab) -> Paths:
    return Paths(run_dir=lab.paths["run_dir"], registry=lab.registry)


def remove_snapshot(lab: Lab) -> str:
    path = lab_paths(lab).gpu_snapshot
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return path


def banner_of(lab: Lab, student: Student) -> str:
    """What an interactive ssh login prints before the first prompt (no colour), then quit."""
    child = login(lab, student, term="dumb")
    text = (child.before or "").replace("\r", "")
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    return text


def gpu_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("GPU ", "GPUs:", "GPU status"))]


def test_the_gpus_action_rewrites_the_banner_snapshot(lab: Lab, student: Student) -> None:
    path = remove_snapshot(lab)
    result = lab.ssh(student, "gpus")
    assert (result.returncode, result.stdout) == (0, NO_DRIVER_LINE)
    info = os.lstat(path)
    assert stat.S_ISREG(info.st_mode) and (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)
    lines = gpucache.read(path)
    assert lines is not None and lines["gpu_state"] == "no-driver" and lines["taken"].isdigit()


def test_login_banner_shows_the_gpus_from_the_snapshot_and_refreshes_it_behind_the_login(
    lab: Lab, gpu_user: Student, other: Student
) -> None:
    path = remove_snapshot(lab)
    # First login: nothing known yet, so one line pointing at `gpus`...
    assert gpu_lines(banner_of(lab, gpu_user)) == ["GPU status: run `gpus`"]
    # ...and the login refreshed the snapshot after answering: NVML is absent here.
    deadline = time.monotonic() + 30
    while (lines := gpucache.read(path)) is None:
        assert time.monotonic() < deadline, "the login never refreshed the GPU snapshot"
        time.sleep(0.05)
    assert lines["gpu_state"] == "no-driver"
    assert gpu_lines(banner_of(lab, gpu_user)) == ["GPUs: none on this host (no NVIDIA driver)"]
    # A student without GPUs (gpus: none) gets no GPU line at all.
    assert gpu_lines(banner_of(lab, other)) == []

    # With NVML answering (a stand-in, as there is no GPU) for REAL processes in both
    # containers and one on the host: the id-range mapping that counts students is real.
    with sleeper(lab, gpu_user, "4711.7") as mine, sleeper(lab, other, "4711.8") as theirs:
        nvml = SharedGpuNvml([mine, theirs, os.getpid()])

        def owners() -> dict[str, str]:
            return lab_owners(lab)

        deadline = time.monotonic() + 30  # a login's refresh may still hold the lock for a moment
        while not gpucache.refresh(lab_paths(lab), owners, lambda: nvml):
            assert time.monotonic() < deadline, "the GPU snapshot lock was never free"
            time.sleep(0.05)
        text = banner_of(lab, gpu_user)
    shown = gpu_lines(text)
    assert len(shown) == 1
    # Counts only: 2 students (the host's process is nobody's); no names, no PIDs.
    assert shown[0].startswith("GPU 0   50%     1.0/16.0 GiB  40 C  2 students")
    assert other.name not in text
    for pid in (mine, theirs):
        assert str(pid) not in text
