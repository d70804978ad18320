"""Registries that earlier releases wrote load today, keep their students and get today's defaults.

tests/data/registries holds real files from this repository's history: the
example etc/gpushell.yaml at several commits, and what `gpushell-admin init`,
`add` and `set` wrote at others (rendered by running that commit's own code;
the first line of each file says which commit and how).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
import yaml

from gpushell.core.model import DEFAULT_LIMITS, Limits
from gpushell.core.registry import MAX_CPUS, MAX_MEMORY, MAX_PIDS, Registry, parse

REGISTRIES = Path(__file__).parent.parent / "data" / "registries"
G = 2**30

# As `add` allocated them: the lowest free port, address and id range.
ALICE, BOB = (22001, "10.0.3.2", 1000000), (22002, "10.0.3.3", 1065536)
# file -> each student's (port, ip, idmap) as that release wrote them
STUDENTS: dict[str, dict[str, tuple[int, str, int]]] = {
    "init-add-first-4590e9e.yaml": {"alice": ALICE, "bob": BOB},
    "example-first-f69e78a.yaml": {"alice": ALICE, "bob": BOB},
    "example-before-limits-0da1380.yaml": {"alice": ALICE, "bob": BOB},
    "init-add-set-before-limits-7e6e39f.yaml": {"alice": (22010, *ALICE[1:]), "bob": BOB},  # set port=22010
    "init-add-set-limits-0c2f688.yaml": {"alice": ALICE, "bob": BOB},
    "example-before-storage-0c2f688.yaml": {"alice": ALICE, "bob": BOB},
    "init-add-set-disk-dir-5bf1fcd.yaml": {"alice": ALICE, "bob": BOB},
    "init-btrfs-pool-5bf1fcd.yaml": {"alice": ALICE, "bob": BOB},
}
NAMES = sorted(STUDENTS)


def text_of(name: str) -> str:
    return (REGISTRIES / name).read_text(encoding="utf-8")


def load(name: str) -> Registry:
    return parse(text_of(name), f"/etc/gpushell.yaml ({name})")


def written(name: str) -> set[str]:
    """The top-level keys the file itself writes."""
    root = yaml.compose(text_of(name), Loader=yaml.SafeLoader)
    assert isinstance(root, yaml.MappingNode)
    return {key.value for key, _ in root.value}


def test_every_stored_registry_is_listed() -> None:
    assert sorted(path.name for path in REGISTRIES.glob("*.yaml")) == NAMES
    assert 6 <= len(NAMES) <= 10


@pytest.mark.parametrize("name", NAMES)
def test_first_line_says_which_commit_and_how(name: str) -> None:
    commit = re.fullmatch(r"[a-z0-9-]+-([0-9a-f]{7})\.yaml", name)
    assert commit is not None
    first = text_of(name).splitlines()[0]
    assert first.startswith(f"# {commit[1]}")
    assert "git show" in first or "its own code" in first


@pytest.mark.parametrize("name", NAMES)
def test_old_registry_loads_with_its_students(name: str) -> None:
    reg = load(name)
    assert {user: (u.port, str(u.ip), u.idmap) for user, u in reg.users.items()} == STUDENTS[name]
    for user in reg.users.values():
        assert user.container == user.name
        assert user.ip in reg.subnet
        assert user.lending is None
        assert user.expires is None  # no earlier release knew expiry: never


@pytest.mark.parametrize("name", NAMES)
def test_keys_the_old_file_lacks_get_todays_defaults(name: str) -> None:
    reg, keys = load(name), written(name)
    if "limits" not in keys:
        assert reg.limits == DEFAULT_LIMITS
    if "storage" not in keys:
        assert reg.storage == "dir"
    if "pool_file" not in keys:
        assert reg.pool_file == ""
    if "allow_container_traffic" not in keys:
        assert reg.allow_container_traffic is False  # isolation on
    if "egress_deny" not in keys:
        assert reg.egress_deny == ()
    if "snapshot_limit" not in keys:
        assert reg.snapshot_limit == 3
    if "disabled_actions" not in keys:
        assert reg.disabled_actions == ()
    if "driver" not in keys:
        assert reg.driver == "host"
    assert "lending" not in keys  # no earlier release lent GPUs
    assert reg.lending is None


@pytest.mark.parametrize("name", NAMES)
def test_every_students_limits_are_finite(name: str) -> None:
    for user in load(name).users.values():
        limits = user.limits
        assert 0 < limits.memory <= MAX_MEMORY
        assert 0 < limits.cpus <= MAX_CPUS
        assert 0 < limits.pids <= MAX_PIDS
        assert 0 < limits.disk <= MAX_MEMORY


def test_first_release_gets_the_built_in_limits() -> None:
    reg = load("init-add-first-4590e9e.yaml")
    assert reg.limits == Limits(memory=8 * G, cpus=4.0, pids=4096, disk=50 * G)
    assert all(user.limits == reg.limits for user in reg.users.values())
    assert (reg.hostname, reg.bridge, reg.subnet) == ("gpu1", "lxcbr0", ipaddress.IPv4Network("10.0.3.0/24"))


def test_what_set_wrote_before_limits_is_kept() -> None:
    alice = load("init-add-set-before-limits-7e6e39f.yaml").users["alice"]
    assert (alice.gpus, alice.autostart, alice.snapshot_limit) == ((0, 2), True, 5)


def test_first_example_keeps_bobs_gpu_and_mount() -> None:
    bob = load("example-first-f69e78a.yaml").users["bob"]
    assert bob.gpus == (0,)
    assert [(m.source, m.target, m.readonly) for m in bob.mounts] == [
        ("/srv/nas/bob", "/home/bob/nas", False)
    ]


def test_host_sized_limits_of_init_and_set_are_kept() -> None:
    reg = load("init-add-set-limits-0c2f688.yaml")
    assert reg.limits == Limits(memory=32 * G, cpus=8.0, pids=4096)  # init on 64 GiB and 16 CPUs
    assert reg.users["alice"].limits == Limits(memory=16 * G, cpus=4.0, pids=4096)
    assert reg.users["bob"].limits == reg.limits


def test_disk_limits_of_the_storage_release_are_kept() -> None:
    dir_lab = load("init-add-set-disk-dir-5bf1fcd.yaml")
    assert dir_lab.users["alice"].limits == Limits(memory=16 * G, cpus=8.0, pids=4096, disk=200 * G)
    assert dir_lab.storage == "dir"
    btrfs_lab = load("init-btrfs-pool-5bf1fcd.yaml")
    assert (btrfs_lab.storage, btrfs_lab.pool_file) == ("btrfs", "/srv/gpushell.pool")
    assert btrfs_lab.users["alice"].gpus == "all"
    assert btrfs_lab.users["bob"].limits.disk == 100 * G
    assert btrfs_lab.users["alice"].limits.disk == 50 * G  # the built-in disk limit
