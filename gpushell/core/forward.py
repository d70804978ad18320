"""Port forwards as iptables rules (pure).

One nat chain (GPUSHELL by default) holds one DNAT rule per student, tagged
``gpushell:NAME``.  PREROUTING and OUTPUT jump to it for local destinations
only, so traffic passing through the host to other machines is never touched.
Every function here turns data into rule text; iptables.py runs it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from .model import Cluster, Registry, User

TAG = "gpushell:"
JUMP_CHAINS = ("PREROUTING", "OUTPUT")


def jump_rule(parent: str, chain: str) -> list[str]:
    return ["-A", parent, "-m", "addrtype", "--dst-type", "LOCAL", "-j", chain]


def destination(user: User, cluster: Cluster | None = None) -> tuple[str, int]:
    """Where the user's port leads: their container's sshd on this host, or their member's proxy.

    On a cluster the member holding the container listens on the student's
    own port (an engine proxy device into the container's port 22), so
    the front door's rule only names the member: a `move` changes the
    address and nothing else.
    """
    if cluster is not None and user.member:
        return cluster.members[user.member].address, user.port
    return user.address, 22


def user_rule(chain: str, user: User, cluster: Cluster | None = None) -> list[str]:
    """The DNAT rule for one user, exactly as iptables-save prints it."""
    address, port = destination(user, cluster)
    return [
        "-A", chain, "-p", "tcp", "-m", "tcp", "--dport", str(user.port),
        "-m", "comment", "--comment", f"{TAG}{user.name}",
        "-j", "DNAT", "--to-destination", f"{address}:{port}",
    ]  # fmt: skip


def member_masquerade_rule(chain: str, member_address: str) -> list[str]:
    """Forwarded connections to a member leave with the front door's address.

    The member then answers through the front door, which undoes the DNAT;
    without it a member with its own gateway would answer the student
    straight from its own address, and their ssh would drop the reply.
    Only connections the front door translated (ctstate DNAT) are touched.
    """
    return ["-A", "POSTROUTING", "-d", f"{member_address}/32", "-p", "tcp",
            "-m", "conntrack", "--ctstate", "DNAT",
            "-m", "comment", "--comment", f"{TAG}{chain}:{member_address}", "-j", "MASQUERADE"]  # fmt: skip


def wanted_member_rules(reg: Registry) -> list[list[str]]:
    """The MASQUERADE rule for each member the registry names; none on one host."""
    members = [] if reg.cluster is None else reg.cluster.members.values()
    return [member_masquerade_rule(reg.chain, member.address) for member in members]


def stale_member_rules(table: NatTable, reg: Registry) -> list[list[str]]:
    """This chain's member MASQUERADE rules that no member of the registry wants (removed, readdressed)."""
    wanted = wanted_member_rules(reg)
    tag = f"{TAG}{reg.chain}:"
    return [
        rule for rule in table.rules_of("POSTROUTING", tag)
        if (comment_of(rule) or "").startswith(tag) and rule not in wanted
    ]  # fmt: skip


def masquerade_rule(reg: Registry) -> list[str]:
    subnet = reg.network
    return ["-A", "POSTROUTING", "-s", subnet, "!", "-d", subnet,
            "-m", "comment", "--comment", f"{TAG}{reg.bridge}", "-j", "MASQUERADE"]  # fmt: skip


class NatTable:
    """The nat table as iptables-save printed it: chains, and rules as token lists.

    Rules are tokenised (shlex, slow) only when asked for, and only those
    of the chain asked about: a login looks at one student's rule among
    maybe a thousand.
    """

    def __init__(self, save_output: str, generation: int | None = None) -> None:
        # nf_tables' ruleset generation from just before the read (iptables.read_nat);
        # None when unknown.  While it stays the same, this table is still exact.
        self.generation = generation
        self.chains: set[str] = set()
        self._lines: list[str] = []
        in_nat = False
        for line in save_output.splitlines():
            if line.startswith("*"):
                in_nat = line == "*nat"
            elif in_nat and line.startswith(":"):
                self.chains.add(line[1:].split()[0])
            elif in_nat and line.startswith("-A "):
                self._lines.append(line)

    @property
    def rules(self) -> list[list[str]]:
        return [_tokens(line) for line in self._lines]

    def rules_of(self, chain: str, *needles: str) -> list[list[str]]:
        """The chain's rules; with needles, only rules whose text contains one of them."""
        head = f"-A {chain} "
        return [
            _tokens(line)
            for line in self._lines
            if line.startswith(head) and (not needles or any(needle in line for needle in needles))
        ]

    def has(self, rule: Sequence[str]) -> bool:
        return list(rule) in self.rules_of(rule[1])


def _tokens(line: str) -> list[str]:
    """A rule line split as a shell would: plain words, and "quoted" words whole.

    iptables-save quotes only whole words and escapes nothing in the rules
    gpushell reads, so a split on blanks and quotes gives what shlex would,
    ten times faster (1000 rules: 30 ms, not 300); anything else (a
    backslash, a single quote, a quote inside a word) goes to shlex.
    """
    if line.isascii() and line.isprintable() and "\\" not in line and "'" not in line:
        parts = line.split('"')
        if len(parts) % 2 == 1 and all(_whole_word(parts, i) for i in range(1, len(parts), 2)):
            tokens: list[str] = []
            for index, part in enumerate(parts):
                if index % 2:
                    tokens.append(part)
                else:
                    tokens.extend(part.split())
            return tokens
    import shlex  # with `re`: only for a line the split above does not take

    return shlex.split(line)


def _whole_word(parts: list[str], index: int) -> bool:
    """Whether the quoted part at index stands alone: blank or line edge on both sides."""
    before, after = parts[index - 1], parts[index + 1]
    starts_line = index == 1 and before == ""
    ends_line = index == len(parts) - 2 and after == ""
    return (starts_line or before.endswith(" ")) and (ends_line or after.startswith(" "))


def comment_of(rule: Sequence[str]) -> str | None:
    for index, token in enumerate(rule[:-1]):
        if token == "--comment":
            return rule[index + 1]
    return None


def dport_of(rule: Sequence[str]) -> str | None:
    for index, token in enumerate(rule[:-1]):
        if token == "--dport":
            return rule[index + 1]
    return None


_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:/!@%+=,-")


def _line(rule: Sequence[str]) -> str:
    """One rule in iptables-restore syntax, which knows double quotes only."""
    return " ".join(token if token and _PLAIN.issuperset(token) else _quoted(token) for token in rule)


def _quoted(token: str) -> str:
    return '"' + token.replace('"', '\\"') + '"'


def _delete(rule: Sequence[str]) -> str:
    return _line(["-D", *rule[1:]])


def chain_lines(table: NatTable, chain: str) -> list[str]:
    """Lines creating the chain and its jumps where they are missing."""
    lines = [] if chain in table.chains else [f":{chain} - [0:0]"]
    lines += [_line(jump_rule(parent, chain)) for parent in JUMP_CHAINS
              if not table.has(jump_rule(parent, chain))]  # fmt: skip
    return lines


def ensure_user_lines(table: NatTable, chain: str, user: User, cluster: Cluster | None = None) -> list[str]:
    """Lines that leave exactly one correct rule for user, nothing if it is there.

    A rule tagged with the user's name but pointing elsewhere (an old IP or
    port) goes, and so does any rule for the same port: an earlier rule for
    the port would shadow the right one.
    """
    wanted = user_rule(chain, user, cluster)
    lines = chain_lines(table, chain)
    if cluster is not None and user.member:
        back = member_masquerade_rule(chain, cluster.members[user.member].address)
        lines += [] if table.has(back) else [_line(back)]
    candidates = table.rules_of(chain, f"{TAG}{user.name}", f"--dport {user.port}")
    mine = [
        rule for rule in candidates
        if comment_of(rule) == f"{TAG}{user.name}" or dport_of(rule) == str(user.port)
    ]  # fmt: skip
    if mine == [wanted]:
        return lines
    return lines + [_delete(rule) for rule in mine] + [_line(wanted)]


def remove_user_lines(table: NatTable, chain: str, name: str) -> list[str]:
    return [_delete(rule) for rule in table.rules_of(chain) if comment_of(rule) == f"{TAG}{name}"]


def rebuild_lines(table: NatTable, reg: Registry, users: Iterable[User]) -> list[str]:
    """Lines that make the chain hold exactly the users' rules, in one pass."""
    lines = chain_lines(table, reg.chain)
    if reg.chain in table.chains:
        lines.append(f"-F {reg.chain}")
    lines += [_line(user_rule(reg.chain, user, reg.cluster)) for user in sorted(users, key=lambda u: u.port)]
    lines += [_delete(rule) for rule in stale_member_rules(table, reg)]
    lines += [_line(back) for back in wanted_member_rules(reg) if not table.has(back)]
    if reg.cluster is None and reg.masquerade and not table.has(masquerade_rule(reg)):
        lines.append(_line(masquerade_rule(reg)))
    return lines


def restore_script(lines: Sequence[str]) -> str:
    """An iptables-restore --noflush input applying lines to the nat table atomically."""
    return "*nat\n" + "".join(f"{line}\n" for line in lines) + "COMMIT\n"
