"""registry_cache: the helper's compiled copy gives the same data as a full parse."""

from __future__ import annotations

import os

import pytest

from gpushell.core.errors import ExitStatus, GpushellError
from gpushell.core.registry import parse
from gpushell.system import registry_cache

TEXT = """
hostname: gpu1
subnet: 10.0.3.0/24
snapshot_limit: 5
disabled_actions: [rebuild]
mounts:
  - {source: /nas/lab, target: /nas, mode: ro}
users:
  alice:
    port: 22001
    ip: 10.0.3.2
    idmap: 1000000
    gpus: [0, 2]
    autostart: true
  bob:
    port: 22002
    ip: 10.0.3.3
    idmap: 1065536
    snapshot_limit: 1
    mounts:
      - {source: /scratch/bob, target: /scratch, mode: rw}
"""


@pytest.mark.parametrize("name", ["alice", "bob"])
def test_round_trip_equals_the_full_parse(name: str) -> None:
    full = parse(TEXT, "/etc/gpushell.yaml")
    reg, user = registry_cache.from_plain(registry_cache.to_plain(full), name)
    assert user == full.users[name]
    assert reg.users == {name: full.users[name]}
    fields = ("path", "hostname", "subnet", "ports", "chain", "lxcpath", "mounts", "idle_timeout",
              "snapshot_limit", "disabled_actions")  # fmt: skip
    for field in fields:
        assert getattr(reg, field) == getattr(full, field)
    assert reg.gateway == full.gateway
    assert (reg.disabled_actions, user.snapshot_limit) == (("rebuild",), {"alice": 5, "bob": 1}[name])


def test_the_whole_registry_round_trips_equal_to_the_full_parse() -> None:
    full = parse(TEXT.replace("hostname: gpu1", "hostname: gpu1\ndriver_installer: /srv/NVIDIA.run"), "/r")
    copy = registry_cache.registry_from_plain(registry_cache.to_plain(full))
    assert copy == full  # every setting and every user, the installer path included
    assert list(copy.users) == list(full.users)


def test_a_cache_from_another_gpushell_version_is_ignored(tmp_path: os.PathLike[str], monkeypatch) -> None:
    path = os.path.join(tmp_path, "registry.cache")
    registry_cache.write(path, (1, 2, 3, 4, 5), parse(TEXT, "/etc/gpushell.yaml"))
    assert registry_cache.read(path, (1, 2, 3, 4, 5)) is not None
    monkeypatch.setattr(registry_cache, "__version__", "9.9.9")
    assert registry_cache.read(path, (1, 2, 3, 4, 5)) is None


def test_unknown_user_is_not_registered() -> None:
    plain = registry_cache.to_plain(parse(TEXT, "/etc/gpushell.yaml"))
    with pytest.raises(GpushellError) as info:
        registry_cache.from_plain(plain, "mallory")
    assert info.value.status == ExitStatus.NOT_REGISTERED


def test_identity_changes_with_content_and_mode(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "r.yaml")
    with open(path, "w") as stream:
        stream.write("a")
    first = registry_cache.identity(os.stat(path))
    os.chmod(path, 0o600)
    second = registry_cache.identity(os.stat(path))
    with open(path, "w") as stream:
        stream.write("ab")
    third = registry_cache.identity(os.stat(path))
    assert len({first, second, third}) == 3


def test_a_stale_or_foreign_cache_is_ignored(tmp_path: os.PathLike[str]) -> None:
    full = parse(TEXT, "/etc/gpushell.yaml")
    path = os.path.join(tmp_path, "registry.cache")
    key = (1, 2, 3, 4, 5)
    registry_cache.write(path, key, full)
    assert registry_cache.read(path, key) is not None
    assert registry_cache.read(path, (1, 2, 3, 4, 6)) is None  # registry changed since
    os.chmod(path, 0o644)
    assert registry_cache.read(path, key) is None  # readable by others: not ours
    with open(path, "wb") as stream:
        stream.write(b"\x00garbage")
    os.chmod(path, 0o600)
    assert registry_cache.read(path, key) is None
