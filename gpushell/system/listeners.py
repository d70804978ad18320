"""Whether a TCP port listens inside a container, asked of the host's kernel.

A connect to a booting container's sshd tells the same once sshd is up, but
that connection costs the container ~10 ms of CPU (sshd forks and
re-executes for it) and one `kex_exchange_identification` line in its
journal, on top of the student's own connection a moment later.  The
kernel's socket diagnostics (sock_diag) answer from its table of listening
sockets alone.  Their netlink socket is made inside the container's network
namespace and sees that namespace's sockets, no other: the calling thread
enters the namespace for the socket() call only and comes straight back.
Nothing the container does can make that socket act anywhere else, and
its replies come from the kernel, not from the container.
"""

from __future__ import annotations

import functools
import os
import struct
from _socket import AF_INET, AF_NETLINK, SOCK_CLOEXEC, SOCK_RAW, inet_aton, socket

from . import netlink

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
IPPROTO_TCP = 6
TCP_LISTEN = 10  # the kernel's state number; its bit selects listeners only, so no walk of connections
CLONE_NEWNET = 0x40000000
_REQUEST = struct.Struct("=BBBBI")  # inet_diag_req_v2: family, protocol, extensions, pad, states
_PORTS = struct.Struct("!HH")  # inet_diag_sockid: source and destination port, network order
_SOCKID_REST = struct.Struct("=16s16sIII")  # addresses, interface, cookie (none: all ones)
_NO_COOKIE = 0xFFFFFFFF
MOST_LISTENERS = 64  # sshd listens once per address family; a container with more is asked by connecting


def listen_request(port: int) -> bytes:
    """The dump of the IPv4 TCP sockets listening on port (pure)."""
    body = (
        _REQUEST.pack(AF_INET, IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
        + _PORTS.pack(port, 0)
        + _SOCKID_REST.pack(b"", b"", 0, _NO_COOKIE, _NO_COOKIE)
    )
    return netlink.request(SOCK_DIAG_BY_FAMILY, netlink.NLM_F_DUMP, body)


def any_listens(replies: list[tuple[int, bytes]], port: int, address: str) -> bool:
    """Whether a reply names a listener on port at address or at any address (pure).

    A listener on 127.0.0.1 only does not count: the forward cannot reach it.
    """
    wanted = (bytes(4), inet_aton(address))
    for kind, payload in replies:
        if kind == netlink.NLMSG_ERROR:
            raise OSError("sock_diag: the kernel refused the request")
        # inet_diag_msg: family, state, timer, retransmits, then the sockid (ports, addresses).
        if kind == SOCK_DIAG_BY_FAMILY and len(payload) >= 12:
            source_port, _ = _PORTS.unpack_from(payload, 4)
            if source_port == port and payload[8:12] in wanted:
                return True
    return False


class ListenerProbe:
    """A sock_diag socket in one container's network namespace, asked as often as needed."""

    def __init__(self, init_pid: int) -> None:
        self._socket: socket | None = _socket_in(f"/proc/{init_pid}/ns/net")

    def listens(self, port: int, address: str) -> bool | None:
        """Whether port listens at address (or any address); None once the kernel's answer cannot be had.

        Container root decides how many sockets listen on the port, at
        addresses of its own: a dump of more than MOST_LISTENERS ends this
        probe (the caller connects instead), so no container makes each
        look cost the helper more than that.
        """
        if self._socket is None:
            return None
        try:
            replies = netlink.exchange(self._socket, listen_request(port), dump=True, most=MOST_LISTENERS)
            return any_listens(replies, port, address)
        except OSError:
            self.close()  # a dump cut short leaves its rest in the socket: never read it as an answer
            return None

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_in(namespace: str) -> socket:
    """A sock_diag socket made in the network namespace at path namespace.

    OSError when the namespace is gone or is the host's own (a PID that
    was the container's init and is now a host process's): the caller
    then probes by connecting, as it always could.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        theirs = os.open(namespace, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if os.path.samestat(os.fstat(own), os.fstat(theirs)):
                raise OSError(f"{namespace} is the host's own network namespace")
            _setns(theirs)
            try:
                return socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
            finally:
                _return_home(own)
        finally:
            os.close(theirs)
    finally:
        os.close(own)


def _setns(fd: int) -> None:
    import ctypes  # the resident helper has it loaded (server.PRELOADED); only a cold start asks

    if _libc().setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


@functools.cache
def _libc() -> ctypes.CDLL:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _return_home(own: int) -> None:
    """Back to the host's namespace, or end the process: nothing may go on in the container's."""
    try:
        _setns(own)
    except OSError:
        os.write(2, b"gpushell: cannot return to the host's network namespace\n")
        os._exit(70)
