"""The host's side of the lab network: the bridge and IPv4 forwarding (init and apply)."""

from __future__ import annotations

import os
from collections.abc import Callable

from ..core.allocate import mac_address
from . import ifaddr, sysctl
from .runner import run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.model import Registry

Report = Callable[[str], None]


def ensure_bridge(reg: Registry, report: Report) -> None:
    if not os.path.exists(f"/sys/class/net/{reg.bridge}"):
        run(["ip", "link", "add", reg.bridge, "type", "bridge"])
        report(f"created bridge {reg.bridge}")
    address = f"{reg.gateway}/{reg.subnet.prefixlen}"
    if address not in ifaddr.ipv4_addresses(reg.bridge):
        run(["ip", "addr", "add", address, "dev", reg.bridge])
        report(f"gave {reg.bridge} the address {address}")
    if not mac_fixed(reg.bridge):
        fix_mac(reg)
        report(f"gave {reg.bridge} the MAC address {mac_address(str(reg.gateway))}")
    run(["ip", "link", "set", reg.bridge, "up"])


# A bridge given no MAC of its own takes the lowest of its ports', so a
# container's start or stop (its veth joining or leaving) may change it.
# A running container's ARP cache may keep the old one after its port is
# gone, and the container's replies to the host then go nowhere: in a
# crowd of starts and stops, containers lost the host, and their students
# the forwarded ssh, for 30-50 s.  LXC gives its veths random MACs, so the
# bridge's moved with many a start or stop.
NET_ADDR_SET = "3"  # addr_assign_type of an address set by hand (include/uapi/linux/netdevice.h)


def mac_fixed(bridge: str) -> bool:
    """Whether the bridge keeps a MAC of its own (set by us, lxc-net or the admin's network config)."""
    try:
        with open(f"/sys/class/net/{bridge}/addr_assign_type", encoding="ascii") as stream:
            return stream.read().strip() == NET_ADDR_SET
    except FileNotFoundError:
        return False


def fix_mac(reg: Registry) -> None:
    """The bridge's MAC, fixed: a locally administered one from the gateway address (allocate.py)."""
    # Announced by a gratuitous ARP (arp_notify), so that running containers learn it at once.
    # Not sysctl.write: its dotted keys cannot name a bridge whose name holds a dot.
    with open(f"/proc/sys/net/ipv4/conf/{reg.bridge}/arp_notify", "w", encoding="ascii") as stream:
        stream.write("1\n")
    run(["ip", "link", "set", reg.bridge, "address", mac_address(str(reg.gateway))])


def ensure_ip_forwarding(report: Report) -> None:
    if sysctl.read([sysctl.IP_FORWARD]).get(sysctl.IP_FORWARD) == 1:
        return
    sysctl.write(sysctl.IP_FORWARD, 1)
    report("turned on IPv4 forwarding")
