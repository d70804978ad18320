"""The cheap "is it surely stopped?" hint: whether LXC's monitor socket is there."""

from __future__ import annotations

import os
import socket

import pytest

from gpushell import containers
from gpushell.containers import LxcDriver


def listening_monitor(lxcpath: str, name: str) -> socket.socket:
    """What lxc-start's monitor binds for a running container."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(f"\0{lxcpath}/{name}/command")
    server.listen(1)
    return server


@pytest.fixture
def lxcpath(tmp_path: os.PathLike[str]) -> str:
    return os.fspath(tmp_path)  # unique per test, so the abstract names are too


def test_no_monitor_means_surely_stopped(lxcpath: str) -> None:
    assert LxcDriver(lxcpath).may_be_running("alice") is False


def test_a_listening_monitor_means_maybe_running(lxcpath: str) -> None:
    with listening_monitor(lxcpath, "alice"):
        assert LxcDriver(lxcpath).may_be_running("alice") is True
        assert LxcDriver(lxcpath).may_be_running("bob") is False  # another container's name
        assert LxcDriver(f"{lxcpath}/other").may_be_running("alice") is False  # another lxcpath


def test_a_name_lxc_would_hash_is_never_called_stopped(lxcpath: str) -> None:
    long_path = lxcpath + "/x" * containers.MAX_LXC_SOCKET_NAME
    assert LxcDriver(long_path).may_be_running("alice") is True
