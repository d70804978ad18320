"""The host's side of the lab network: the bridge and IPv4 forwarding (init and apply)."""

from __future__ import annotations

import os
from collections.abc import Callable

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
    run(["ip", "link", "set", reg.bridge, "up"])


def ensure_ip_forwarding(report: Report) -> None:
    if sysctl.read([sysctl.IP_FORWARD]).get(sysctl.IP_FORWARD) == 1:
        return
    sysctl.write(sysctl.IP_FORWARD, 1)
    report("turned on IPv4 forwarding")
