"""driverhook: the remount flags, and which targets the hook mounts on in a stand-in rootfs.

The mount itself needs LXC's namespaces; tests/integration/test_drivers.py
runs the installed hook in real containers.  Here `bind_read_only` is
replaced by a recorder, and the rootfs side (made, refused, cleaned) is real.
"""

from __future__ import annotations

import os

import pytest

from gpushell.core.errors import GpushellError
from gpushell.gpu import driverhook

LIB = "usr/lib/x86_64-linux-gnu"
VERSION = "550.54.14"


def test_remount_keeps_locked_flags_and_adds_read_only():
    base = driverhook.MS_REMOUNT | driverhook.MS_BIND | driverhook.MS_RDONLY
    assert driverhook.remount_flags(0) == base
    flags = driverhook.remount_flags(os.ST_NOSUID | os.ST_NODEV | os.ST_RELATIME)
    assert flags == base | driverhook.MS_NOSUID | driverhook.MS_NODEV | driverhook.MS_RELATIME
    assert driverhook.remount_flags(os.ST_NOEXEC) & driverhook.MS_NOEXEC


@pytest.fixture
def host(tmp_path):
    root = tmp_path / "host"
    (root / LIB).mkdir(parents=True)
    (root / "proc/driver/nvidia").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text(
        f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {VERSION}  x\n"
    )
    (root / LIB / f"libcuda.so.{VERSION}").write_text("cuda\n")
    os.symlink(f"libcuda.so.{VERSION}", root / LIB / "libcuda.so.1")
    return root


@pytest.fixture
def mounted(monkeypatch):
    calls: list[tuple[str, str]] = []

    def record(source: str, dir_fd: int, name: str) -> None:
        assert os.path.isfile(f"/proc/self/fd/{dir_fd}/{name}")
        calls.append((source, name))

    monkeypatch.setattr(driverhook, "bind_read_only", record)
    return calls


def test_hook_makes_targets_and_removes_an_older_drivers_placeholders(tmp_path, host, mounted):
    container = tmp_path / "rootfs"
    (container / LIB).mkdir(parents=True)
    (container / LIB / "libcuda.so.535.183.01").write_text("")  # placeholder of the last driver
    (container / LIB / "libnvidia-ml.so.535.183.01").write_text("real file\n")
    assert driverhook.mount_driver(str(host), str(container)) == (VERSION, 2)
    assert sorted(mounted) == [
        (f"{host}/{LIB}/libcuda.so.{VERSION}", "libcuda.so.1"),
        (f"{host}/{LIB}/libcuda.so.{VERSION}", f"libcuda.so.{VERSION}"),
    ]
    assert sorted(os.listdir(container / LIB)) == [
        "libcuda.so.1",
        f"libcuda.so.{VERSION}",
        "libnvidia-ml.so.535.183.01",
    ]


@pytest.mark.parametrize("planted", [f"{LIB}/libcuda.so.1", "usr/lib"])
def test_hook_refuses_a_link_at_a_target_and_touches_nothing_outside(tmp_path, host, mounted, planted):
    container = tmp_path / "rootfs"
    (container / LIB).mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "x86_64-linux-gnu").mkdir(parents=True)
    canary = outside / "canary"
    canary.write_text("host\n")
    if planted == "usr/lib":
        os.rename(container / LIB, tmp_path / "moved")
        os.rmdir(container / "usr/lib")
        os.symlink(outside, container / "usr/lib")
    else:
        os.symlink(canary, container / planted)
    with pytest.raises(GpushellError) as caught:
        driverhook.mount_driver(str(host), str(container))
    assert "link" in caught.value.log_message
    assert all(not name.endswith(".so.1") for _, name in mounted)
    assert canary.read_text() == "host\n"
    assert sorted(os.listdir(outside)) == ["canary", "x86_64-linux-gnu"]
    assert os.listdir(outside / "x86_64-linux-gnu") == []


def test_hook_needs_its_root_and_the_rootfs(monkeypatch, capsys):
    monkeypatch.delenv("LXC_ROOTFS_MOUNT", raising=False)
    assert driverhook.main(["/"]) == 2
    monkeypatch.setenv("LXC_ROOTFS_MOUNT", "/nonexistent-rootfs")
    assert driverhook.main([]) == 2
    assert "usage" in capsys.readouterr().out
