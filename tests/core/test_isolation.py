"""isolation: the nftables tables the registry wants, exactly; and how apply, doctor and add use them."""

from __future__ import annotations

import pathlib

import pytest

from gpushell.admin import apply, doctor
from gpushell.core import isolation
from gpushell.core.errors import GpushellError
from gpushell.core.forward import NatTable
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from gpushell.system import nftrun
from gpushell.system.runner import Result

DATA = pathlib.Path(__file__).parents[1] / "data"
TOP = (
    "bridge: gptabbr\nsubnet: 10.210.3.0/24\nports: 30001-30999\nchain: GPTAB-X\n"
    "egress_deny: [192.168.10.0/24, 10.9.9.9, 11.0.0.0/8, 11.2.0.0/16]\n"
)
USERS = (
    "users:\n"
    "  alice:\n    port: 30001\n    ip: 10.210.3.12\n    idmap: 2000000000\n"
    "  bob:\n    port: 30002\n    ip: 10.210.3.3\n    idmap: 2000065536\n"
)
REG = parse(TOP + USERS, "/etc/gpushell.yaml")
ALLOWING = parse(TOP + "allow_container_traffic: true\n" + USERS, "/etc/gpushell.yaml")
EMPTY = parse("bridge: lxcbr0\nsubnet: 10.0.3.0/24\nusers: {}\n", "/etc/gpushell.yaml")

BRIDGE = """\
table bridge gptab-x {
	set ports {
		type ifname
		elements = { "gs0ad20303", "gs0ad2030c" }
	}

	set port_mac_ip {
		type ifname . ether_addr . ipv4_addr
		elements = { "gs0ad20303" . 02:00:0a:d2:03:03 . 10.210.3.3, "gs0ad2030c" . 02:00:0a:d2:03:0c . 10.210.3.12 }
	}

	chain prerouting {
		type filter hook prerouting priority filter; policy accept;
		iifname . ether saddr . ip saddr @port_mac_ip accept
		iifname @ports jump student
		ether saddr 02:00:0a:d2:03:00-02:00:0a:d2:03:ff drop
		arp saddr ether 02:00:0a:d2:03:00-02:00:0a:d2:03:ff drop
		arp saddr ip 10.210.3.0/24 drop
		ip saddr 10.210.3.0/24 drop
	}

	chain student {
		arp htype 1 arp ptype ip arp hlen 6 arp plen 4 iifname . ether saddr . arp saddr ip @port_mac_ip iifname . arp saddr ether . arp saddr ip @port_mac_ip accept
		drop
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname @ports drop
		oifname @ports drop
	}

	chain output {
		type filter hook output priority filter; policy accept;
		oifname . ether daddr . ip daddr @port_mac_ip accept
		arp htype 1 arp ptype ip arp hlen 6 arp plen 4 oifname . ether daddr . arp daddr ip @port_mac_ip accept
		oifname @ports jump to_student
	}

	chain to_student {
		ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 accept
		drop
	}
}
"""  # noqa: E501 - nft prints a rule on one line

INET = """\
table inet gptab-x {
	set deny {
		type ipv4_addr
		flags interval
		elements = { 10.9.9.9, 11.0.0.0/8, 192.168.10.0/24 }
	}

	set flows {
		type ipv4_addr
		size 65535
		flags dynamic
	}

	chain prerouting {
		type filter hook prerouting priority filter; policy accept;
		iifname "gptabbr" ct state new add @flows { ip saddr ct count over 8192 } drop
	}

	chain input {
		type filter hook input priority filter; policy accept;
		iifname != "gptabbr" return
		ct state established,related accept
		icmp type echo-request accept
		drop
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname != "gptabbr" return
		ct state established,related accept
		oifname "gptabbr" drop
		ip daddr @deny drop
	}
}
"""


def test_tables_are_named_after_the_chain() -> None:
    assert isolation.table_name(REG) == "gptab-x"
    assert isolation.table_name(EMPTY) == "gpushell"


def test_the_bridge_table_exactly() -> None:
    assert isolation.bridge_table(REG) == BRIDGE


def test_the_inet_table_exactly() -> None:
    assert isolation.inet_table(REG) == INET


def test_container_traffic_allowed_takes_out_the_drops_between_containers() -> None:
    bridge, inet = isolation.bridge_table(ALLOWING), isolation.inet_table(ALLOWING)
    assert bridge == BRIDGE.replace(
        "\t\tiifname @ports drop\n\t\toifname @ports drop\n",
        "\t\toifname . ether daddr . ip daddr @port_mac_ip accept\n"
        "\t\tarp htype 1 arp ptype ip arp hlen 6 arp plen 4 "
        "oifname . ether daddr . arp daddr ip @port_mac_ip accept\n"
        "\t\toifname @ports jump to_student\n",
    )
    assert inet == INET.replace('\t\toifname "gptabbr" drop\n', "")


def test_no_students_leaves_empty_sets_and_guards_the_whole_subnet() -> None:
    bridge, inet = isolation.bridge_table(EMPTY), isolation.inet_table(EMPTY)
    assert "\tset ports {\n\t\ttype ifname\n\t}\n" in bridge
    # The gateway's address and every one not yet given to a student.
    assert "\t\tip saddr 10.0.3.0/24 drop\n" in bridge
    assert "\t\tether saddr 02:00:0a:00:03:00-02:00:0a:00:03:ff drop\n" in bridge
    assert "\tset deny {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}\n" in inet
    assert 'iifname != "lxcbr0" return' in inet


def test_egress_deny_is_collapsed_for_the_interval_set() -> None:
    # 11.2.0.0/16 lies inside 11.0.0.0/8: nft would refuse both in one interval set.
    assert isolation.deny_networks(REG) == ["10.9.9.9", "11.0.0.0/8", "192.168.10.0/24"]


def test_the_rebuild_is_one_transaction_replacing_both_tables() -> None:
    assert isolation.rebuild_script(REG) == (
        "table bridge gptab-x\ndelete table bridge gptab-x\n" + BRIDGE
        + "table inet gptab-x\ndelete table inet gptab-x\n" + INET
    )  # fmt: skip
    assert isolation.delete_script(REG) == (
        "table bridge gptab-x\ndelete table bridge gptab-x\ntable inet gptab-x\ndelete table inet gptab-x\n"
    )


def listed() -> dict[str, str | None]:
    """What nft 1.0.6 listed after loading rebuild_script(REG): its own wrapping and order."""
    return {
        "bridge": (DATA / "nft_list_bridge.txt").read_text(),
        "inet": (DATA / "nft_list_inet.txt").read_text(),
    }


def test_nfts_own_listing_matches_what_the_registry_wants() -> None:
    assert listed()["bridge"] != BRIDGE  # wrapped by nft
    assert isolation.problems(REG, listed()) == []


def test_a_missing_or_changed_table_is_a_problem() -> None:
    changed = listed()
    changed["inet"] = (changed["inet"] or "").replace('\t\toifname "gptabbr" drop\n', "")
    changed["bridge"] = None
    assert isolation.problems(REG, changed) == [
        "nftables table bridge gptab-x is missing",
        "nftables table inet gptab-x differs from what the registry wants",
    ]


def test_a_student_more_or_less_is_a_difference() -> None:
    assert isolation.problems(REG.with_users({"bob": REG.users["bob"]}), listed()) == [
        "nftables table bridge gptab-x differs from what the registry wants",
    ]


def test_normalized_ignores_layout_and_element_order_only() -> None:
    assert isolation.normalized("a {\n\telements = { b,\n\t\t     a }\n}\n") == "a { elements = { a, b } }"
    assert isolation.normalized("x  y\n") != isolation.normalized("x z")


def test_the_flows_sets_live_elements_are_no_difference() -> None:
    """Each container with a flow open through the host is an element of the dynamic flows set."""
    live = listed()
    flows = "\t\tflags dynamic\n"
    assert flows in (live["inet"] or "")
    live["inet"] = (live["inet"] or "").replace(
        flows, flows + "\t\telements = { 10.0.3.3 ct count over 8192, 10.0.3.2 ct count over 8192 }\n"
    )
    assert isolation.problems(REG, live) == []
    # A static set's elements still count: a student more or less is a difference.
    assert isolation.problems(REG.with_users({"bob": REG.users["bob"]}), live) == [
        "nftables table bridge gptab-x differs from what the registry wants",
    ]


# --- the side-effect part, with nft faked -------------------------------------------


class FakeNft:
    def __init__(self, tables: dict[str, str | None]) -> None:
        self.tables = tables
        self.calls: list[tuple[list[str], str | None]] = []

    def run(self, argv: list[str], *, stdin: str | None = None, **_: object) -> Result:
        self.calls.append((argv, stdin))
        if argv[1] != "list":
            return Result(0, "", "")
        text = self.tables.get(argv[3])
        return Result(1, "", "Error: No such file or directory") if text is None else Result(0, text, "")


@pytest.fixture
def nft(monkeypatch: pytest.MonkeyPatch) -> FakeNft:
    fake = FakeNft(listed())
    monkeypatch.setattr(nftrun, "run", fake.run)
    return fake


def test_ensure_leaves_right_tables_alone(nft: FakeNft) -> None:
    assert nftrun.ensure(REG) is False
    assert [argv for argv, _ in nft.calls] == [
        ["nft", "list", "table", "bridge", "gptab-x"],
        ["nft", "list", "table", "inet", "gptab-x"],
    ]


def test_ensure_rebuilds_a_missing_table_in_one_nft_call(nft: FakeNft) -> None:
    nft.tables["inet"] = None
    assert nftrun.ensure(REG) is True
    assert nft.calls[-1] == (["nft", "-f", "-"], isolation.rebuild_script(REG))


def test_after_change_warns_instead_of_failing(nft: FakeNft, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(argv: list[str], **_: object) -> Result:
        raise GpushellError("nft failed: Error")

    nft.tables["bridge"] = None
    monkeypatch.setattr(nftrun, "run", broken)
    warned: list[str] = []
    assert nftrun.after_change(REG, warned.append) is False
    assert warned == ["network isolation rules not rebuilt (nft failed: Error); run gpushell-admin apply"]


def test_a_host_without_nft_reports_it_as_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(argv: list[str], **_: object) -> Result:
        raise GpushellError("could not run nft")

    monkeypatch.setattr(nftrun, "run", missing)
    assert nftrun.problems(REG) == ["cannot read the nftables tables: could not run nft"]


# --- apply and doctor --------------------------------------------------------------------


def test_apply_plans_a_rebuild_for_each_problem_and_makes_it_with_one_nft_call(nft: FakeNft) -> None:
    state = apply.HostState(
        table=NatTable(""), bridge_ready=True, forwarding_on=True, configs={}, accounts={}, states={},
        isolation=("nftables table bridge gptab-x is missing",),
    )  # fmt: skip
    changes = [c for c in apply.plan(REG, Paths(), state).changes if c.kind == apply.ISOLATION]
    assert [(c.subject, c.text) for c in changes] == [
        ("gptab-x", "rebuild the nftables isolation tables: nftables table bridge gptab-x is missing")
    ]
    apply.execute_change(changes[0], REG, Paths())
    assert nft.calls == [(["nft", "-f", "-"], isolation.rebuild_script(REG))]


def test_doctor_says_apply_fixes_the_tables() -> None:
    facts = dict.fromkeys(doctor.Facts.__dataclass_fields__)
    missing = doctor.Facts(**{**facts, "isolation": ("nftables table bridge gptab-x is missing",)})  # type: ignore[arg-type]
    (finding,) = doctor.check_isolation(REG, Paths(), missing)
    assert finding.line() == "FAIL: nftables table bridge gptab-x is missing — fix: gpushell-admin apply"
    right = doctor.Facts(**{**facts, "isolation": ()})  # type: ignore[arg-type]
    assert doctor.check_isolation(REG, Paths(), right) == [
        doctor.Finding(True, "nftables tables bridge gptab-x and inet gptab-x (isolation) match the registry")
    ]
    unexamined = doctor.Facts(**{**facts, "isolation": None})  # type: ignore[arg-type]
    assert doctor.check_isolation(REG, Paths(), unexamined) == []
