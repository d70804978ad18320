"""The little of netlink gpushell speaks: one request, its replies, their attributes.

Asking the kernel directly costs one round trip where running `ip` or
`nft` costs a process; the login's ruleset check (nftgen.py) runs on it.
"""

from __future__ import annotations

import struct

# The C core of `socket`, for the login path (loginproc.py).
from _socket import AF_NETLINK, SOCK_RAW, socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300  # every object of the kind, in as many replies as it takes
NLMSG_ERROR = 2
NLMSG_DONE = 3
HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
ATTRIBUTE = struct.Struct("=HH")  # nlattr: length, type
_BUFFER = 65536


def request(kind: int, flags: int, body: bytes) -> bytes:
    return HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | flags, 1, 0) + body


def messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each message in a reply; a truncated one ends it (pure)."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, _flags, _seq, _pid = HEADER.unpack_from(data, offset)
        if length < HEADER.size or offset + length > len(data):
            return
        yield kind, data[offset + HEADER.size : offset + length]
        offset += (length + 3) & ~3


def attributes(payload: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    """(type, value) of each attribute from offset on; a malformed one ends it (pure)."""
    while offset + ATTRIBUTE.size <= len(payload):
        size, kind = ATTRIBUTE.unpack_from(payload, offset)
        if size < ATTRIBUTE.size or offset + size > len(payload):
            return
        yield kind & 0x3FFF, payload[offset + ATTRIBUTE.size : offset + size]  # without the nested/order bits
        offset += (size + 3) & ~3


def ask(protocol: int, message: bytes, dump: bool = False) -> list[tuple[int, bytes]]:
    """The kernel's reply messages to message: one reply, or for a dump all until NLMSG_DONE.

    OSError when the kernel cannot be asked (no permission, no module).
    """
    sock = socket(AF_NETLINK, SOCK_RAW, protocol)
    try:
        return exchange(sock, message, dump)
    finally:
        sock.close()


def exchange(
    sock: socket, message: bytes, dump: bool = False, most: int | None = None
) -> list[tuple[int, bytes]]:
    """ask() on a netlink socket the caller made (and may ask again); OSError past `most` replies."""
    sock.settimeout(1.0)
    sock.send(message)
    replies: list[tuple[int, bytes]] = []
    while True:
        received = list(messages(sock.recv(_BUFFER)))
        if not received:
            raise OSError("netlink: empty or malformed reply")
        for kind, payload in received:
            if kind == NLMSG_DONE:
                return replies
            replies.append((kind, payload))
            if most is not None and len(replies) > most:  # counted as they come: a last batch too
                raise OSError(f"netlink: more than {most} replies")
        if not dump or any(kind == NLMSG_ERROR for kind, _ in received):
            return replies
