"""sysctl: reading and raising the kernel pools, on a /proc/sys tree made for the test."""

from __future__ import annotations

import pathlib

import pytest

from gpushell.core import kernelpools
from gpushell.core.kernelpools import INSTANCES, WATCHES
from gpushell.system import sysctl

GIB = 2**30


@pytest.fixture
def proc_sys(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    (tmp_path / "fs" / "inotify").mkdir(parents=True)
    monkeypatch.setattr(sysctl, "host_memory", lambda: 16 * GIB)
    return tmp_path


def put(proc_sys: pathlib.Path, key: str, value: str) -> None:
    pathlib.Path(sysctl.path_of(key, str(proc_sys))).write_text(value)


def value(proc_sys: pathlib.Path, key: str) -> str:
    return pathlib.Path(sysctl.path_of(key, str(proc_sys))).read_text()


def test_a_key_names_its_file_under_proc_sys() -> None:
    assert sysctl.path_of(INSTANCES) == "/proc/sys/fs/inotify/max_user_instances"
    assert sysctl.path_of(sysctl.IP_FORWARD) == "/proc/sys/net/ipv4/ip_forward"


def test_read_leaves_out_what_is_missing_or_not_a_number(proc_sys: pathlib.Path) -> None:
    put(proc_sys, INSTANCES, "128\n")
    assert sysctl.read([INSTANCES, WATCHES], str(proc_sys)) == {INSTANCES: 128}
    put(proc_sys, WATCHES, "lots\n")
    assert sysctl.read([INSTANCES, WATCHES], str(proc_sys)) == {INSTANCES: 128}


def test_raise_pools_raises_the_short_pool_and_keeps_a_larger_one(proc_sys: pathlib.Path) -> None:
    wanted = kernelpools.wanted(16 * GIB)
    put(proc_sys, INSTANCES, "128\n")
    put(proc_sys, WATCHES, f"{wanted[WATCHES] + 1}\n")
    said: list[str] = []
    sysctl.raise_pools(said.append, str(proc_sys))
    assert value(proc_sys, INSTANCES) == f"{wanted[INSTANCES]}\n"
    assert value(proc_sys, WATCHES) == f"{wanted[WATCHES] + 1}\n"  # never lowered
    assert said == [f"raised {INSTANCES} from 128 to {wanted[INSTANCES]}"]
    sysctl.raise_pools(said.append, str(proc_sys))
    assert len(said) == 1  # nothing left to raise, nothing said
