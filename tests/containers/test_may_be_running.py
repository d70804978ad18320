"""The cheap "is it surely stopped?" hint: LXC's monitor socket, and the login's use of it."""

from __future__ import annotations

import os
import socket

import pytest

from gpushell.containers import lxc
from gpushell.containers.backend import ContainerDriver
from gpushell.containers.lxc import LxcDriver
from gpushell.core.model import Cluster, Registry, User
from gpushell.core.paths import Paths
from gpushell.helper import services
from gpushell.system import bootslots
from gpushell.system.bootslots import BootSlot
from tests.fakes import FakeBackend


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
    long_path = lxcpath + "/x" * lxc.MAX_LXC_SOCKET_NAME
    assert LxcDriver(long_path).may_be_running("alice") is True


def context(driver: ContainerDriver) -> tuple[services.Context, User]:
    user = User("alice", 22001, "10.0.3.2", 1000000, "alice", "none", ())
    reg = Registry("/r", "gpu1", "lxcbr0", "10.0.3.0/24", (22001, 22999), "t", "/var/lib/lxc", "GPUSHELL",
                   1000000, 65536, "none", (), 60, 0, True, {"alice": user})  # fmt: skip
    return services.Context(None, reg, driver), user  # type: ignore[arg-type]


@pytest.mark.parametrize("answers", [True, False])
def test_a_surely_stopped_container_is_started_without_probing_its_sshd(monkeypatch, answers: bool) -> None:
    probes: list[str] = []
    monkeypatch.setattr(services, "sshd_answers", lambda ip, port, timeout: probes.append(ip) or answers)
    ctx, user = context(FakeBackend(maybe_running=False))
    assert services.start_unless_answering(ctx, user) is True
    assert (probes, ctx.driver.calls) == ([], ["start alice"])  # type: ignore[attr-defined]


def test_a_maybe_running_container_whose_sshd_answers_is_left_alone(monkeypatch) -> None:
    probes: list[str] = []
    monkeypatch.setattr(services, "sshd_answers", lambda ip, port, timeout: probes.append(ip) or True)
    ctx, user = context(FakeBackend(maybe_running=True))
    assert services.start_unless_answering(ctx, user) is None
    assert (probes, ctx.driver.calls) == (["10.0.3.2"], [])  # type: ignore[attr-defined]


def test_a_maybe_running_container_whose_sshd_is_silent_goes_to_lxc_start(monkeypatch) -> None:
    monkeypatch.setattr(services, "sshd_answers", lambda ip, port, timeout: False)
    ctx, user = context(FakeBackend(maybe_running=True))
    assert services.start_unless_answering(ctx, user) is True
    assert ctx.driver.calls == ["start alice"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("running", "answers", "turn_taken"), [(True, True, False), (False, False, True)])
def test_a_start_takes_a_boot_turn_and_an_answering_container_none(
    monkeypatch, tmp_path, running: bool, answers: bool, turn_taken: bool
) -> None:
    monkeypatch.setattr(services, "sshd_answers", lambda ip, port, timeout: answers)
    ctx, user = context(FakeBackend(maybe_running=running))
    held_at_start: list[bool] = []
    slot = BootSlot([str(tmp_path / f"boot-{number}.lock") for number in range(2)])
    monkeypatch.setattr(ctx.driver, "start", lambda name: held_at_start.append(slot.fd >= 0) or True)
    services.start_unless_answering(ctx, user, slot)
    assert (slot.fd >= 0) is turn_taken
    assert held_at_start == ([True] if turn_taken else [])  # taken before the boot, held through it
    slot.give_back()


def test_boot_turns_are_one_per_cpu_on_one_host_and_none_on_a_cluster(monkeypatch) -> None:
    monkeypatch.setattr(bootslots, "host_cpus", lambda: 3)
    ctx, _ = context(FakeBackend(maybe_running=False))
    ctx = services.Context(Paths(run_dir="/run/x"), ctx.registry, ctx.driver)
    assert services.boot_slot(ctx).paths == ["/run/x/boot-0.lock", "/run/x/boot-1.lock", "/run/x/boot-2.lock"]
    clustered = ctx.registry.replace(cluster=Cluster({}))
    assert services.boot_slot(services.Context(ctx.paths, clustered, ctx.driver)).paths == []
