"""Live device changes: the pure parts of lxcdevices, the holder scan on real processes, end_holders.

The mount-namespace work needs a running container: tests/integration/test_gpu_live.py.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpushell.containers import cgroups, lxcdevices
from gpushell.containers.backend import RUNNING, STOPPED, end_holders
from gpushell.core.errors import GpushellError
from gpushell.gpu.gpudevices import Node
from gpushell.system.runner import Result
from tests.fakes import FakeBackend, alive

NODE = Node("nvidia1", 195, 1)
V1_CGROUP = """9:name=systemd:/lxc.payload.alice/init.scope
5:devices:/lxc.payload.alice/init.scope
3:cpuset:/lxc.payload.alice
0::/lxc.payload.alice/init.scope
"""


# --- pure ----------------------------------------------------------------------------


def test_the_mount_calls_are_known_on_x86_64_and_aarch64_and_refused_elsewhere() -> None:
    assert lxcdevices.syscall_numbers("x86_64") == (428, 429)
    assert lxcdevices.syscall_numbers("aarch64") == (428, 429)
    with pytest.raises(GpushellError) as caught:
        lxcdevices.syscall_numbers("riscv64")
    assert "riscv64" in caught.value.log_message and "riscv64" not in caught.value.user_message


@pytest.mark.parametrize(
    ("text", "v2", "expected"),
    [
        (V1_CGROUP, False, "/sys/fs/cgroup/devices/lxc.payload.alice"),
        (V1_CGROUP, True, "/sys/fs/cgroup/lxc.payload.alice"),
        (
            "5:devices:/machine/lxc.payload.alice/user.slice\n",
            False,
            "/sys/fs/cgroup/devices/machine/lxc.payload.alice",
        ),
        # A child cgroup the container named like another container's: cut at its own level.
        ("5:devices:/lxc.payload.alice/lxc.payload.bob\n", False, "/sys/fs/cgroup/devices/lxc.payload.alice"),
        ("5:devices:/lxc.payload.bob/init.scope\n", False, None),  # another container's init
        ("5:devices:/user.slice\n", False, None),  # not a container at all
        ("3:cpuset:/lxc.payload.alice\n", False, None),  # no devices hierarchy
    ],
)
def test_the_containers_cgroup_is_its_own_payload_level(text: str, v2: bool, expected: str | None) -> None:
    assert lxcdevices.payload_cgroup(text, "alice", v2) == expected


def test_v2_rules_go_through_lxcs_monitor() -> None:
    assert lxcdevices.lxc_cgroup_argv("/var/lib/lxc", "c-ann", "allow", NODE) == [
        "lxc-cgroup", "-P", "/var/lib/lxc", "-n", "c-ann", "devices.allow", "c 195:1 rwm",
    ]  # fmt: skip
    assert lxcdevices.lxc_cgroup_argv("/x", "c-ann", "deny", NODE)[-2:] == ["devices.deny", "c 195:1 rwm"]


def test_cgroup_procs_text_becomes_pids_each_once() -> None:
    assert lxcdevices.parse_pids("12\n7\n12\nx\n-3\n\n99999\n") == [12, 7, 99999]
    assert lxcdevices.parse_pids("") == []


def test_each_mapped_file_is_looked_at_once() -> None:
    maps = (
        "7f00-7f10 rw-s 00000000 00:05 1034 /dev/nvidia1\n"
        "7f20-7f30 rw-s 00001000 00:05 1034 /dev/nvidia1\n"
        "7f40-7f50 r-xp 00000000 fe:00 55 /usr/lib/libc.so.6\n"
        "7ffd-7ffe rw-p 00000000 00:00 0 [stack]\n"
        "8000-9000 rw-p 00000000 00:00 0\n"
    )
    assert lxcdevices.mapped_files(maps) == ["7f00-7f10", "7f40-7f50"]


def test_a_childs_report_becomes_an_error_without_host_paths() -> None:
    error = lxcdevices.child_failure("in-the-way 39 ", "nvidia1", "add")
    assert error.user_message.startswith("/dev/nvidia1 in your container is in the way")
    assert "Directory not empty" in error.log_message
    error = lxcdevices.child_failure("setns 1 ", "nvidia1", "remove")
    assert error.user_message == "the GPU device could not be taken from your container; ask your admin"
    assert "setns" in error.log_message
    error = lxcdevices.child_failure("timeout 0 after 10 s", "nvidia1", "add")
    assert "added to" in error.user_message and "timeout" in error.log_message


@pytest.mark.parametrize("name", ["", ".", "..", "../nvidia1", "a/b", "nv\0", "nv\n"])
def test_a_node_name_is_one_plain_entry(name: str) -> None:
    with pytest.raises(GpushellError):
        lxcdevices.check_name(name)


def test_plain_names_pass() -> None:
    for name in ("nvidia0", "nvidia-uvm", "nvidiactl"):
        lxcdevices.check_name(name)


# --- the cgroup tree, on a stand-in tree of directories ---------------------------------


def make_tree(root: Path) -> None:
    for path in ("init.scope", "system.slice/ssh.service", "system.slice/cron.service", "user.slice"):
        (root / path).mkdir(parents=True)


def test_the_tree_is_walked_parents_first(tmp_path: Path) -> None:
    make_tree(tmp_path)
    found = [os.path.relpath(path, tmp_path) for path in lxcdevices.cgroup_tree(str(tmp_path))]
    assert found[0] == "." and len(found) == 6
    assert found.index("system.slice") < found.index("system.slice/ssh.service")


def test_a_cgroup_made_while_its_parent_is_visited_is_walked_too(tmp_path: Path) -> None:
    visited: list[str] = []

    def visit(directory: str) -> None:
        visited.append(directory)
        if directory == str(tmp_path):
            (tmp_path / "made-meanwhile").mkdir()

    lxcdevices.cgroup_tree(str(tmp_path), visit)
    assert f"{tmp_path}/made-meanwhile" in visited


def test_a_cgroup_gone_meanwhile_is_skipped(tmp_path: Path) -> None:
    make_tree(tmp_path)

    def visit(directory: str) -> None:
        if directory.endswith("user.slice"):
            raise FileNotFoundError(directory)

    found = lxcdevices.cgroup_tree(str(tmp_path), visit)
    assert not any(path.endswith("user.slice") for path in found) and len(found) == 5


def test_a_cgroup_removed_while_written_is_skipped(tmp_path: Path) -> None:
    """ENODEV: the kernel's answer to a write into a cgroup removed after the file was opened
    (a unit of the booting container that ended meanwhile); it held no task any more."""
    make_tree(tmp_path)

    def visit(directory: str) -> None:
        if directory.endswith("user.slice"):
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV), directory)

    found = lxcdevices.cgroup_tree(str(tmp_path), visit)
    assert not any(path.endswith("user.slice") for path in found) and len(found) == 5


def test_any_other_write_error_is_raised(tmp_path: Path) -> None:
    make_tree(tmp_path)

    def visit(directory: str) -> None:
        if directory.endswith("user.slice"):
            raise PermissionError(errno.EPERM, "Operation not permitted", directory)

    with pytest.raises(PermissionError):
        lxcdevices.cgroup_tree(str(tmp_path), visit)


def test_a_tree_without_end_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path)
    monkeypatch.setattr(lxcdevices, "MAX_CGROUPS", 3)
    with pytest.raises(GpushellError, match="too many cgroups"):
        lxcdevices.cgroup_tree(str(tmp_path))


def test_v1_allows_in_every_cgroup_and_denies_at_the_top(tmp_path: Path) -> None:
    make_tree(tmp_path)
    container = lxcdevices.Container(-1, str(tmp_path), v2=False)
    lxcdevices.allow("/lxc", "alice", container, NODE)
    allowed = sorted(os.path.relpath(p.parent, tmp_path) for p in tmp_path.rglob("devices.allow"))
    assert allowed == [".", "init.scope", "system.slice", "system.slice/cron.service",
                       "system.slice/ssh.service", "user.slice"]  # fmt: skip
    assert {p.read_text() for p in tmp_path.rglob("devices.allow")} == {"c 195:1 rwm"}
    lxcdevices.deny("/lxc", "alice", container, NODE)
    assert [p.parent for p in tmp_path.rglob("devices.deny")] == [tmp_path]  # the kernel passes it down
    assert (tmp_path / "devices.deny").read_text() == "c 195:1 rwm"


def test_a_deny_on_a_container_gone_meanwhile_is_nothing_to_do(tmp_path: Path) -> None:
    lxcdevices.deny("/lxc", "alice", lxcdevices.Container(-1, str(tmp_path / "gone"), v2=False), NODE)


def test_v2_rules_change_through_lxc_cgroup(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []

    def fake_run(argv: list[str], check: bool = True) -> Result:
        ran.append(argv)
        return Result(0 if "allow" in argv[-2] else 1, "", "lxc-cgroup: failed")

    monkeypatch.setattr(lxcdevices, "run", fake_run)
    container = lxcdevices.Container(-1, "/nonexistent", v2=True)
    lxcdevices.allow("/lxc", "alice", container, NODE)
    with pytest.raises(GpushellError) as caught:
        lxcdevices.deny("/lxc", "alice", container, NODE)
    assert ran == [lxcdevices.lxc_cgroup_argv("/lxc", "alice", verb, NODE) for verb in ("allow", "deny")]
    assert "lxc-cgroup" not in caught.value.user_message and "failed" in caught.value.log_message


def test_a_process_outside_any_container_is_not_taken_for_one() -> None:
    assert lxcdevices.find("alice", None) is None
    with pytest.raises(GpushellError) as caught:
        lxcdevices.find("alice", os.getpid())  # this test's own process: no lxc.payload.alice cgroup
    assert str(os.getpid()) in caught.value.log_message


def test_an_ended_init_means_a_stopped_container() -> None:
    process = subprocess.Popen(["true"])
    process.wait()
    assert lxcdevices.find("alice", process.pid) is None


# --- who holds a device: real processes with /dev/zero open -----------------------------

ZERO = os.stat("/dev/zero").st_rdev
ZERO_NODE = Node("zero-stand-in", os.major(ZERO), os.minor(ZERO))

HOLDER = """
import os, sys, threading, time, ctypes
if sys.argv[1] == "thread":  # the file in a thread's own table only: not in /proc/PID/fd
    def hold():
        assert ctypes.CDLL(None, use_errno=True).unshare(0x400) == 0  # CLONE_FILES
        os.open("/dev/zero", os.O_RDONLY)
        time.sleep(120)
    threading.Thread(target=hold, daemon=True).start()
    time.sleep(0.2)
elif sys.argv[1] == "open":
    keep = os.open("/dev/zero", os.O_RDONLY)
elif sys.argv[1] == "stubborn":
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    keep = os.open("/dev/zero", os.O_RDONLY)
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def start(processes: list[subprocess.Popen[str]], how: str) -> int:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, how], stdout=subprocess.PIPE, text=True)
    processes.append(process)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process.pid


def test_a_holder_is_found_by_its_open_file_in_any_threads_table(
    processes: list[subprocess.Popen[str]],
) -> None:
    opened, threaded, idle = (start(processes, how) for how in ("open", "thread", "idle"))
    assert lxcdevices.holds(opened, ZERO)
    assert lxcdevices.holds(threaded, ZERO)
    assert not lxcdevices.holds(idle, ZERO)
    assert not lxcdevices.holds(opened, os.makedev(195, 1))


def test_holders_are_the_cgroup_trees_processes_with_the_node(
    tmp_path: Path, processes: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    opened, idle, threaded = (start(processes, how) for how in ("open", "idle", "thread"))
    make_tree(tmp_path)
    (tmp_path / "cgroup.procs").write_text(f"{idle}\n")
    (tmp_path / "init.scope" / "cgroup.procs").write_text(f"{opened}\n{idle}\n")
    (tmp_path / "system.slice" / "ssh.service" / "cgroup.procs").write_text(f"{threaded}\n99999999\n")
    container = lxcdevices.Container(-1, str(tmp_path), v2=False)
    monkeypatch.setattr(lxcdevices, "in_tree", lambda pid, container: pid != threaded)
    assert lxcdevices.holders(container, ZERO_NODE) == [opened]  # threaded: left the tree meanwhile
    monkeypatch.setattr(lxcdevices, "in_tree", lambda pid, container: True)
    assert lxcdevices.holders(container, ZERO_NODE) == sorted([opened, threaded])


def test_a_process_is_in_the_tree_of_its_own_cgroup_and_not_of_another() -> None:
    v2 = cgroups.unified()
    own = cgroups.controller_dir(os.getpid(), "" if v2 else "devices")
    assert own is not None
    assert lxcdevices.in_tree(os.getpid(), lxcdevices.Container(-1, own, v2))
    assert not lxcdevices.in_tree(os.getpid(), lxcdevices.Container(-1, f"{own}/lxc.payload.nobody", v2))
    assert not lxcdevices.in_tree(os.getpid(), lxcdevices.Container(-1, f"{own}-sibling", v2))


# --- end_holders, on the fake backend with real processes ---------------------------------


def fake_with(pids: list[int]) -> FakeBackend:
    backend = FakeBackend(default=RUNNING)
    backend.holding[("c-ann", ZERO_NODE.name)] = pids
    return backend


def test_no_holders_means_nothing_to_end() -> None:
    backend = fake_with([])
    assert end_holders(backend, "c-ann", ZERO_NODE, grace=5) == 0
    assert backend.calls == []


def test_a_holder_that_heeds_sigterm_ends_without_a_freeze(processes: list[subprocess.Popen[str]]) -> None:
    pid = start(processes, "open")
    backend = fake_with([pid])
    assert end_holders(backend, "c-ann", ZERO_NODE, grace=5) == 1
    assert not alive(pid) and processes[0].wait() == -15
    assert backend.calls == []


def test_a_holder_that_ignores_sigterm_is_killed_frozen(processes: list[subprocess.Popen[str]]) -> None:
    polite, stubborn = start(processes, "open"), start(processes, "stubborn")
    backend = fake_with([polite, stubborn])
    assert end_holders(backend, "c-ann", ZERO_NODE, grace=0.5) == 2
    assert [process.wait() for process in processes] == [-15, -9]
    assert backend.calls == ["freeze c-ann", "unfreeze c-ann"]


def test_a_pid_the_second_scan_does_not_find_is_never_signalled(
    processes: list[subprocess.Popen[str]],
) -> None:
    pid = start(processes, "open")

    class Flickering(FakeBackend):
        """The first scan names pid, every later one finds nobody: as if pid had ended and been reused."""

        looks = 0

        def device_holders(self, name: str, node: Node) -> list[int]:
            self.looks += 1
            return [pid] if self.looks == 1 else []

    assert end_holders(Flickering(default=RUNNING), "c-ann", ZERO_NODE, grace=0.1) == 0
    assert alive(pid)


def test_a_holder_that_outlives_sigkill_is_an_error(processes: list[subprocess.Popen[str]]) -> None:
    pid = start(processes, "stubborn")

    class Stuck(FakeBackend):
        """Every scan still finds the holder (a process stuck in the driver, say)."""

        def device_holders(self, name: str, node: Node) -> list[int]:
            return [pid]

    with pytest.raises(GpushellError) as caught:
        end_holders(Stuck(default=RUNNING), "c-ann", ZERO_NODE, grace=0.1, kill_wait=0.1)
    assert "restart your container" in caught.value.user_message and str(pid) in caught.value.log_message


def test_the_fake_takes_devices_only_into_a_running_container() -> None:
    backend = FakeBackend(states={"c-ann": STOPPED, "c-bob": RUNNING})
    for name in ("c-ann", "c-bob"):
        backend.add_device(name, "/dev/nvidia1", NODE)
    assert backend.devices == {"c-bob": {"nvidia1"}}
    backend.remove_device("c-bob", NODE)
    backend.remove_device("c-bob", NODE)
    assert backend.devices == {"c-bob": set()}
    assert backend.calls[-1] == "remove-device c-bob nvidia1"
