"""The admin side of btrfs storage, pure parts: init's options, doctor's storage lines, migrate's plan."""

from __future__ import annotations

import dataclasses
import os

import pytest

from gpushell.admin import apply, commands, doctor, hostinit, migrate
from gpushell.admin.cli import Options
from gpushell.admin.doctor import Finding, StorageFacts
from gpushell.admin.hostinit import StorageRequest
from gpushell.core.errors import GpushellError
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from gpushell.system import pool

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
G = 2**30
BASE = (
    "lxcpath: /var/lib/lxc\ntemplate: tpl\nlimits: {memory: 1G, cpus: 1, pids: 512, disk: 10G}\n"
    "idmap:\n  start: 1000000\n  size: 65536\n"
)
STUDENTS = (
    "users:\n  alice:\n    port: 22001\n    ip: 10.0.3.2\n    idmap: 1000000\n"
    "  bob:\n    port: 22002\n    ip: 10.0.3.3\n    idmap: 1065536\n"
)
DIR_LAB = parse(BASE + STUDENTS, "/etc/gpushell.yaml")
EMPTY_LAB = parse(BASE + "users:\n", "/etc/gpushell.yaml")
BTRFS_LAB = parse("storage: btrfs\n" + BASE + STUDENTS, "/etc/gpushell.yaml")
POOL_LAB = parse("storage: btrfs\npool_file: /srv/pool.img\n" + BASE + STUDENTS, "/etc/gpushell.yaml")
PATHS = Paths()


def read(name: str) -> str:
    with open(os.path.join(DATA, name), encoding="utf-8") as stream:
        return stream.read()


# --- init's options --------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        (StorageRequest("btrfs"), None),
        (StorageRequest("dir"), None),
        (StorageRequest("btrfs", "/srv/pool.img", 200 * G), None),
        (StorageRequest("dir", "/srv/pool.img", G), "use them with --storage btrfs"),
        (StorageRequest("btrfs", None, G), "give --pool-file PATH too"),
        (StorageRequest("btrfs", "/srv/pool.img"), "--pool-file needs --size"),
        (StorageRequest("btrfs", "pool.img", G), "give an absolute path"),
        (StorageRequest("btrfs", "/var/lib/lxc/pool.img", G), "is inside the lxcpath"),
        (StorageRequest("btrfs", "/srv/pool.img", 2**20), "at least 256M"),
    ],
)
def test_init_storage_options_that_go_together(request_: StorageRequest, problem: str | None) -> None:
    found = hostinit.request_problem(request_, "/var/lib/lxc")
    assert found == problem if problem is None else problem in (found or "")


def test_init_refuses_storage_the_registry_cannot_take() -> None:
    assert hostinit.storage_refusal(EMPTY_LAB, StorageRequest("btrfs")) is None
    assert "gpushell-admin storage migrate" in (
        hostinit.storage_refusal(DIR_LAB, StorageRequest("btrfs")) or ""
    )
    assert "no way back" in (hostinit.storage_refusal(BTRFS_LAB, StorageRequest("dir")) or "")
    assert hostinit.storage_refusal(BTRFS_LAB, StorageRequest("btrfs")) is None
    other = StorageRequest("btrfs", "/srv/other.img", G)
    assert (
        hostinit.storage_refusal(POOL_LAB, other) == "the registry already names the pool file /srv/pool.img"
    )


def test_the_not_btrfs_refusal_is_one_line_naming_both_ways() -> None:
    line = hostinit.NOT_BTRFS.format(lxcpath="/var/lib/lxc", kind="ext4")
    assert "\n" not in line and "/var/lib/lxc is on ext4, not btrfs" in line and "--pool-file" in line


def test_cli_init_storage_and_migrate() -> None:
    args = commands.build_parser().parse_args(
        ["init", "--storage", "btrfs", "--pool-file", "/srv/p.img", "--size", "1.5G"], namespace=Options()
    )
    assert (args.storage, args.pool_file, args.size, args.run) == (
        "btrfs",
        "/srv/p.img",
        int(1.5 * G),
        commands.cmd_init,
    )
    args = commands.build_parser().parse_args(["storage", "migrate", "alice", "bob"], namespace=Options())
    assert (args.users, args.run) == (["alice", "bob"], commands.cmd_storage_migrate)
    plain = commands.build_parser().parse_args(["init"], namespace=Options())
    assert (plain.storage, plain.pool_file, plain.size) == (None, None, None)
    for wrong in (["init", "--storage", "zfs"], ["init", "--size", "lots"], ["storage"]):
        with pytest.raises(SystemExit):
            commands.build_parser().parse_args(wrong, namespace=Options())


# --- the pool's and btrfs's words ---------------------------------------------------


def test_free_estimate_from_recorded_btrfs_filesystem_usage() -> None:
    assert pool.free_estimate(read("btrfs_filesystem_usage.txt")) == 928645120
    assert pool.free_estimate("Overall:\n    Device size: 1\n") is None


def test_apply_mounts_no_pool_when_the_registry_names_none() -> None:
    assert apply.unmounted_pool(BTRFS_LAB) is None


# --- doctor ------------------------------------------------------------------------


FREE = pool.free_estimate(read("btrfs_filesystem_usage.txt")) or 0
HEALTHY = StorageFacts(
    "btrfs", FREE, 1073741824, None, True, {"alice": (2 * G, 10 * G), "bob": (9 * G + G // 2, 10 * G)}
)


def lines(reg: object, storage: StorageFacts) -> list[str]:
    facts = dataclasses.replace(_facts(), storage=storage)
    return [item.line() for item in doctor.check_storage(reg, PATHS, facts)]  # type: ignore[arg-type]


def _facts() -> doctor.Facts:
    from tests.admin.test_doctor import healthy

    return healthy()


def test_doctor_on_btrfs_tells_each_students_use_against_their_quota() -> None:
    assert lines(BTRFS_LAB, HEALTHY) == [
        "ok: storage btrfs: /var/lib/lxc is on btrfs",
        "ok: btrfs quotas are on for /var/lib/lxc",
        "ok: alice: 2G of 10G disk quota used (20%)",
        "FAIL: bob: 9.5G of 10G disk quota used (95%) — fix: the student deletes files or snapshots, "
        "or: gpushell-admin set bob disk=SIZE",
        "FAIL: /var/lib/lxc: only 886M free of 1G — "
        "fix: free space (old snapshots, removed students' archives)",
    ]


def test_doctor_on_btrfs_without_quotas_or_subvolumes() -> None:
    off = dataclasses.replace(HEALTHY, quotas=False, usage={}, free=500 * G, size=1000 * G)
    assert lines(BTRFS_LAB, off)[1] == (
        "FAIL: btrfs quotas are off for /var/lib/lxc: no student's disk is limited — "
        "fix: btrfs quota enable /var/lib/lxc"
    )
    unmoved = dataclasses.replace(HEALTHY, usage={"alice": (G, None)}, free=500 * G, size=1000 * G)
    assert lines(BTRFS_LAB, unmoved)[2:4] == [
        "FAIL: alice: no disk quota on container alice (1G used) — fix: gpushell-admin set alice disk=10G",
        "FAIL: bob: container bob is no btrfs subvolume yet — fix: gpushell-admin storage migrate bob",
    ]


def test_doctor_pool_not_mounted_after_a_reboot() -> None:
    gone = StorageFacts("ext4", 50 * G, 100 * G, False, None)
    assert lines(POOL_LAB, gone)[:2] == [
        "FAIL: pool /srv/pool.img is not mounted at /var/lib/lxc — fix: gpushell-admin apply (mounts it)",
        "FAIL: the registry says storage: btrfs but /var/lib/lxc is on ext4 — "
        "fix: gpushell-admin apply (mounts the pool)",
    ]


def test_doctor_on_dir_storage_warns_there_is_no_disk_quota_and_keeps_the_space_check() -> None:
    found = lines(DIR_LAB, StorageFacts("ext4", 50 * G, 100 * G))
    assert found == [
        "warning: storage dir on ext4: no hard disk quota; one student can fill /var/lib/lxc — "
        "a quota per student needs btrfs storage: "
        "put /var/lib/lxc on btrfs, then gpushell-admin storage migrate",
        "ok: /var/lib/lxc: 50G free of 100G",
    ]
    on_btrfs = lines(DIR_LAB, StorageFacts("btrfs", G, 100 * G))
    assert on_btrfs[0].endswith("needs btrfs storage: gpushell-admin storage migrate")
    assert on_btrfs[1].startswith("FAIL: /var/lib/lxc: only 1G free of 100G")


def test_a_warning_is_no_failure() -> None:
    warned = Finding(True, "no quota", "migrate", warning=True)
    assert warned.line() == "warning: no quota — migrate"
    assert doctor.all_ok([warned])


# --- migrate's plan ----------------------------------------------------------------


def test_migrate_refuses_a_lab_on_btrfs_already_and_a_filesystem_that_is_not() -> None:
    assert migrate.refusal(DIR_LAB, "btrfs") is None
    assert "already says storage: btrfs" in (migrate.refusal(BTRFS_LAB, "btrfs") or "")
    moving = migrate.refusal(DIR_LAB, "ext4") or ""
    assert "/var/lib/lxc is on ext4, not btrfs" in moving and "first move the lxcpath" in moving


def test_migrate_chooses_named_or_all_students_in_port_order() -> None:
    assert [u.name for u in migrate.chosen(DIR_LAB, [])] == ["alice", "bob"]
    assert [u.name for u in migrate.chosen(DIR_LAB, ["bob", "alice", "bob"])] == ["alice", "bob"]
    with pytest.raises(GpushellError, match="not registered: carol"):
        migrate.chosen(DIR_LAB, ["carol", "bob"])
    todo, done = migrate.plan(migrate.chosen(DIR_LAB, []), {"alice"})
    assert ([u.name for u in todo], [u.name for u in done]) == (["bob"], ["alice"])


def test_migrate_settle_finishes_or_undoes_a_killed_run(tmp_path: object) -> None:
    lxcpath = str(tmp_path)
    reg = parse(f"lxcpath: {lxcpath}\n" + STUDENTS.replace("users:\n", "users:\n", 1), "/r.yaml")

    class Plain:  # stands in for BtrfsStorage.remove on plain directories
        def remove(self, path: str, ignore_errors: bool = False) -> None:
            import shutil

            shutil.rmtree(path)

    def layout(*names: str) -> None:
        for name in names:
            os.makedirs(os.path.join(lxcpath, name, "rootfs"))

    # Killed between the two renames: the new one is complete and takes the place.
    layout(".alice.dir-old", ".alice.migrating")
    open(os.path.join(lxcpath, ".alice.migrating", "new"), "w").close()
    migrate.settle(reg, "alice", Plain())  # type: ignore[arg-type]
    assert sorted(os.listdir(lxcpath)) == ["alice"] and os.path.exists(os.path.join(lxcpath, "alice", "new"))
    # Killed during the copy: the half-made one goes, the container stays.
    layout(".bob.migrating", "bob")
    migrate.settle(reg, "bob", Plain())  # type: ignore[arg-type]
    assert sorted(os.listdir(lxcpath)) == ["alice", "bob"]


def test_migrate_strays_are_only_this_containers_unrenamed_subvolumes() -> None:
    entries = [".alice.new-0a1b2c3d4e5f", ".alice.migrating", ".alice.new-", ".alice.new-XYZ", "alice"]
    entries += [".alice.newt-0a1b2c", ".bob.new-0a1b2c3d4e5f", ".alice.new-0a1b2c3d4e5f.x", ".alice-0a1b2c"]
    assert migrate.strays(DIR_LAB, "alice", entries) == ["/var/lib/lxc/.alice.new-0a1b2c3d4e5f"]


def test_migrate_settle_removes_a_subvolume_made_but_never_renamed(tmp_path: object) -> None:
    lxcpath = str(tmp_path)
    reg = parse(f"lxcpath: {lxcpath}\n" + STUDENTS, "/r.yaml")
    removed: list[str] = []

    class Recorded:  # stands in for BtrfsStorage.remove
        def remove(self, path: str, ignore_errors: bool = False) -> None:
            import shutil

            removed.append(os.path.basename(path))
            shutil.rmtree(path)

    for name in ("alice/rootfs", ".alice.new-0a1b2c3d4e5f", ".bob.new-0a1b2c3d4e5f", ".alice.migrating"):
        os.makedirs(os.path.join(lxcpath, name))
    migrate.settle(reg, "alice", Recorded())  # type: ignore[arg-type]
    assert removed == [".alice.migrating", ".alice.new-0a1b2c3d4e5f"]
    assert sorted(os.listdir(lxcpath)) == [".bob.new-0a1b2c3d4e5f", "alice"]  # bob's: his own run's


def test_migrate_refuses_a_student_the_pool_has_no_room_for_and_leaves_them_as_they_were(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpushell.containers import btrfs, treecopy
    from tests.fakes import FakeBackend

    lxcpath = str(tmp_path)
    reg = parse(f"lxcpath: {lxcpath}\n" + STUDENTS, "/r.yaml")
    backend = FakeBackend({"alice": "RUNNING"}, lxcpath=lxcpath)
    os.makedirs(os.path.join(lxcpath, "alice", "rootfs", "root"))
    with open(os.path.join(lxcpath, "alice", "rootfs", "root", "work"), "wb") as stream:
        stream.write(b"x" * 65536)

    class NothingMade(btrfs.BtrfsStorage):
        def new_container_dir(self, lxcpath: str, prefix: str) -> str:
            raise AssertionError("a subvolume made for a student refused for room")

    monkeypatch.setattr(migrate, "backend_for", lambda reg: backend)
    monkeypatch.setattr(
        treecopy, "free_bytes", lambda path: treecopy.SPACE_MARGIN
    )  # the margin, not the tree
    before = sorted(os.walk(lxcpath))
    with pytest.raises(GpushellError) as caught:
        migrate.move_student(reg, reg.users["alice"], NothingMade(lxcpath), print)
    assert caught.value.user_message.startswith("not enough disk space for moving alice: needs ")
    assert sorted(os.walk(lxcpath)) == before and backend.calls == []  # still running, untouched
