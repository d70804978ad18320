"""Choosing a new student's port, container IP and id range (pure)."""

from __future__ import annotations

import ipaddress

from .errors import GpushellError
from .model import Registry
from .value import Value


class Allocation(Value):
    __slots__ = ("idmap", "ip", "port")

    def __init__(self, port: int, ip: ipaddress.IPv4Address, idmap: int) -> None:
        self.port, self.ip, self.idmap = port, ip, idmap


def allocate(reg: Registry, port: int | None = None) -> Allocation:
    """The lowest free port (or the one asked for), IP and id range."""
    users = reg.users.values()
    used_ports = {u.port for u in users}
    first, last = reg.ports
    if port is None:
        port = next((p for p in range(first, last + 1) if p not in used_ports), None)
        if port is None:
            raise GpushellError(f"no free port left in {first}-{last}")
    elif not first <= port <= last:
        raise GpushellError(f"port {port} is outside the range {first}-{last}")
    elif port in used_ports:
        owner = next(u.name for u in users if u.port == port)
        raise GpushellError(f"port {port} is already used by {owner}")

    used_ips = {u.ip for u in users} | {reg.gateway}
    ip = next((a for a in reg.subnet.hosts() if a not in used_ips), None)
    if ip is None:
        raise GpushellError(f"no free address left in {reg.subnet}")

    # Ranges sit on a grid of idmap_size from idmap_start; take the lowest
    # grid slot that overlaps no existing range (hand-placed ones included).
    size = reg.idmap_size
    taken = sorted(u.idmap for u in users)
    idmap = reg.idmap_start
    for start in taken:
        if idmap + size <= start:
            break
        if start + size > idmap:
            slots = -(-(start + size - reg.idmap_start) // size)
            idmap = reg.idmap_start + slots * size
    if idmap + size > 2**32:
        raise GpushellError("no free id range left")
    return Allocation(port, ip, idmap)


def mac_address(address: str) -> str:
    """A stable, locally administered MAC derived from the IPv4 address (no ARP surprises on rebuild)."""
    return "02:00:" + ":".join(f"{int(octet):02x}" for octet in address.split("."))


def host_interface(address: str) -> str:
    """The host side of a container's veth: fixed by its address, so firewall rules can name it.

    `gs` and the address in hex (10.0.3.2 -> gs0a000302): 10 characters, within
    the kernel's 15, unique on the host as the addresses are, and the same
    across restarts, where LXC would pick a random `vethXXXXXX`.
    """
    return "gs" + "".join(f"{int(octet):02x}" for octet in address.split("."))
