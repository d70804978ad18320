"""An interface's IPv4 addresses, asked of the kernel over rtnetlink.

What `ip -4 addr show dev IF` prints, without running it (init, apply and
doctor ask it of the bridge).
"""

from __future__ import annotations

import struct

from ..core.errors import GpushellError
from . import netlink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

NETLINK_ROUTE = 0
RTM_NEWADDR = 20
RTM_GETADDR = 22
AF_INET = 2
IFA_ADDRESS, IFA_LOCAL = 1, 2
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index


def parse_addresses(replies: Iterable[tuple[int, bytes]], index: int) -> list[str]:
    """ "ADDRESS/PREFIX" of each IPv4 address of the interface numbered index (pure).

    The local address, as `ip` shows it: on a point-to-point link
    IFA_ADDRESS is the peer's.
    """
    found = []
    for kind, payload in replies:
        if kind != RTM_NEWADDR or len(payload) < _IFADDRMSG.size:
            continue
        family, prefix, _flags, _scope, owner = _IFADDRMSG.unpack_from(payload)
        if family != AF_INET or owner != index:
            continue
        values = dict(netlink.attributes(payload, _IFADDRMSG.size))
        address = values.get(IFA_LOCAL, values.get(IFA_ADDRESS, b""))
        if len(address) == 4:
            found.append(f"{'.'.join(map(str, address))}/{prefix}")
    return found


def ipv4_addresses(interface: str) -> list[str]:
    """The interface's "ADDRESS/PREFIX"es; [] when there is no such interface."""
    try:
        with open(f"/sys/class/net/{interface}/ifindex", encoding="ascii") as stream:
            index = int(stream.read())
    except (OSError, ValueError):
        return []
    # A dump of every IPv4 address (a handful on a host), filtered here: the
    # kernel filters by interface only where strict checking is asked for.
    message = netlink.request(RTM_GETADDR, netlink.NLM_F_DUMP, _IFADDRMSG.pack(AF_INET, 0, 0, 0, 0))
    try:
        replies = netlink.ask(NETLINK_ROUTE, message, dump=True)
    except OSError as exc:
        raise GpushellError(f"cannot read the addresses of {interface}: {exc}") from exc
    return parse_addresses(replies, index)
