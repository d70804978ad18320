"""Network isolation between students as nftables rules (pure: registry in, ruleset text out).

Two tables, named after the registry's chain in lower case (GPUSHELL ->
`gpushell`), so a test lab with its own chain never touches the real ones:

- `bridge NAME` (layer 2, before the bridge decides anything).  A frame
  from a student's port (its veth, `lxcconfig.host_interface`) must carry
  the student's MAC; an IPv4 packet its IP; an ARP packet (Ethernet/IPv4
  only) its MAC and IP as sender.  Anything else from a student's port,
  IPv6 included, is dropped: containers get IPv4 only.  A frame from any
  other port may not claim any MAC or IP of the lab's subnet, the
  gateway's included (a container started before its veth got a stable
  name, say): one range each, whether a student holds the address yet or not.  Unless
  `allow_container_traffic`, nothing is bridged from or to a student's port:
  containers reach only the host, which routes.  A student's port receives
  only frames for its own MAC, and broadcast and multicast: a unicast frame
  the bridge floods for a stopped container's MAC reaches no other.
- `inet NAME` (layer 3, the host).  From the lab's bridge, the host takes
  replies to its own connections and pings, nothing else: its sshd and
  other services stay out of containers' reach.  What the host routes from
  the bridge is a reply, or a new connection that leaves the lab (to
  another container only when `allow_container_traffic`), and never to an
  `egress_deny` network.  Replies pass first, so a client in a denied
  network still reaches a container through its forward.  Every flow a
  container starts through the host takes an entry in the host's one
  connection-tracking table (262144 entries on a 23 GiB host), which the
  host's own traffic needs too: when it is full, new connections fail for
  everyone, students' ssh logins included.  A UDP datagram to each of many
  ports fills it in seconds, with no one answering.  So a container holds
  at most TRACKED_FLOWS entries at once; its next new flow is dropped
  until some end.

Sets keep each rule one hash lookup, whatever the number of students.
Every rule names the lab's bridge or its students' ports, MACs or IPs:
the host's other traffic never meets a verdict here (a drop in any base
chain is final, whoever else accepts).

The text is written as `nft list table` prints it, so `normalized` can
compare what the kernel holds with what the registry wants (doctor,
apply); element order and line wrapping are nft's own and do not count.
"""

from __future__ import annotations

import ipaddress

from .allocate import host_interface, mac_address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .model import Registry, User

BRIDGE, INET = "bridge", "inet"
FAMILIES = (BRIDGE, INET)
# A container's flows in the host's connection tracking at once: far more than a
# crawler's or a data loader's thousands of connections, 1/32 of a 262144-entry table.
TRACKED_FLOWS = 8192
FLOW_KEYS = 65535  # sources the count can follow: more than any lab subnet holds


def table_name(reg: Registry) -> str:
    return reg.chain.lower()


def _numeric(address: str) -> tuple[int, ...]:
    """Sort key of a dotted IPv4 address: numeric order, without an IPv4Address per student."""
    return tuple(map(int, address.split(".")))


def _students(reg: Registry) -> list[User]:
    return sorted(reg.users.values(), key=lambda user: _numeric(user.address))


def _set(name: str, kind: str, elements: list[str], flags: str = "", size: int = 0) -> str:
    lines = [f"\tset {name} {{", f"\t\ttype {kind}"]
    if size:
        lines.append(f"\t\tsize {size}")
    if flags:
        lines.append(f"\t\tflags {flags}")
    if elements:
        lines.append(f"\t\telements = {{ {', '.join(elements)} }}")
    return "\n".join([*lines, "\t}"]) + "\n"


def _chain(name: str, rules: list[str], hook: str = "") -> str:
    lines = [f"\tchain {name} {{"]
    if hook:
        lines.append(f"\t\ttype filter hook {hook} priority filter; policy accept;")
    return "\n".join([*lines, *(f"\t\t{rule}" for rule in rules), "\t}"]) + "\n"


def bridge_table(reg: Registry) -> str:
    students = _students(reg)
    ports = [f'"{host_interface(user.address)}"' for user in students]
    macs = [mac_address(user.address) for user in students]
    subnet = reg.subnet
    lab_macs = f"{mac_address(str(subnet.network_address))}-{mac_address(str(subnet.broadcast_address))}"
    # Ethernet/IPv4 ARP only: with other sizes the sender and target fields lie elsewhere.
    arp = "arp htype 1 arp ptype ip arp hlen 6 arp plen 4"
    # To a student's port: its own IPv4 and ARP in one lookup each, the rest checked (to_student).
    to_port = [
        "oifname . ether daddr . ip daddr @port_mac_ip accept",
        f"{arp} oifname . ether daddr . arp daddr ip @port_mac_ip accept",
        "oifname @ports jump to_student",
    ]
    forward = to_port if reg.allow_container_traffic else ["iifname @ports drop", "oifname @ports drop"]
    port_mac_ips = [
        f"{port} . {mac} . {user.address}" for port, mac, user in zip(ports, macs, students, strict=True)
    ]
    # One set of (port, MAC, IP) serves every check on a student's port: a port has one of
    # each, so two lookups that both hit it pin the frame's MAC and IP to the port's own.
    parts = [
        _set("ports", "ifname", ports),
        _set("port_mac_ip", "ifname . ether_addr . ipv4_addr", port_mac_ips),
        _chain("prerouting", [
            # The bulk of it, a student's IPv4 from its own MAC and IP: one lookup.
            "iifname . ether saddr . ip saddr @port_mac_ip accept",
            "iifname @ports jump student",
            # Any other port: no address of the lab's.
            f"ether saddr {lab_macs} drop",
            f"arp saddr ether {lab_macs} drop",
            f"arp saddr ip {subnet} drop",
            f"ip saddr {subnet} drop",
        ], hook="prerouting"),
        _chain("student", [
            f"{arp} iifname . ether saddr . arp saddr ip @port_mac_ip "
            "iifname . arp saddr ether . arp saddr ip @port_mac_ip accept",
            "drop",  # IPv6, VLAN tags, any other protocol: none at all
        ]),
        _chain("forward", forward, hook="forward"),
        _chain("output", to_port, hook="output"),
        # A student's port gets frames for its MAC and group (broadcast, multicast) frames:
        # no unicast flooded for a MAC whose port is gone (a stopped container).
        _chain("to_student", [
            "ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 accept",
            "drop",
        ]),
    ]  # fmt: skip
    return f"table bridge {table_name(reg)} {{\n" + "\n".join(parts) + "}\n"


def deny_networks(reg: Registry) -> list[str]:
    """egress_deny without overlaps (an interval set refuses them), as nft prints them."""
    networks = ipaddress.collapse_addresses(ipaddress.IPv4Network(text) for text in reg.egress_deny)
    return [str(net.network_address) if net.prefixlen == 32 else str(net) for net in networks]


def inet_table(reg: Registry) -> str:
    bridge = f'"{reg.bridge}"'
    forward = ["ct state established,related accept"]
    if not reg.allow_container_traffic:
        forward.append(f"oifname {bridge} drop")  # another container, routed by the host
    forward.append("ip daddr @deny drop")
    parts = [
        _set("deny", "ipv4_addr", deny_networks(reg), flags="interval"),
        # After conntrack (priority -200) and before input and forward: pings of the host count too.
        _set("flows", "ipv4_addr", [], flags="dynamic", size=FLOW_KEYS),
        _chain("prerouting", [
            f"iifname {bridge} ct state new add @flows {{ ip saddr ct count over {TRACKED_FLOWS} }} drop",
        ], hook="prerouting"),
        _chain("input", [
            f"iifname != {bridge} return",
            "ct state established,related accept",
            "icmp type echo-request accept",
            "drop",
        ], hook="input"),
        _chain("forward", [f"iifname != {bridge} return", *forward], hook="forward"),
    ]  # fmt: skip
    return f"table inet {table_name(reg)} {{\n" + "\n".join(parts) + "}\n"


def tables(reg: Registry) -> dict[str, str]:
    """family -> the table's text, as `nft list table FAMILY NAME` prints it."""
    return {BRIDGE: bridge_table(reg), INET: inet_table(reg)}


def rebuild_script(reg: Registry) -> str:
    """Input for one `nft -f -`: both tables replaced in one transaction.

    `table` first makes each one exist, so the `delete` cannot fail; the
    kernel applies all of it or nothing, and packets never see a half.
    """
    name = table_name(reg)
    return "".join(f"table {family} {name}\ndelete table {family} {name}\n{text}"
                   for family, text in tables(reg).items())  # fmt: skip


def delete_script(reg: Registry) -> str:
    name = table_name(reg)
    return "".join(f"table {family} {name}\ndelete table {family} {name}\n" for family in FAMILIES)


def normalized(text: str) -> str:
    """The ruleset text with nft's layout taken out: blanks collapsed, set elements sorted.

    A dynamic set's elements are left out: they are the kernel's running
    state, not the registry's (the flows set lists each container that has a
    flow open through the host), and a table that differed by them would be
    rebuilt, its counts with it, whenever a container had a connection open.
    """
    words = " ".join(text.split())
    out: list[str] = []
    while True:
        before, found, rest = words.partition("elements = { ")
        if not found:
            return "".join([*out, before])
        elements, _, words = rest.partition(" }")
        if before.endswith("flags dynamic "):
            out.append(before.rstrip())
        else:
            out.append(before + found + ", ".join(sorted(elements.split(", "))) + " }")


def problems(reg: Registry, listed: dict[str, str | None]) -> list[str]:
    """What is wrong with the tables; listed: family -> `nft list table` output, None when missing."""
    found = []
    for family, wanted in tables(reg).items():
        text = listed.get(family)
        if text is None:
            found.append(f"nftables table {family} {table_name(reg)} is missing")
        elif normalized(text) != normalized(wanted):
            found.append(f"nftables table {family} {table_name(reg)} differs from what the registry wants")
    return found
