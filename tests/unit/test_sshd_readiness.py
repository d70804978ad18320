"""Is the container's sshd listening: its socket table, found through its init's noted PID."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from gpushell import listening, services
from gpushell.containers import ContainerDriver
from gpushell.errors import ExitStatus, GpushellError
from gpushell.model import Registry, User
from gpushell.paths import Paths

# /proc/PID/net/tcp and tcp6 of a booted container, as read on this host kind.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000 2000000000        0 1048472 1
   1: 0203000A:0016 0103000A:C44C 01 00000000:00000000 00:00000000 00000000 2000000000        0 1049001 1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000
"""


def test_a_listening_socket_on_the_port_is_found() -> None:
    assert listening.listening(TCP, 22) and listening.listening(TCP6, 22)
    assert not listening.listening(TCP, 80)


def test_a_connection_on_the_port_is_not_a_listener() -> None:
    established_only = TCP.splitlines()[0] + "\n" + TCP.splitlines()[2] + "\n"
    assert not listening.listening(established_only, 22)
    assert not listening.listening("", 22)


def test_a_process_in_this_namespace_never_counts_even_when_it_listens() -> None:
    """A wrong PID must not find the host's own sshd: our own listener is ignored."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with open("/proc/self/net/tcp", encoding="ascii") as table:
            assert listening.listening(table.read(), port)  # the table does show it
        assert listening.listens(os.getpid(), port) is False


def test_start_time_names_one_process() -> None:
    assert listening.start_time(os.getpid()) == listening.start_time(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert listening.start_time(child.pid) is None  # gone


class Driver(ContainerDriver):
    """A container whose init is this test process: its start time is real."""

    def __init__(self, maybe: bool = True, pid: int | None = None) -> None:
        self.maybe, self.pid = maybe, pid
        self.asked = self.started = 0

    def may_be_running(self, name: str) -> bool:
        return self.maybe

    def init_pid(self, name: str) -> int | None:
        self.asked += 1
        return self.pid

    def start(self, name: str) -> bool:
        self.started += 1
        return True


@pytest.fixture
def listens(monkeypatch) -> set[int]:
    """PIDs whose namespace has sshd listening (a real one needs a container: the integration tests)."""
    pids: set[int] = set()
    monkeypatch.setattr(listening, "listens", lambda pid, port=22: pid in pids)
    return pids


def context(tmp_path: os.PathLike[str], driver: ContainerDriver, timeout: float = 60) -> services.Context:
    user = User("alice", 22001, "10.0.3.2", 1000000, "alice", "none", ())
    reg = Registry("/r", "gpu1", "lxcbr0", "10.0.3.0/24", (22001, 22999), "t", "/var/lib/lxc", "GPUSHELL",
                   1000000, 65536, "none", (), timeout, 0, True, {"alice": user})  # fmt: skip
    return services.Context(Paths(run_dir=os.fspath(tmp_path)), reg, driver)


def alice(ctx: services.Context) -> User:
    return ctx.registry.users["alice"]


def test_a_surely_stopped_container_is_started_without_asking_for_its_init(tmp_path, listens) -> None:
    ctx = context(tmp_path, Driver(maybe=False))
    assert services.start_unless_answering(ctx, alice(ctx)) is True
    assert (ctx.driver.asked, ctx.driver.started) == (0, 1)  # type: ignore[attr-defined]


def test_a_listening_container_is_left_alone_and_its_pid_noted_once(tmp_path, listens) -> None:
    listens.add(os.getpid())
    first = context(tmp_path, Driver(pid=os.getpid()))
    assert services.start_unless_answering(first, alice(first)) is None
    later = context(tmp_path, Driver(pid=os.getpid()))
    assert services.start_unless_answering(later, alice(later)) is None
    assert (first.driver.asked, later.driver.asked) == (1, 0)  # type: ignore[attr-defined]
    assert first.driver.started == later.driver.started == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("note", ["{pid} 1 alice", "{pid} {start} bob", "{pid} {start}", "x {start} alice"])
def test_a_note_for_another_process_or_container_is_not_trusted(tmp_path, listens, note: str) -> None:
    listens.add(os.getpid())
    with open(os.path.join(tmp_path, "init-alice.pid"), "w", encoding="ascii") as stream:
        stream.write(note.format(pid=os.getpid(), start=listening.start_time(os.getpid())))
    ctx = context(tmp_path, Driver(pid=os.getpid()))
    assert services.start_unless_answering(ctx, alice(ctx)) is None
    assert ctx.driver.asked == 1  # type: ignore[attr-defined]


def test_a_running_container_whose_sshd_does_not_listen_goes_to_lxc_start(tmp_path, listens) -> None:
    ctx = context(tmp_path, Driver(pid=os.getpid()))
    assert services.start_unless_answering(ctx, alice(ctx)) is True
    assert ctx.driver.started == 1  # type: ignore[attr-defined]


def test_waiting_ends_when_sshd_listens_and_times_out_when_it_never_does(tmp_path, listens) -> None:
    listens.add(os.getpid())
    ready = context(tmp_path, Driver(pid=os.getpid()))
    assert services.wait_for_sshd(ready, alice(ready)) < 1
    listens.clear()  # sshd went away: the noted init still runs, its table shows no listener
    never = context(tmp_path, Driver(pid=os.getpid()), timeout=0.05)
    with pytest.raises(GpushellError) as raised:
        services.wait_for_sshd(never, alice(never))
    assert raised.value.status == ExitStatus.TIMEOUT
    assert "did not answer on port 22 within 0 s" in raised.value.user_message
