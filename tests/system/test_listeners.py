"""listeners: whether a port listens inside another network namespace, from the kernel's sock_diag."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest

from gpushell.system import listeners, netlink


def listener_message(port: int, address: bytes, state: int = listeners.TCP_LISTEN) -> tuple[int, bytes]:
    """(type, payload) of one inet_diag_msg reply, as netlink.messages yields it."""
    sockid = struct.pack("!HH", port, 0) + address + bytes(12) + bytes(16) + struct.pack("=III", 0, 0, 0)
    return listeners.SOCK_DIAG_BY_FAMILY, struct.pack("=BBBB", 2, state, 0, 0) + sockid + bytes(20)


def test_the_request_asks_for_ipv4_tcp_listeners_on_the_port() -> None:
    [(kind, body)] = list(netlink.messages(listeners.listen_request(22)))
    assert kind == listeners.SOCK_DIAG_BY_FAMILY
    family, protocol, _ext, _pad, states = struct.unpack_from("=BBBBI", body)
    assert (family, protocol, states) == (2, 6, 1 << 10)  # AF_INET, TCP, listeners only
    assert struct.unpack_from("!HH", body, 8) == (22, 0)  # source port 22, any destination
    header = netlink.HEADER.unpack_from(listeners.listen_request(22))
    assert header[2] & netlink.NLM_F_DUMP == netlink.NLM_F_DUMP


def test_a_listener_on_any_address_or_the_containers_counts() -> None:
    any_address = [listener_message(22, bytes(4))]
    its_own = [listener_message(22, bytes([10, 0, 3, 7]))]
    assert listeners.any_listens(any_address, 22, "10.0.3.7")
    assert listeners.any_listens(its_own, 22, "10.0.3.7")


def test_loopback_another_address_or_another_port_does_not() -> None:
    assert not listeners.any_listens([], 22, "10.0.3.7")
    assert not listeners.any_listens([listener_message(22, bytes([127, 0, 0, 1]))], 22, "10.0.3.7")
    assert not listeners.any_listens([listener_message(22, bytes([10, 0, 3, 8]))], 22, "10.0.3.7")
    assert not listeners.any_listens([listener_message(2222, bytes(4))], 22, "10.0.3.7")
    assert not listeners.any_listens([(listeners.SOCK_DIAG_BY_FAMILY, b"\x02\x0a")], 22, "10.0.3.7")


def test_a_refused_request_is_an_error_not_a_no() -> None:
    with pytest.raises(OSError):
        listeners.any_listens([(netlink.NLMSG_ERROR, struct.pack("=i", -2) + bytes(16))], 22, "10.0.3.7")


def test_the_hosts_own_namespace_is_refused() -> None:
    # A PID that was a container's init and is now a host process's must not probe the host.
    with pytest.raises(OSError, match="host's own"):
        listeners.ListenerProbe(os.getpid())


LISTENERS = """
import socket, sys
held = []
for address in sys.argv[2:]:
    server = socket.socket()
    server.setsockopt(socket.IPPROTO_IP, 15, 1)  # IP_FREEBIND: addresses this namespace does not have
    server.bind((address, int(sys.argv[1])))
    server.listen()
    held.append(server)
print("up", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def listening_in_a_namespace(port: int, *addresses: str) -> Iterator[int]:
    """The PID of a process in a network namespace of its own, listening on port at each address."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a network namespace")
    proc = subprocess.Popen(
        ["unshare", "--net", "--", sys.executable, "-I", "-c", LISTENERS, str(port), *addresses],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        yield proc.pid
    finally:
        proc.communicate("", timeout=10)


def test_a_real_namespace_is_asked_and_the_caller_stays_home() -> None:
    home = os.stat("/proc/thread-self/ns/net")
    with listening_in_a_namespace(2222, "0.0.0.0") as pid:
        probe = listeners.ListenerProbe(pid)
        try:
            assert os.path.samestat(os.stat("/proc/thread-self/ns/net"), home)
            assert probe.listens(2222, "10.0.3.7")
            assert not probe.listens(22, "10.0.3.7")  # the host's own sshd, if any, is not in there
            assert probe.listens(2222, "10.0.3.7")  # the same socket asks again
        finally:
            probe.close()


def test_a_container_with_a_flood_of_listeners_is_left_to_connects() -> None:
    few = [f"10.9.0.{n}" for n in range(1, 4)]
    many = [f"10.9.{n // 250}.{n % 250 + 1}" for n in range(listeners.MOST_LISTENERS + 1)]
    with listening_in_a_namespace(2222, *few) as pid:
        probe = listeners.ListenerProbe(pid)
        assert probe.listens(2222, "10.9.0.2") is True
        assert probe.listens(2222, "10.0.3.7") is False  # listeners, but none where the forward leads
        probe.close()
    with listening_in_a_namespace(2222, *many) as pid:
        probe = listeners.ListenerProbe(pid)
        assert probe.listens(2222, "10.0.3.7") is None  # more than MOST_LISTENERS: cannot tell
        assert probe.listens(22, "10.0.3.7") is None  # and the probe is done: no half-read dump is an answer


def test_the_bound_on_replies_holds_when_the_end_comes_in_the_same_batch() -> None:
    """A dump whose last batch carries NLMSG_DONE is counted too (a datagram pair plays the kernel)."""

    def batch(count: int) -> bytes:
        one = netlink.HEADER.pack(netlink.HEADER.size + 4, listeners.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + bytes(4)
        done = netlink.HEADER.pack(netlink.HEADER.size + 4, netlink.NLMSG_DONE, 2, 1, 0) + bytes(4)
        return one * count + done

    for count, raises in ((64, False), (65, True)):
        ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with ours, kernel:
            kernel.send(batch(count))
            if raises:
                with pytest.raises(OSError, match="more than 64"):
                    netlink.exchange(ours, b"request", dump=True, most=64)
            else:
                assert len(netlink.exchange(ours, b"request", dump=True, most=64)) == 64
