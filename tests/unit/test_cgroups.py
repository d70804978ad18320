"""cgroups: finding a container's cgroup v1 counters and turning them into CPU%."""

from __future__ import annotations

import pytest

from gpushell import cgroups

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
