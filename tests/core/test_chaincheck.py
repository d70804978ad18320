"""chaincheck: what keeps the nat chain from matching the registry."""

from __future__ import annotations

from gpushell.core import chaincheck
from gpushell.core.forward import NatTable, jump_rule, masquerade_rule, user_rule
from gpushell.core.registry import Registry, parse


def make_registry(masquerade: bool = False) -> Registry:
    return parse(
        f"chain: GPUSHELL\nmasquerade: {str(masquerade).lower()}\nusers:\n"
        "  alice:\n    port: 22001\n    ip: 10.0.3.2\n    idmap: 1000000\n"
        "  bob:\n    port: 22002\n    ip: 10.0.3.3\n    idmap: 1065536\n",
        "/etc/gpushell.yaml",
    )


REG = make_registry()


BOTH = ("PREROUTING", "OUTPUT")


def save(*rules: list[str], chain: bool = True, jumps: tuple[str, ...] = BOTH) -> NatTable:
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]
    if chain:
        lines.append(":GPUSHELL - [0:0]")
    lines += [" ".join(jump_rule(parent, "GPUSHELL")) for parent in jumps]
    lines += [" ".join(rule) for rule in rules]
    return NatTable("\n".join([*lines, "COMMIT"]) + "\n")


ALICE = user_rule("GPUSHELL", REG.users["alice"])
BOB = user_rule("GPUSHELL", REG.users["bob"])


def kinds(table: NatTable, reg: Registry = REG) -> list[tuple[str, str | None]]:
    return [(problem.kind, problem.user) for problem in chaincheck.problems(table, reg)]


def test_a_matching_chain_has_no_problems_in_any_order() -> None:
    assert kinds(save(ALICE, BOB)) == []
    assert chaincheck.chain_matches(save(BOB, ALICE), REG)


def test_missing_chain_and_jumps() -> None:
    table = save(chain=False, jumps=())
    assert kinds(table) == [
        ("no-chain", None), ("no-jump", None), ("no-jump", None), ("missing", "alice"), ("missing", "bob"),
    ]  # fmt: skip
    assert not chaincheck.chain_matches(table, REG)


def test_one_missing_jump_is_named() -> None:
    table = save(ALICE, BOB, jumps=("PREROUTING",))
    messages = [problem.message for problem in chaincheck.problems(table, REG)]
    assert messages == ["no jump from OUTPUT to GPUSHELL for local destinations"]


def test_wrong_duplicate_orphan_and_foreign_rules() -> None:
    wrong_bob = [*BOB[:-1], "10.0.3.99:22"]
    ghost = ["-A", "GPUSHELL", "-p", "tcp", "-m", "tcp", "--dport", "22500", "-m", "comment",
             "--comment", "gpushell:ghost", "-j", "DNAT", "--to-destination", "10.0.3.50:22"]  # fmt: skip
    foreign = ["-A", "GPUSHELL", "-p", "tcp", "--dport", "8080", "-j", "ACCEPT"]
    found = chaincheck.problems(save(ALICE, ALICE, wrong_bob, ghost, foreign), REG)
    assert [(p.kind, p.user) for p in found] == [
        ("duplicate", "alice"), ("missing", "bob"), ("wrong", "bob"), ("orphan", None), ("untagged", None),
    ]  # fmt: skip
    assert found[2].message.endswith("--to-destination 10.0.3.99:22")
    assert "gpushell:ghost" in found[3].message


def test_masquerade_is_required_only_when_configured() -> None:
    reg = make_registry(masquerade=True)
    assert kinds(save(ALICE, BOB), reg) == [("no-masquerade", None)]
    assert kinds(save(ALICE, BOB, masquerade_rule(reg)), reg) == []
