"""The nf_tables ruleset generation: a counter the kernel bumps on every change.

Reading it is one netlink round trip (~50 us), against an iptables-save
that grows with the ruleset (~25 ms at 1000 rules here).  A login that
finds the generation unchanged since it last verified a student's rule
knows the rule is still there, without reading any rule.
"""

from __future__ import annotations

import struct

from . import netlink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1
AF_UNSPEC = 0
_NFGENMSG = struct.Struct("=BBH")  # family, version, resource id


def parse_reply(data: bytes) -> int | None:
    """The generation id in a GETGEN reply, or None for an error reply (pure)."""
    return _generation(netlink.messages(data))


def _generation(replies: Iterable[tuple[int, bytes]]) -> int | None:
    for kind, payload in replies:
        if kind == netlink.NLMSG_ERROR:
            return None
        for attribute, value in netlink.attributes(payload, _NFGENMSG.size):
            if attribute == NFTA_GEN_ID and len(value) >= 4:
                return int.from_bytes(value[:4], "big")
        return None
    return None


def generation() -> int | None:
    """The current generation, or None where nf_tables cannot say (no permission, no module)."""
    message = netlink.request(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN, 0, _NFGENMSG.pack(AF_UNSPEC, 0, 0))
    try:
        replies = netlink.ask(NETLINK_NETFILTER, message)
    except OSError:
        return None
    return _generation(replies)
