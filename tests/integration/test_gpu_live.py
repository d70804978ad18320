"""A GPU lent to a running container and taken back, live, with stand-in device nodes.

As in test_gpus.py, the stand-ins are real character device nodes (mknod c
195 N) under the lab's root, named by the registry's `gpu_devices`.  With no
driver behind 195:N, open() tells the devices cgroup's answer: ENXIO when it
allows the numbers (the kernel looked for a driver), EPERM when it denies
them, ENOENT when the node is not there at all.

A node nobody can open cannot be held open either, so the holder test lends
a stand-in named nvidia7 that carries the numbers of /dev/net/tun (10:200):
any process may open it, it does nothing until configured, and no container
gets it at start.

Every open() inside runs twice where it matters: once from the cgroup
lxc-attach lands in (the container's top one) and once from `init.scope`
below it, where systemd keeps the container's own processes; on cgroup v1
each child cgroup has its own device list.
"""

from __future__ import annotations

import contextlib
import os
import stat
import statistics
import subprocess
import time
from collections.abc import Iterator

import pytest

from gpushell.containers.backend import end_holders
from gpushell.containers.lxc import LxcDriver
from gpushell.core.errors import GpushellError
from gpushell.gpu.gpudevices import Node

from .lab import ENV, Lab, Student, sh
from .test_gpus import stand_in_devices

ENOENT, ENXIO, EPERM = 2, 6, 1
LENT = Node("nvidia1", 195, 1)
OPENS = Node("nvidia7", 10, 200)  # /dev/net/tun's numbers: a stand-in that opens
HOLDER_MARK = "gpushell-live-holder"
HOLDER_PATTERN = "gpushell-live-holde[r]"  # matches the holders, not the shell that runs pgrep
# Move the shell into init.scope (v1: the devices hierarchy; v2: the unified one) before the command.
INTO_INIT_SCOPE = (
    "for f in /sys/fs/cgroup/devices/init.scope/cgroup.procs /sys/fs/cgroup/init.scope/cgroup.procs; "
    'do [ -e "$f" ] && echo $$ > "$f" && break; done; '
)


class Live:
    """The running container of the module's student, and the driver that changes its devices."""

    def __init__(self, lab: Lab, student: Student, dev_dir: str) -> None:
        self.lab, self.student, self.dev_dir = lab, student, dev_dir
        self.driver = LxcDriver(lab.lxcpath)
        self.name = student.container

    def source(self, node: Node) -> str:
        return f"{self.dev_dir}/{node.name}"

    def sh(self, script: str, in_init_scope: bool = False) -> str:
        """A shell command run as root inside; its output and errors, stripped."""
        prefix = INTO_INIT_SCOPE if in_init_scope else ""
        argv = ["lxc-attach", "-P", self.lab.lxcpath, "-n", self.name, "--", "sh", "-c", prefix + script]
        result = sh(argv, check=False, timeout=60)
        return (result.stdout + result.stderr).strip()

    def open_errno(self, path: str, in_init_scope: bool = False) -> str:
        script = f'open(my $f, "<", "{path}") ? print "opened" : print $!+0'
        return self.sh(f"perl -e '{script}'", in_init_scope)

    def opens_everywhere(self, path: str) -> set[str]:
        """open()'s answers from the container's top cgroup and from init.scope (one answer: agreed)."""
        return {self.open_errno(path), self.open_errno(path, in_init_scope=True)}

    def numbers(self, path: str) -> str:
        script = (
            f'my @s = lstat("{path}"); -c _ ? printf "%d:%d", $s[6] >> 8, $s[6] & 255 : print "not a device"'
        )
        return self.sh(f"perl -e '{script}'")


@pytest.fixture(scope="module")
def live(lab: Lab) -> Iterator[Live]:
    with stand_in_devices(lab) as dev_dir:
        student = lab.add_student("live", "--gpus", "0")
        try:
            driver = LxcDriver(lab.lxcpath)
            driver.start(student.container)
            wait_for_init_scope(lab, student)
            yield Live(lab, student, dev_dir)
        finally:
            sh(["lxc-stop", "-P", lab.lxcpath, "-n", student.container, "-k"], check=False)
            lab.admin("remove", student.name, "--purge", check=False)


def wait_for_init_scope(lab: Lab, student: Student) -> None:
    """Until systemd in the container has made init.scope, where the tests put their processes."""
    tops = (
        f"/sys/fs/cgroup/devices/lxc.payload.{student.container}",
        f"/sys/fs/cgroup/lxc.payload.{student.container}",
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(os.path.isdir(f"{top}/init.scope") for top in tops):
            return
        time.sleep(0.1)
    raise AssertionError("systemd in the container made no init.scope in 60 s")


@pytest.fixture
def returned(live: Live) -> Iterator[Live]:
    """The container, with LENT taken back after the test whatever it did."""
    yield live
    live.driver.remove_device(live.name, LENT)
    live.sh("rm -rf /dev/nvidia1")


def test_a_gpu_lent_live_opens_at_once_everywhere_and_goes_when_returned(returned: Live) -> None:
    live = returned
    assert live.sh("cat /proc/self/cgroup", in_init_scope=True).count("/init.scope") >= 1
    assert live.sh("test -e /dev/nvidia1 && echo present || echo absent") == "absent"
    assert live.opens_everywhere("/dev/nvidia0") == {str(ENXIO)}  # the one it got at start

    adds, removes = [], []
    for _ in range(5):
        began = time.perf_counter()
        live.driver.add_device(live.name, live.source(LENT), LENT)
        adds.append(time.perf_counter() - began)
        assert live.numbers("/dev/nvidia1") == "195:1"
        assert live.opens_everywhere("/dev/nvidia1") == {str(ENXIO)}

        live.driver.add_device(live.name, live.source(LENT), LENT)  # again: no second mount
        assert live.sh("grep -c ' /dev/nvidia1 ' /proc/self/mountinfo") == "1"
        assert live.opens_everywhere("/dev/nvidia1") == {str(ENXIO)}

        began = time.perf_counter()
        live.driver.remove_device(live.name, LENT)
        removes.append(time.perf_counter() - began)
        assert live.opens_everywhere("/dev/nvidia1") == {str(ENOENT)}
        live.driver.remove_device(live.name, LENT)  # again: nothing left to do
        assert live.opens_everywhere("/dev/nvidia0") == {str(ENXIO)}  # GPU 0 untouched throughout
    print(
        f"\nadd_device: median {statistics.median(adds) * 1000:.1f} ms, max {max(adds) * 1000:.1f} ms; "
        f"remove_device: median {statistics.median(removes) * 1000:.1f} ms, max {max(removes) * 1000:.1f} ms"
    )
    assert statistics.median(adds) < 0.150  # the budget for borrow-to-usable, all of it


def test_a_copy_container_root_made_is_denied_once_the_gpu_is_returned(returned: Live) -> None:
    live = returned
    live.driver.add_device(live.name, live.source(LENT), LENT)
    try:
        assert live.sh("touch /root/nv1 && mount --bind /dev/nvidia1 /root/nv1 && echo copied") == "copied"
        assert live.opens_everywhere("/root/nv1") == {str(ENXIO)}
        assert "Operation not permitted" in live.sh("mknod /root/nv1b c 195 1")  # no copies by mknod
        live.driver.remove_device(live.name, LENT)
        assert live.opens_everywhere("/dev/nvidia1") == {str(ENOENT)}
        assert live.opens_everywhere("/root/nv1") == {str(EPERM)}  # the same device: denied
    finally:
        live.sh("umount /root/nv1; rm -f /root/nv1 /root/nv1b")


BIND_MOUNTED = "touch /dev/nvidia1 && mount --bind /etc/hostname /dev/nvidia1"


@pytest.mark.parametrize(
    "plant",
    [
        "ln -s {host_target} /dev/nvidia1",  # a host path, as if the link were followed on the host
        "ln -s /root/planted-target /dev/nvidia1",
        "mkfifo /dev/nvidia1",
        "mkdir /dev/nvidia1",
        BIND_MOUNTED,
        f"{BIND_MOUNTED} && mount --bind /etc/hosts /dev/nvidia1",  # mounts stacked
    ],
)
def test_what_container_root_plants_at_the_name_is_replaced_never_followed(
    returned: Live, plant: str
) -> None:
    live = returned
    host_target = f"{live.lab.root}/planted-target"
    hostname = live.sh("cat /etc/hostname")
    assert live.sh(plant.format(host_target=host_target) + " && echo planted") == "planted"
    live.driver.add_device(live.name, live.source(LENT), LENT)
    assert live.numbers("/dev/nvidia1") == "195:1"
    assert live.opens_everywhere("/dev/nvidia1") == {str(ENXIO)}
    assert not os.path.lexists(host_target)
    assert live.sh("test -e /root/planted-target && echo made || echo absent") == "absent"
    assert live.sh("cat /etc/hostname") == hostname
    assert live.sh("grep -c ' /dev/nvidia1 ' /proc/self/mountinfo") == "1"  # container root's mounts gone


def test_a_full_directory_at_the_name_stops_the_add_with_a_message(returned: Live) -> None:
    live = returned
    assert live.sh("mkdir /dev/nvidia1 && touch /dev/nvidia1/keep && echo planted") == "planted"
    with pytest.raises(GpushellError) as caught:
        live.driver.add_device(live.name, live.source(LENT), LENT)
    assert "/dev/nvidia1" in caught.value.user_message and "in the way" in caught.value.user_message
    assert (
        live.lab.root not in caught.value.user_message and live.lab.lxcpath not in caught.value.user_message
    )
    assert live.sh("ls /dev/nvidia1") == "keep"  # nothing of container root's emptied
    # The node failed first, so no rule was added: a copy made earlier could not open now.
    rules = live.sh("cat /sys/fs/cgroup/devices/init.scope/devices.list 2>/dev/null || true")
    assert "195:1 " not in rules


@pytest.fixture
def opens(live: Live) -> Iterator[tuple[Live, str]]:
    """A stand-in that opens (OPENS), in a directory of its own beside the GPUs' stand-ins."""
    directory = f"{live.lab.root}/opens"
    os.mkdir(directory, 0o755)
    source = f"{directory}/{OPENS.name}"
    os.mknod(source, 0o666 | stat.S_IFCHR, os.makedev(OPENS.major, OPENS.minor))
    try:
        yield live, source
    finally:
        live.driver.remove_device(live.name, OPENS)
        os.unlink(source)
        os.rmdir(directory)


HOLD = (
    'open(my $f, "<", "/dev/nvidia7") or die "open: $!"; $SIG{TERM} = "IGNORE" if $ARGV[1]; $| = 1; '
    'if (fork) { print "held\\n"; sleep 600 } else { close $f; sleep 600 }'
)


def start_holder(live: Live, stubborn: bool, nested: bool = False) -> subprocess.Popen[str]:
    """A process inside with the node open (and a child of it without); ignoring SIGTERM if stubborn.

    nested: in a PID namespace of its own inside the container, as container root may make one.
    """
    perl = f"perl -e '{HOLD}' {HOLDER_MARK} {int(stubborn)}"
    script = INTO_INIT_SCOPE + ("exec unshare --pid --fork " if nested else "exec ") + perl
    argv = ["lxc-attach", "-P", live.lab.lxcpath, "-n", live.name, "--", "sh", "-c", script]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    return process


def test_the_processes_holding_a_returned_device_are_found_and_ended(opens: tuple[Live, str]) -> None:
    live, source = opens
    live.driver.add_device(live.name, source, OPENS)
    assert live.opens_everywhere("/dev/nvidia7") == {"opened"}
    assert live.driver.device_holders(live.name, OPENS) == []
    processes = [start_holder(live, stubborn=False), start_holder(live, stubborn=True),
                 start_holder(live, stubborn=False, nested=True)]  # fmt: skip
    try:
        holders = live.driver.device_holders(live.name, OPENS)
        assert len(holders) == 3  # the holders, not their children that closed the file
        for pid in holders:
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                assert HOLDER_MARK.encode() in stream.read()
            with open(f"/proc/{pid}/cgroup", encoding="ascii") as stream:
                assert f"lxc.payload.{live.name}/" in stream.read()
        assert live.driver.device_holders(live.name, LENT) == []  # another device: nobody

        live.driver.remove_device(live.name, OPENS)
        assert live.opens_everywhere("/dev/nvidia7") == {str(ENOENT)}
        assert live.driver.device_holders(live.name, OPENS) == holders  # an open file outlives the deny

        began = time.perf_counter()
        assert end_holders(live.driver, live.name, OPENS, grace=1.0) == 3
        print(f"\nend_holders (one stubborn, grace 1 s): {(time.perf_counter() - began) * 1000:.0f} ms")
        assert live.driver.device_holders(live.name, OPENS) == []
        assert [process.wait(timeout=30) for process in processes][:2] == [143, 137]  # TERM, KILL
        # The children that had closed the file run on (the nested one ended with its namespace).
        assert live.sh(f"pgrep -c -f '{HOLDER_PATTERN}'") == "2"
        assert end_holders(live.driver, live.name, OPENS, grace=1.0) == 0
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=30)
        live.sh(f"pkill -KILL -f '{HOLDER_PATTERN}'")


def test_a_stopped_container_has_nothing_to_add_remove_or_hold(lab: Lab, student: Student) -> None:
    driver = LxcDriver(lab.lxcpath)
    assert driver.state(student.container) == "STOPPED"
    driver.add_device(student.container, "/nonexistent/nvidia1", LENT)
    driver.remove_device(student.container, LENT)
    assert driver.device_holders(student.container, LENT) == []
