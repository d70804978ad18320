"""Limits on real containers: in the kernel's cgroups by default and after `set`, and what they stop.

A memory hog and a fork bomb in one student's container are stopped there
while a neighbour keeps running and the host still forks; container root
cannot raise its own limits; a CPU quota holds a busy loop to its share;
busy containers leave a host process its CPU (their weight).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import time
from collections.abc import Iterator

import pytest

from gpushell.containers import cgroups
from gpushell.core import kernelpools
from gpushell.system import sysctl
from tests.system.test_signalpool import may_raise_hard_limits

from .lab import Lab, Student, sh

GIB = 2**30


def attach(lab: Lab, student: Student, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--clear-env", "--", *argv]
    return sh(command, check=False, timeout=timeout)


def cgroup_file(lab: Lab, student: Student, controller: str, name: str) -> str:
    directory = cgroups.controller_dir(lab.init_pid(student), controller)
    assert directory is not None and directory.endswith(f"lxc.payload.{student.container}"), directory
    with open(f"{directory}/{name}", encoding="ascii") as stream:
        return stream.read().strip()


def started(lab: Lab, student: Student) -> None:
    result = lab.ssh(student, "start")
    assert result.returncode == 0, result.stdout + result.stderr
    assert lab.state(student) == "RUNNING"


def restart(lab: Lab, student: Student) -> None:
    result = lab.ssh(student, "restart")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def neighbour(lab: Lab) -> Iterator[Student]:
    """A second, running student whose container must not notice the first one's trouble."""
    made = lab.add_student(f"n{len(lab.students)}")
    try:
        started(lab, made)
        yield made
    finally:
        lab.admin("remove", made.name, "--purge", check=False)


def test_a_new_container_has_the_finite_default_limits(lab: Lab, student: Student) -> None:
    started(lab, student)
    assert int(cgroup_file(lab, student, "memory", "memory.limit_in_bytes")) == 8 * GIB
    assert int(cgroup_file(lab, student, "memory", "memory.memsw.limit_in_bytes")) == 16 * GIB
    assert cgroup_file(lab, student, "pids", "pids.max") == "4096"
    assert cgroup_file(lab, student, "cpu", "cpu.cfs_quota_us") == "400000"
    assert cgroup_file(lab, student, "cpu", "cpu.cfs_period_us") == "100000"
    assert cgroup_file(lab, student, "cpu", "cpu.shares") == "128"
    listed = {row["user"]: row for row in json.loads(lab.admin("list", "--json").stdout)["users"]}
    assert listed[student.name]["limits"] == {
        "memory_bytes": 8 * GIB,
        "cpus": 4.0,
        "pids": 4096,
        "disk_bytes": 50 * GIB,
    }


def test_set_changes_the_limits_at_the_next_start(lab: Lab, student: Student) -> None:
    started(lab, student)
    result = lab.admin("set", student.name, "memory=256M", "cpus=0.5", "pids=200")
    assert "takes effect at the container's next start" in result.stdout, result.stdout
    # Running on with the old limits until it restarts, as `set` said.
    assert int(cgroup_file(lab, student, "memory", "memory.limit_in_bytes")) == 8 * GIB
    restart(lab, student)
    assert int(cgroup_file(lab, student, "memory", "memory.limit_in_bytes")) == 256 * 2**20
    assert int(cgroup_file(lab, student, "memory", "memory.memsw.limit_in_bytes")) == 512 * 2**20
    assert cgroup_file(lab, student, "cpu", "cpu.cfs_quota_us") == "50000"
    assert cgroup_file(lab, student, "pids", "pids.max") == "200"
    status = lab.ssh(student, "status")
    assert status.returncode == 0, status.stderr
    assert "(at most 0.5 CPUs)" in status.stdout and " MiB of 256 MiB" in status.stdout, status.stdout
    assert " of 200" in status.stdout, status.stdout


def test_container_root_cannot_raise_its_own_limits(lab: Lab, student: Student) -> None:
    lab.admin("set", student.name, "memory=256M", "pids=100")
    started(lab, student)
    # Container root sees its own memory and pids cgroups at the top of its
    # cgroup namespace (the cpu hierarchy, here, not at all).
    for name, value in (("memory.limit_in_bytes", "-1"), ("pids.max", "max"), ("cpu.cfs_quota_us", "-1")):
        found = attach(lab, student, "sh", "-c", f"ls /sys/fs/cgroup/*/{name}").stdout.split()
        assert found or name.startswith("cpu."), f"{name} is not visible inside"
        for path in found:
            tried = attach(lab, student, "sh", "-c", f"echo {value} > {path}")
            assert tried.returncode != 0, f"container root wrote {path}"
    assert int(cgroup_file(lab, student, "memory", "memory.limit_in_bytes")) == 256 * 2**20
    assert cgroup_file(lab, student, "pids", "pids.max") == "100"
    assert cgroup_file(lab, student, "cpu", "cpu.cfs_quota_us") == "400000"


def test_a_memory_hog_is_killed_in_its_own_container(lab: Lab, student: Student, neighbour: Student) -> None:
    lab.admin("set", student.name, "memory=128M")
    started(lab, student)
    neighbour_init = lab.init_pid(neighbour)
    # `tail` keeps a line that never ends in memory: it grows until something stops it.
    hog = attach(lab, student, "timeout", "120", "tail", "/dev/zero", timeout=150)
    assert hog.returncode == 137, (hog.returncode, hog.stderr)  # SIGKILL from the OOM killer
    assert int(cgroup_file(lab, student, "memory", "memory.max_usage_in_bytes")) <= 128 * 2**20
    assert lab.state(student) == "RUNNING"
    assert lab.state(neighbour) == "RUNNING" and lab.init_pid(neighbour) == neighbour_init
    status = lab.ssh(student, "status")
    assert "Out of memory:   1 process was killed at your memory limit" in status.stdout, status.stdout


def test_a_fork_bomb_stays_inside_its_pids_limit(lab: Lab, student: Student, neighbour: Student) -> None:
    lab.admin("set", student.name, "pids=64", "cpus=0.5")
    started(lab, student)
    try:
        # A real fork bomb, left running: only stopping the container ends it.
        bomb = "bomb() { bomb | bomb & }; bomb"
        subprocess.run(
            ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--clear-env", "--",
             "setsid", "-f", "bash", "-c", bomb],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            check=False, timeout=30,
        )  # fmt: skip
        time.sleep(3)
        assert int(cgroup_file(lab, student, "pids", "pids.current")) <= 64
        assert int(cgroup_file(lab, student, "pids", "pids.events").split()[-1]) > 0  # forks were refused
        # The host and the neighbour still fork.
        for _ in range(20):
            assert subprocess.run(["/bin/true"], check=False).returncode == 0
        assert attach(lab, neighbour, "true").returncode == 0
        assert (
            lab.ssh(neighbour, "hostname", port=neighbour.port, timeout=30).stdout.strip()
            == neighbour.container
        )
    finally:
        sh(["lxc-stop", "-P", lab.lxcpath, "-n", student.container, "-k"], check=False, timeout=60)


def spinning(lab: Lab, student: Student, loops: int, seconds: int) -> subprocess.Popen[bytes]:
    """`loops` busy loops in the container, each ending after `seconds`; the whole runs on meanwhile."""
    spin = f"for i in $(seq {loops}); do timeout {seconds} sh -c 'while :; do :; done' & done; wait"
    return subprocess.Popen(
        ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--clear-env", "--", "sh", "-c", spin]
    )


def test_a_cpu_quota_holds_a_busy_loop_to_its_share(lab: Lab, student: Student) -> None:
    lab.admin("set", student.name, "cpus=0.5")
    started(lab, student)
    runner = spinning(lab, student, 2, 6)  # two could take both of this host's CPUs
    try:
        time.sleep(1)
        before, began = int(cgroup_file(lab, student, "cpuacct", "cpuacct.usage")), time.monotonic()
        time.sleep(3)
        used = (int(cgroup_file(lab, student, "cpuacct", "cpuacct.usage")) - before) / 1e9
        share = used / (time.monotonic() - began)
        assert 0.3 < share < 0.65, share
    finally:
        runner.wait(30)


def test_busy_containers_leave_a_host_process_its_cpu(lab: Lab, student: Student, neighbour: Student) -> None:
    # Two containers spin on every CPU.  At a host process's own weight, a
    # spinning host process gets about two thirds of a CPU here (0.68 measured);
    # at an eighth of it, all of one (1.01).
    started(lab, student)
    assert cgroup_file(lab, neighbour, "cpu", "cpu.shares") == "128"
    spinners = [spinning(lab, who, os.cpu_count() or 1, 8) for who in (student, neighbour)]
    try:
        time.sleep(1.5)
        host = subprocess.run(
            ["python3", "-c", "import time\nend = time.monotonic() + 4\nwhile time.monotonic() < end: pass\n"
             "print(time.process_time())"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        share = float(host.stdout) / 4
        assert share > 0.85, f"the host process got {share:.2f} of a CPU"
    finally:
        for spinner in spinners:
            spinner.wait(30)


INSTANCES = "fs.inotify.max_user_instances"


def inotify_works(lab: Lab, student: Student) -> bool:
    """Whether a new inotify instance can be made in the container: GNU `tail -f` says when it cannot
    ("inotify cannot be used, reverting to polling")."""
    result = attach(lab, student, "timeout", "1", "tail", "-f", "/etc/hostname")
    assert result.returncode == 124, result.stderr  # tail ran until timeout ended it
    return "reverting to polling" not in result.stderr


def hold_inotify(lab: Lab, student: Student, count: int) -> int:
    """count more `tail -f`s left running in the container, an inotify instance each; how many it holds."""
    attach(
        lab, student, "sh", "-c", f"for i in $(seq {count}); do tail -f /etc/hostname >/dev/null 2>&1 & done"
    )
    held = attach(lab, student, "sh", "-c", "sleep 1; ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c inotify")
    return int(held.stdout)


@contextlib.contextmanager
def pool_at(lab: Lab, student: Student, key: str, size: int) -> Iterator[None]:
    """The host's pool `key` at the kernel's size (doctor fails it) and the student's container
    running while the block runs; after it, the container stopped (what it held with it) and
    the pool as large as it was or as apply made it."""
    (saved,) = sysctl.read([key]).values()
    try:
        sysctl.write(key, size)
        doctor = lab.admin("doctor", check=False)
        assert f"FAIL: {key} is {size}, below " in doctor.stdout, doctor.stdout
        started(lab, student)
        yield
    finally:
        lab.ssh(student, "stop")
        sysctl.write(key, max(saved, sysctl.read([key])[key]))


def apply_raises(lab: Lab, key: str, size: int) -> None:
    applied = lab.admin("apply")
    raised = f"done: raise the kernel pools every container shares: {key} is {size}"
    assert raised in applied.stdout, applied.stdout


def test_one_container_cannot_take_the_inotify_pool_every_container_shares(
    lab: Lab, student: Student, neighbour: Student
) -> None:
    # As the kernel leaves it: 128 instances for every container's root together.
    with pool_at(lab, student, INSTANCES, 128):
        hold_inotify(lab, student, 150)
        assert not inotify_works(lab, neighbour)  # the harm is real at the kernel's default
        apply_raises(lab, INSTANCES, 128)
        assert sysctl.read([INSTANCES])[INSTANCES] > 1000000
        assert inotify_works(lab, neighbour)
        assert hold_inotify(lab, student, 300) > 3 * 128  # far past the old pool, its own processes only
        assert inotify_works(lab, neighbour)
        healthy = lab.admin("doctor", check=False).stdout
        assert "ok: the kernel pools every container shares are as large as the host needs" in healthy


def pty_works(lab: Lab, student: Student) -> bool:
    """Whether a pseudo-terminal can be had in the container (what an ssh session with a terminal,
    tmux or a notebook's terminal needs): `script` makes one, or says it failed to."""
    result = attach(lab, student, "script", "-qc", "true", "/dev/null")
    assert result.returncode == 0 or "failed to create pseudo-terminal" in result.stderr, result.stderr
    return result.returncode == 0


@contextlib.contextmanager
def held_in(lab: Lab, student: Student, *argv: str, holders: int = 1) -> Iterator[int]:
    """argv in the container, whose holders each print how many of something they got, then hold
    them until stdin closes (the end of the block); how many in all."""
    command = ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--clear-env", "--", *argv]
    holder = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        yield sum(int(holder.stdout.readline()) for _ in range(holders))
    finally:
        holder.stdin.close()  # their end, and what they held with it
        holder.wait(60)


@contextlib.contextmanager
def holding_ptys(lab: Lab, student: Student, count: int) -> Iterator[int]:
    """Up to count ptys held in the container while the block runs, from a devpts instance its root
    mounted itself (none of the `max` LXC gives /dev/pts); how many it got."""
    script = (
        f"ulimit -n {count + 64} && mkdir -p /tmp/ptys && "
        "mount -t devpts -o newinstance,ptmxmode=0666 devpts /tmp/ptys && "
        f"for i in $(seq {count}); do exec {{fd}}<>/tmp/ptys/ptmx || break; done 2>/dev/null; "
        "ls /tmp/ptys | grep -c '^[0-9]'; read -r _"
    )
    try:
        with held_in(lab, student, "bash", "-c", script) as held:
            yield held
    finally:
        attach(lab, student, "umount", "/tmp/ptys")


def test_one_container_cannot_take_the_pty_pool_every_container_shares(
    lab: Lab, student: Student, neighbour: Student
) -> None:
    # As the kernel leaves it: 4096, less 1024 kept for the host's own terminals.
    with pool_at(lab, student, kernelpools.PTYS, 4096):
        with holding_ptys(lab, student, 3500) as held:
            assert held < 3072
            assert not pty_works(lab, neighbour)  # the harm is real at the kernel's default
        apply_raises(lab, kernelpools.PTYS, 4096)
        assert sysctl.read([kernelpools.PTYS])[kernelpools.PTYS] == 2**20
        with holding_ptys(lab, student, 3500) as held:
            assert held == 3500  # far past the old pool
            assert pty_works(lab, neighbour)


# Open files until the kernel refuses (the process's limit, or the host's pool); print how many,
# then hold them until stdin closes.
HOLD_FILES = """
$| = 1;
my @held;
while (open(my $file, "<", "/etc/hostname")) { push @held, $file; }
print scalar(@held), "\\n";
<STDIN>;
"""


def holding_files(lab: Lab, student: Student, processes: int) -> contextlib.AbstractContextManager[int]:
    """That many processes in the container, each holding all the open files its limit allows, while
    the block runs; how many in all."""
    # A background job's stdin is /dev/null unless given: each holder gets the pipe, to wait on.
    spawn = 'exec 3<&0; for i in $(seq "$1"); do perl -e "$0" <&3 & done; wait'
    return held_in(lab, student, "bash", "-c", spawn, HOLD_FILES, str(processes), holders=processes)


def files_open(lab: Lab, student: Student) -> bool:
    """Whether a process in the container can open a file."""
    result = attach(lab, student, "cat", "/etc/hostname")
    return result.returncode == 0 and result.stdout.strip() != ""


def test_one_container_cannot_take_the_open_files_every_container_shares(
    lab: Lab, student: Student, neighbour: Student
) -> None:
    kernels = sysctl.host_memory() // 1024 // 10  # the kernel's own size: a tenth of memory in KiB
    with pool_at(lab, student, kernelpools.FILES, kernels):
        per_process = int(attach(lab, student, "bash", "-c", "ulimit -Sn").stdout)
        processes = kernels // per_process + 10
        with holding_files(lab, student, processes) as held:
            assert kernels - 100000 < held <= kernels
            assert not files_open(lab, neighbour)  # the harm is real at the kernel's size
        apply_raises(lab, kernelpools.FILES, kernels)
        with holding_files(lab, student, processes) as held:
            assert held > kernels  # past the old pool, each process at its own limit
            assert files_open(lab, neighbour)


# io_setup(2) by number (perl-base has no syscall.ph either).
IO_SETUP = {"x86_64": 206, "aarch64": 0}[platform.machine()]
AIO_CONTEXT = 4096  # events asked of each io_setup
# Take up to $ARGV[0] events of the host's aio pool in contexts of AIO_CONTEXT; print how many
# it got, then, with $ARGV[1], hold them until stdin closes.
TAKE_AIO = f"""
$| = 1;
my ($count, $hold) = @ARGV;
my $taken = 0;
while ($taken < $count) {{
    my $context = pack("Q", 0);
    last if syscall({IO_SETUP}, 0 + {AIO_CONTEXT}, $context) != 0;
    $taken += {AIO_CONTEXT};
}}
print "$taken\\n";
<STDIN> if $hold;
"""


def aio_works(lab: Lab, student: Student) -> bool:
    """Whether one io_setup of AIO_CONTEXT events succeeds in the container."""
    result = attach(lab, student, "perl", "-e", TAKE_AIO, "1", "")
    assert result.returncode == 0, result.stderr
    return int(result.stdout) > 0


def test_one_container_cannot_take_the_aio_pool_every_container_shares(
    lab: Lab, student: Student, neighbour: Student
) -> None:
    with pool_at(lab, student, kernelpools.AIO, 65536):  # the kernel's default, for the whole host
        with held_in(lab, student, "perl", "-e", TAKE_AIO, "70000", "hold") as held:
            assert 65536 - 2 * AIO_CONTEXT <= held <= 65536
            assert not aio_works(lab, neighbour)  # the harm is real at the kernel's default
        apply_raises(lab, kernelpools.AIO, 65536)
        with held_in(lab, student, "perl", "-e", TAKE_AIO, "200000", "hold") as held:
            assert held >= 200000  # three times the old pool
            assert aio_works(lab, neighbour)


# rt_sigqueueinfo(2) by number: perl-base, in the template, has no syscall.ph.  (`0 +`: perl's
# syscall passes a scalar as an int only where it holds a number.)
RT_SIGQUEUEINFO = {"x86_64": 129, "aarch64": 138}[platform.machine()]
# Queue up to $ARGV[0] real-time signals to itself, blocked so they stay queued;
# print how many the kernel took, then, with $ARGV[1], hold them until stdin closes.
QUEUE_SIGNALS = f"""
use POSIX;
$| = 1;
my ($count, $hold) = @ARGV;
my $sig = 40;
sigprocmask(SIG_BLOCK, POSIX::SigSet->new($sig)) or die "sigprocmask: $!";
my $queued = 0;
while ($queued < $count) {{
    last if syscall({RT_SIGQUEUEINFO}, 0 + $$, 0 + $sig, pack("iii", $sig, 0, -1) . ("\\0" x 116)) != 0;
    $queued++;
}}
print "$queued\\n";
<STDIN> if $hold;
"""


def queue_signals(lab: Lab, student: Student, count: int) -> int:
    """How many of count queued signals one process in the container gets queued (none left after)."""
    result = attach(lab, student, "perl", "-e", QUEUE_SIGNALS, str(count), "")
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def holding_signals(lab: Lab, student: Student, count: int) -> contextlib.AbstractContextManager[int]:
    """A process in the container holding up to count queued signals while the block runs; how many."""
    return held_in(lab, student, "perl", "-e", QUEUE_SIGNALS, str(count), "hold")


def started_raw(lab: Lab, student: Student, sigpending: int) -> None:
    """The container stopped, then started by lxc-start itself, with that soft RLIMIT_SIGPENDING."""
    lab.ssh(student, "stop")
    sh(["prlimit", f"--sigpending={sigpending}:", "lxc-start", "-P", lab.lxcpath, "-n", student.container])
    sh(["lxc-wait", "-P", lab.lxcpath, "-n", student.container, "-s", "RUNNING", "-t", "30"])


def test_a_container_gets_its_own_pool_of_queued_signals(
    lab: Lab, student: Student, neighbour: Student
) -> None:
    """A container's user namespace takes its queued-signal pool from the process that starts it,
    and every container's queued signals count against host root's one count.  gpushell starts
    containers with that pool widened as far as root may: beyond what memory could fill with
    CAP_SYS_RESOURCE, up to root's hard limit without it (this machine).  Here the helper is made to
    run with a small soft limit, so the difference shows on a few hundred signals."""
    small = 200
    try:
        # The harm at a small pool: two containers started with it, one takes it all.
        started_raw(lab, student, small)
        started_raw(lab, neighbour, small)
        with holding_signals(lab, student, 1000) as held:
            assert 0 < held <= small
            assert queue_signals(lab, neighbour, 10) < 10
        # The same two started by gpushell's helper, which runs with that small soft limit.
        lab.stop_helper_server()
        lab.start_helper_server(prefix=("prlimit", f"--sigpending={small}:"))
        for each in (student, neighbour):
            lab.ssh(each, "stop")
            started(lab, each)
        with holding_signals(lab, student, 1000) as held:
            assert held == 1000
            assert queue_signals(lab, neighbour, 100) == 100
        # What doctor says of the pool: the one a start gets here (doctor runs with the test's limits).
        wanted = kernelpools.signals_wanted(sysctl.host_memory())
        if may_raise_hard_limits():
            expected = (
                f"ok: each container gets a pool of {wanted} queued signals, more than memory could fill"
            )
        else:
            hard = resource.getrlimit(resource.RLIMIT_SIGPENDING)[1]
            expected = (
                f"warning: each container gets a pool of {hard} queued signals (root's RLIMIT_SIGPENDING)"
            )
        assert expected in lab.admin("doctor", check=False).stdout
    finally:
        lab.stop_helper_server()
        lab.start_helper_server()
