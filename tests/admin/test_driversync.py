"""driver sync: which containers it picks (pure), and when it refuses."""

from __future__ import annotations

import ipaddress
import os
import stat
import tracemalloc

import pytest

from gpushell.admin import driversync
from gpushell.containers.backend import RUNNING, STOPPED
from gpushell.core.errors import GpushellError
from gpushell.core.model import Registry, User
from gpushell.system import rootfs

HOST = "550.54.14"


def registry(driver: str = "container", installer: str = "") -> Registry:
    def user(name: str, index: int, gpus: object) -> User:
        ip = ipaddress.IPv4Address(f"10.0.3.{index + 2}")
        return User(name, 22001 + index, ip, 1065536 * (index + 1), f"c-{name}", gpus, ())  # type: ignore[arg-type]

    users = {"ann": user("ann", 0, "all"), "bob": user("bob", 1, (0,)), "cat": user("cat", 2, "none")}
    users["dan"] = user("dan", 3, "all")
    return Registry(
        "/etc/gpushell.yaml", "gpu1", "lxcbr0", ipaddress.IPv4Network("10.0.3.0/24"), (22001, 22999),
        "tpl", "/var/lib/lxc", "GPUSHELL", 1000000, 65536, "none", (), 60.0, 3600, True,
        users, driver=driver, driver_installer=installer,
    )  # fmt: skip


VERSIONS = {
    "c-ann": frozenset({HOST}),  # matches
    "c-bob": frozenset({"535.183.01"}),  # older
    "c-cat": frozenset(),  # no GPU: never
    # c-dan: no driver at all
}


def names(users):
    return [user.name for user in users]


def test_sync_picks_only_gpu_containers_whose_driver_differs():
    assert names(driversync.select(registry(), HOST, VERSIONS, [])) == ["bob", "dan"]
    assert names(driversync.select(registry(), HOST, VERSIONS, ["dan"])) == ["dan"]
    assert names(driversync.select(registry(), HOST, VERSIONS, ["ann", "cat"])) == []
    both = {**VERSIONS, "c-bob": frozenset({HOST}), "c-dan": frozenset({HOST})}
    assert driversync.select(registry(), HOST, both, []) == []


@pytest.mark.parametrize(
    ("reg", "host", "wanted", "message"),
    [
        (registry("host"), HOST, [], "driver: container"),
        (registry(), None, [], "no NVIDIA driver"),
        (registry(), HOST, ["bob", "zed"], "not registered: zed"),
    ],
)
def test_sync_refuses(reg, host, wanted, message):
    with pytest.raises(GpushellError) as caught:
        driversync.select(reg, host, VERSIONS, wanted)
    assert message in caught.value.user_message
    assert "\n" not in caught.value.user_message


def test_installer_comes_from_the_option_or_the_registry(tmp_path):
    run = tmp_path / "NVIDIA.run"
    run.write_text("#!/bin/sh\n")
    assert driversync.installer_path(registry(installer=str(run)), None) == str(run)
    assert driversync.installer_path(registry(installer="/nonexistent"), str(run)) == str(run)
    with pytest.raises(GpushellError, match="driver_installer"):
        driversync.installer_path(registry(), None)
    with pytest.raises(GpushellError, match="not a file"):
        driversync.installer_path(registry(installer=str(tmp_path / "missing.run")), None)


INSTALLER_SIZE = 48 << 20  # sparse: costs no disk to make, 48 MiB to read whole


def sparse_installer(path):
    """A large installer with known bytes at its start, middle and end, and holes between."""
    marks = {0: b"#!/bin/sh\n", INSTALLER_SIZE // 2: b"middle", INSTALLER_SIZE - 3: b"end"}
    with open(path, "wb") as stream:
        stream.truncate(INSTALLER_SIZE)
        for offset, data in marks.items():
            stream.seek(offset)
            stream.write(data)
    return marks


def test_the_installer_is_streamed_into_the_container_never_read_whole(tmp_path):
    installer = tmp_path / "NVIDIA.run"
    marks = sparse_installer(installer)
    root = tmp_path / "rootfs"
    (root / "root").mkdir(parents=True)
    tracemalloc.start()
    try:
        driversync.copy_installer(str(root), str(installer))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Reading it whole would allocate all 48 MiB at once; a chunked copy, one chunk or so.
    assert peak < 4 * rootfs.CHUNK < INSTALLER_SIZE
    copy = root / driversync.INSIDE.lstrip("/")
    assert stat.S_IMODE(copy.stat().st_mode) == 0o700
    assert copy.stat().st_size == INSTALLER_SIZE
    with open(copy, "rb") as stream:
        for offset, data in marks.items():
            stream.seek(offset)
            assert stream.read(len(data)) == data
    assert sorted(os.listdir(root / "root")) == [os.path.basename(driversync.INSIDE)]


def test_the_installer_copy_never_follows_a_link_the_container_planted(tmp_path):
    installer = tmp_path / "NVIDIA.run"
    installer.write_bytes(b"#!/bin/sh\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "root").symlink_to(outside)  # container root pointed its /root at the host
    with pytest.raises(GpushellError, match="link"):
        driversync.copy_installer(str(root), str(installer))
    assert os.listdir(outside) == []


@pytest.mark.parametrize(
    ("storage", "state", "calls"),
    [
        # A stopped container is started for the installer as every start is: disk quota first.
        ("btrfs", STOPPED, [f"quota {1 << 30} c-ann", "start c-ann", "stop c-ann"]),
        ("dir", STOPPED, ["start c-ann", "stop c-ann"]),  # no quota on dir: no call
        ("btrfs", RUNNING, []),  # running: started by a start that set it, left running
    ],
)
def test_sync_starts_the_container_the_way_every_start_goes(tmp_path, monkeypatch, storage, state, calls):
    from gpushell.containers import storage as storage_module
    from gpushell.core.model import Limits
    from gpushell.core.paths import Paths
    from gpushell.gpu import driverfiles
    from tests.fakes import FakeBackend

    backend = FakeBackend({"c-ann": state}, lxcpath=str(tmp_path / "lxc"))
    os.makedirs(os.path.join(backend.rootfs("c-ann"), "root"))
    base = registry()
    ann = base.users["ann"].replace(limits=Limits(2**30, 1.0, 512, 1 << 30))
    reg = base.replace(users={"ann": ann}, storage=storage)

    class Quotas:
        def set_quota(self, directory: str, limit: int) -> None:
            backend.calls.append(f"quota {limit} {os.path.basename(directory)}")

    ran: list[list[str]] = []
    monkeypatch.setattr(driversync, "backend_for", lambda reg: backend)
    monkeypatch.setattr(storage_module, "for_registry", lambda reg: Quotas())
    monkeypatch.setattr(driversync, "run", lambda argv, **kw: ran.append(argv) or Done())
    monkeypatch.setattr(driverfiles, "read_container_versions", lambda root: frozenset({HOST}))
    installer = tmp_path / "NVIDIA.run"
    installer.write_bytes(b"#!/bin/sh\n")
    paths = Paths(run_dir=str(tmp_path / "run"))
    assert driversync.sync_one(reg, paths, ann, str(installer), HOST) == f"installed NVIDIA driver {HOST}"
    assert backend.calls == calls
    assert ran == [["env", "-i", "sh", driversync.INSIDE, *driversync.INSTALLER_OPTIONS]]
    assert os.listdir(os.path.join(backend.rootfs("c-ann"), "root")) == []  # the copy removed


class Done:
    returncode, stdout, stderr = 0, "", ""
