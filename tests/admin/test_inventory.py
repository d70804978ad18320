"""inventory: rows and warnings for `gpushell-admin list`, rendered as a table or JSON."""

from __future__ import annotations

import json

import pytest

from gpushell.admin import listing
from gpushell.admin.listing import Inventory, Row
from gpushell.core.forward import NatTable, jump_rule, user_rule
from gpushell.core.model import Limits
from gpushell.core.registry import parse
from tests.fakes import FakeBackend

REG = parse(
    "chain: GPUSHELL\nmasquerade: false\ntemplate: tpl\nlxcpath: /var/lib/lxc\nusers:\n"
    "  alice:\n    port: 22001\n    ip: 10.0.3.2\n    idmap: 1000000\n    gpus: [0, 1]\n"
    "  bob:\n    port: 22002\n    ip: 10.0.3.3\n    idmap: 1065536\n    container: bobbox\n",
    "/etc/gpushell.yaml",
)


def table(*extra: str) -> NatTable:
    rules = [jump_rule("PREROUTING", "GPUSHELL"), jump_rule("OUTPUT", "GPUSHELL")]
    rules += [user_rule("GPUSHELL", user) for user in REG.users.values()]
    lines = ["*nat", ":GPUSHELL - [0:0]", *(" ".join(rule) for rule in rules), *extra, "COMMIT"]
    return NatTable("\n".join(lines) + "\n")


def test_unregistered_containers_skip_the_template_and_students() -> None:
    assert listing.unregistered_containers(["tpl", "alice", "bobbox", "zed", "bob"], REG) == ["bob", "zed"]


def test_warnings_name_strays_and_orphan_rules_only() -> None:
    assert listing.warnings_for(REG, table(), ["tpl", "alice", "bobbox"]) == []
    orphan = (
        "-A GPUSHELL -p tcp -m tcp --dport 22009 -m comment --comment gpushell:carol"
        " -j DNAT --to-destination 10.0.3.9:22"
    )
    warnings = listing.warnings_for(REG, table(orphan), ["alice", "old"])
    assert warnings[0] == "container old in /var/lib/lxc is not in the registry"
    assert warnings[1].startswith("orphan rule for unregistered gpushell:carol: -A GPUSHELL")
    assert len(warnings) == 2  # bobbox missing from disk is not list's warning


@pytest.mark.parametrize(
    ("count", "text"),
    [(None, "-"), (0, "0B"), (1023, "1023B"), (1536, "1.5K"), (300 * 2**20, "300.0M"), (3 * 2**40, "3.0T")],
)
def test_size_text(count: int | None, text: str) -> None:
    assert listing.size_text(count) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "-"), (0, "00:00:00"), (3725.9, "01:02:05"), (2 * 86400 + 61, "2d 00:01:01")]
)
def test_duration_text(seconds: float | None, text: str) -> None:
    assert listing.duration_text(seconds) == text


ROWS = [
    Row("alice", 22001, "10.0.3.2", "alice", "RUNNING", (0, 1), 12.345, 300 * 2**20, 3725.0,
        Limits(memory=16 * 2**30, cpus=0.5, pids=4096)),
    Row("bob", 22002, "10.0.3.3", "bobbox", "STOPPED", "none"),
]  # fmt: skip


def test_render_table_aligns_columns_and_blanks_unknowns() -> None:
    assert listing.render_table(ROWS) == (
        "USER    PORT  IP        STATE    GPUS  CPU%     MEM    UPTIME\n"
        "alice  22001  10.0.3.2  RUNNING  0,1   12.3  300.0M  01:02:05\n"
        "bob    22002  10.0.3.3  STOPPED  none     -       -         -\n"
    )


def test_json_has_users_and_warnings() -> None:
    data = json.loads(listing.to_json(Inventory(ROWS, ["container old is not in the registry"])))
    assert data["warnings"] == ["container old is not in the registry"]
    assert data["users"][0] == {
        "user": "alice", "port": 22001, "ip": "10.0.3.2", "container": "alice", "state": "RUNNING",
        "gpus": [0, 1], "cpu_percent": 12.345, "memory_bytes": 300 * 2**20, "uptime_seconds": 3725.0,
        "limits": {"memory_bytes": 16 * 2**30, "cpus": 0.5, "pids": 4096, "disk_bytes": 50 * 2**30},
        "expires": None, "expires_in_days": None, "member": "",
    }  # fmt: skip
    assert data["users"][1]["gpus"] == "none" and data["users"][1]["memory_bytes"] is None


def test_gather_gives_a_broken_container_a_blank_row(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FakeBackend({"alice": "STOPPED", "bobbox": "STOPPED"})

    def inspect(name: str) -> tuple[str, int | None]:
        if name == "bobbox":
            raise RuntimeError("error during init")
        return backend.info(name)

    monkeypatch.setattr(backend, "inspect", inspect)
    monkeypatch.setattr(listing.iptables, "read_nat", table)
    found = listing.gather(REG, sample_seconds=0, driver=backend)
    assert [(row.user, row.state, row.memory_bytes) for row in found.rows] == [
        ("alice", "STOPPED", None), ("bob", "UNKNOWN", None),
    ]  # fmt: skip
    assert [row.limits for row in found.rows] == [user.limits for user in REG.users.values()]
    assert found.warnings == ["cannot read the state of bobbox: error during init"]
