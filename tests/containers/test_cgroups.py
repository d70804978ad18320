"""cgroups: finding a container's cgroup v1 counters and turning them into CPU%."""

from __future__ import annotations

import pytest

from gpushell.containers import cgroups

PROC_CGROUP = """12:pids:/lxc.payload.alice
4:memory:/lxc.payload.alice/init.scope
3:cpu,cpuacct:/lxc.payload.alice
1:name=systemd:/lxc.payload.alice/init.scope
0::/lxc.payload.alice
"""


def test_controller_path_finds_joined_and_single_controllers() -> None:
    assert cgroups.controller_path(PROC_CGROUP, "memory") == "/lxc.payload.alice/init.scope"
    assert cgroups.controller_path(PROC_CGROUP, "cpuacct") == "/lxc.payload.alice"
    assert cgroups.controller_path(PROC_CGROUP, "blkio") is None
    assert cgroups.controller_path(PROC_CGROUP, "systemd") is None  # name=systemd is not it


@pytest.mark.parametrize(
    ("path", "level"),
    [
        ("/lxc.payload.alice/init.scope", "/lxc.payload.alice"),
        ("/machine/lxc.payload.bob/system.slice/ssh.service", "/machine/lxc.payload.bob"),
        ("/lxc.payload.alice", "/lxc.payload.alice"),
        ("/other/group", "/other/group"),
    ],
)
def test_container_level_cuts_below_the_payload(path: str, level: str) -> None:
    assert cgroups.container_level(path) == level


def test_cpu_percent_is_relative_to_one_cpu() -> None:
    assert cgroups.cpu_percent(1_000_000_000, 1_100_000_000, 0.2) == pytest.approx(50.0)
    assert cgroups.cpu_percent(0, 400_000_000, 0.2) == pytest.approx(200.0)
    assert cgroups.cpu_percent(None, 5, 0.2) is None
    assert cgroups.cpu_percent(5, 5, 0.0) is None
    assert cgroups.cpu_percent(10, 5, 0.2) == 0.0  # a counter reset is not negative use


def test_read_counter(tmp_path: pytest.TempPathFactory) -> None:
    directory = str(tmp_path)
    with open(f"{directory}/memory.usage_in_bytes", "w") as stream:
        stream.write("123456\n")
    with open(f"{directory}/broken", "w") as stream:
        stream.write("max\n")
    assert cgroups.read_counter(directory, "memory.usage_in_bytes") == 123456
    assert cgroups.read_counter(directory, "broken") is None
    assert cgroups.read_counter(directory, "missing") is None


def _write(directory, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


# Recorded from this host's cgroup v1 files for a running container, and
# from a Debian 12 host's v2 files (unified hierarchy), trimmed.
V1_MEMORY = {
    "memory.usage_in_bytes": "52719616\n",
    "memory.limit_in_bytes": "134217728\n",
    "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
}


def test_usage_on_cgroup_v1_reads_each_controller(tmp_path) -> None:
    _write(tmp_path / "memory" / "lxc.payload.alice", V1_MEMORY)
    _write(tmp_path / "pids" / "lxc.payload.alice", {"pids.current": "17\n", "pids.max": "4096\n"})
    _write(
        tmp_path / "cpu,cpuacct" / "lxc.payload.alice",
        {"cpuacct.usage": "9000000000\n", "cpu.cfs_quota_us": "150000\n", "cpu.cfs_period_us": "100000\n"},
    )
    assert cgroups.usage_in(PROC_CGROUP, root=str(tmp_path)) == {
        "cpu_ns": 9_000_000_000,
        "memory_bytes": 52719616,
        "memory_limit_bytes": 134217728,
        "oom_kills": 3,
        "pids": 17,
        "pids_limit": 4096,
        "cpu_limit_millis": 1500,
    }


def test_usage_on_cgroup_v2_reads_the_unified_files(tmp_path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    _write(
        tmp_path / "lxc.payload.bob",
        {
            "memory.current": "1048576\n",
            "memory.max": "max\n",
            "memory.events": "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
            "pids.current": "5\n",
            "pids.max": "max\n",
            "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
            "cpu.max": "50000 100000\n",
        },
    )
    found = cgroups.usage_in("0::/lxc.payload.bob/init.scope\n", root=str(tmp_path))
    # `max` is no limit: left out rather than shown as a number.
    assert found == {"cpu_ns": 2_500_000_000, "memory_bytes": 1048576, "oom_kills": 1, "pids": 5,
                     "cpu_limit_millis": 500}  # fmt: skip


def test_no_limit_and_nonsense_are_left_out() -> None:
    assert cgroups.number_in("9223372036854771712\n") is None  # v1's "no limit"
    assert cgroups.number_in("max\n") is None
    assert cgroups.number_in("-1\n") is None
    assert cgroups.number_in("a 1\nb 2\n", "b") == 2
    assert cgroups.number_in("a 1\n", "b") is None
    assert cgroups.cpu_limit_millis("-1", "100000") is None
    assert cgroups.cpu_limit_millis("max", "100000") is None
