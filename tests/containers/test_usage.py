"""usage: a container's CPU time, memory and disk, each left out when unknown."""

from __future__ import annotations

import ipaddress
import os

import pytest

from gpushell.containers import cgroups, diskcount, usage
from gpushell.core.model import Registry, User
from gpushell.system import rootfs
from tests.fakes import INIT_PID, FakeBackend

USER = User("ann", 22001, ipaddress.IPv4Address("10.0.3.2"), 1065536, "c-ann", "none", ())


@pytest.fixture
def reg(tmp_path):
    return Registry(
        "/etc/gpushell.yaml", "gpu1", "lxcbr0", ipaddress.IPv4Network("10.0.3.0/24"), (22001, 22999),
        "tpl", str(tmp_path / "lxc"), "GPUSHELL", 1000000, 65536, "none", (), 60.0, 3600, True, {"ann": USER},
    )  # fmt: skip


@pytest.fixture
def root(tmp_path, reg):
    path = tmp_path / "lxc" / "c-ann" / "rootfs"
    (path / "home" / "ann").mkdir(parents=True)
    (path / "home" / "ann" / "data").write_bytes(os.urandom(256 * 1024))
    return path


@pytest.fixture
def record(tmp_path):
    return str(tmp_path / "disk-ann.count")


@pytest.fixture
def big_host_file(tmp_path):
    path = tmp_path / "host-big"
    path.write_bytes(os.urandom(4 * 1024 * 1024))
    return path


def backend(reg: Registry, state: str) -> FakeBackend:
    """The fake backend over the fixture's lxcpath: its rootfs is the one measured."""
    return FakeBackend(default=state, lxcpath=reg.lxcpath)


def test_a_stopped_container_has_only_its_disk(reg, record, root, monkeypatch):
    driver = backend(reg, "STOPPED")
    monkeypatch.setattr(cgroups, "read_usage", lambda pid: pytest.fail("a stopped container has no cgroup"))
    found = usage.container_usage(reg, USER, driver, record)
    assert list(found) == ["disk_bytes"]
    assert found["disk_bytes"] == rootfs.tree_size(str(root))
    assert 256 * 1024 <= found["disk_bytes"] < 256 * 1024 + 64 * 4096


def test_disk_never_counts_a_linked_host_tree_and_hard_links_once(reg, record, root, big_host_file):
    before = usage.container_usage(reg, USER, backend(reg, "STOPPED"), record)["disk_bytes"]
    os.symlink(big_host_file, root / "home" / "ann" / "host-file")
    os.symlink(big_host_file.parent, root / "home" / "ann" / "host-dir")
    os.symlink("/", root / "root-link")
    os.link(root / "home" / "ann" / "data", root / "home" / "ann" / "data-again")
    diskcount.forget(record)  # counted afresh, not the count remembered a moment ago
    after = usage.container_usage(reg, USER, backend(reg, "STOPPED"), record)["disk_bytes"]
    assert after == rootfs.tree_size(str(root))
    assert after - before < 64 * 1024  # a few link inodes, not 4 MiB, not another 256 KiB


def test_a_running_container_has_its_cgroup_numbers_from_its_init(reg, record, root, monkeypatch):
    asked: list[int] = []
    measured = {"cpu_ns": 7_000_000_000, "memory_bytes": 512 * 1024 * 1024, "oom_kills": 2}
    monkeypatch.setattr(cgroups, "read_usage", lambda pid: asked.append(pid) or measured)
    found = usage.container_usage(reg, USER, backend(reg, "RUNNING"), record)
    assert asked == [INIT_PID]
    assert found == {**measured, "disk_bytes": rootfs.tree_size(str(root))}


def test_no_init_pid_means_no_cgroup_numbers(reg, record, root, monkeypatch):
    driver = backend(reg, "RUNNING")
    monkeypatch.setattr(driver, "info", lambda name: ("RUNNING", None))  # LXC could not say (parse_info)
    assert list(usage.container_usage(reg, USER, driver, record)) == ["disk_bytes"]


def test_a_missing_rootfs_has_no_disk_number(reg, record, monkeypatch):
    assert usage.container_usage(reg, USER, backend(reg, "MISSING"), record) == {}


def test_tree_size_stops_at_its_depth_bound(tmp_path):
    top = tmp_path / "deep"
    path = top
    for _ in range(rootfs.MAX_TREE_DEPTH + 5):
        path = path / "d"
    path.mkdir(parents=True)
    (path / "bottom").write_bytes(os.urandom(8 * 1024 * 1024))
    # The directories down to the bound, not the file below it.
    assert rootfs.tree_size(str(top)) < 8 * 1024 * 1024
    (top / "beside").write_bytes(os.urandom(8 * 1024 * 1024))
    assert rootfs.tree_size(str(top)) >= 8 * 1024 * 1024
