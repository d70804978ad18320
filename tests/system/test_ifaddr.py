"""ifaddr: an interface's IPv4 addresses over rtnetlink, as `ip -4 addr show` gives them."""

from __future__ import annotations

import os
import struct
import subprocess

from gpushell.system import ifaddr, netlink


def attribute(kind: int, value: bytes) -> bytes:
    padded = value + bytes(-len(value) % 4)
    return netlink.ATTRIBUTE.pack(netlink.ATTRIBUTE.size + len(value), kind) + padded


def address_message(index: int, prefix: int, local: bytes | None, peer: bytes | None = None,
                    family: int = ifaddr.AF_INET) -> bytes:  # fmt: skip
    body = struct.pack("=BBBBI", family, prefix, 0x80, 0, index)
    if peer is not None:
        body += attribute(ifaddr.IFA_ADDRESS, peer)
    if local is not None:
        body += attribute(ifaddr.IFA_LOCAL, local)
    body += attribute(3, b"br0\0")  # IFA_LABEL, skipped
    return netlink.HEADER.pack(netlink.HEADER.size + len(body), ifaddr.RTM_NEWADDR, 2, 1, 0) + body


def test_addresses_of_the_interface_asked_for_only() -> None:
    data = (
        address_message(7, 24, bytes([10, 0, 3, 1]))
        + address_message(7, 16, bytes([172, 16, 0, 1]))
        + address_message(2, 24, bytes([192, 0, 2, 2]))  # another interface
        + address_message(7, 64, bytes(16), family=10)  # IPv6
    )
    assert ifaddr.parse_addresses(netlink.messages(data), 7) == ["10.0.3.1/24", "172.16.0.1/16"]


def test_the_local_address_not_the_peer_and_the_peer_field_when_alone() -> None:
    point_to_point = address_message(3, 32, bytes([10, 9, 0, 1]), peer=bytes([10, 9, 0, 2]))
    only_address = address_message(3, 24, None, peer=bytes([10, 8, 0, 1]))
    replies = netlink.messages(point_to_point + only_address)
    assert ifaddr.parse_addresses(replies, 3) == ["10.9.0.1/32", "10.8.0.1/24"]


def test_truncated_replies_give_what_is_whole() -> None:
    whole = address_message(7, 24, bytes([10, 0, 3, 1]))
    assert ifaddr.parse_addresses(netlink.messages(whole + whole[:-6]), 7) == ["10.0.3.1/24"]
    # The first attribute (after 16 bytes of header and 8 of ifaddrmsg) claims more than there is.
    broken = whole[:24] + struct.pack("=H", 200) + whole[26:]
    assert ifaddr.parse_addresses(netlink.messages(broken), 7) == []


def test_the_kernel_answers_as_ip_does() -> None:
    compared = 0
    for name in sorted(os.listdir("/sys/class/net")):
        shown = subprocess.run(
            ["ip", "-o", "-4", "addr", "show", "dev", name], capture_output=True, text=True
        )
        if shown.returncode != 0:
            continue  # gone since the listing: a container's veth, say
        expected = [words[words.index("inet") + 1] for words in map(str.split, shown.stdout.splitlines())]
        assert ifaddr.ipv4_addresses(name) == expected, name
        compared += 1
    assert compared >= 1
    assert "127.0.0.1/8" in ifaddr.ipv4_addresses("lo")


def test_no_such_interface_has_no_address() -> None:
    assert ifaddr.ipv4_addresses("gpt-none0") == []
