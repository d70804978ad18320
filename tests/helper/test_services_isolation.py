"""The login's slow path makes sure the isolation tables exist before a container starts."""

from __future__ import annotations

import os

import pytest

from gpushell.core import forward
from gpushell.core.forward import NatTable
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from gpushell.helper import services
from gpushell.system import iptables, nftrun, registry_store

TEXT = "subnet: 10.0.3.0/24\nusers:\n  alice: {port: 22001, ip: 10.0.3.2, idmap: 1000000}\n"


@pytest.fixture
def world(tmp_path, monkeypatch):
    reg = parse(TEXT, "/etc/gpushell.yaml")
    generation = [7]
    ensured: list[object] = []
    monkeypatch.setattr(iptables, "generation", lambda: generation[0])
    monkeypatch.setattr(iptables, "read_nat", lambda: NatTable("*nat\nCOMMIT\n"))
    monkeypatch.setattr(iptables, "apply", lambda lines: False)
    monkeypatch.setattr(registry_store, "load_all", lambda paths: reg)
    monkeypatch.setattr(nftrun, "ensure", lambda whole: ensured.append(whole) or False)
    ctx = services.Context(Paths(run_dir=str(tmp_path)), reg, None)  # type: ignore[arg-type]
    return ctx, reg, generation, ensured


def test_the_slow_path_checks_the_tables_with_the_whole_registry(world):
    ctx, reg, _generation, ensured = world
    services.ensure_forward(ctx, reg.users["alice"])
    assert ensured == [reg]


def test_an_unchanged_ruleset_skips_the_check(world):
    ctx, reg, _generation, ensured = world
    services.ensure_forward(ctx, reg.users["alice"])
    services.ensure_forward(ctx, reg.users["alice"])
    assert len(ensured) == 1  # the second login found its stamp current


def test_a_moved_ruleset_checks_again(world):
    ctx, reg, generation, ensured = world
    services.ensure_forward(ctx, reg.users["alice"])
    generation[0] += 5  # someone changed any rule: a flush, a reboot, an admin's nft
    services.ensure_forward(ctx, reg.users["alice"])
    assert len(ensured) == 2


# --- the lab's stamp: the first login after a change vouches for the class ------------------

TWO = TEXT + "  bob: {port: 22002, ip: 10.0.3.3, idmap: 1065536}\n"


def nat_text(reg, users) -> str:
    """The nat table as iptables-save prints it when the chain holds these users' rules."""
    lines = ["*nat", f":{reg.chain} - [0:0]"]
    lines += [" ".join(forward.jump_rule(parent, reg.chain)) for parent in forward.JUMP_CHAINS]
    lines += [" ".join(forward.user_rule(reg.chain, reg.users[name])) for name in users]
    lines += [" ".join(forward.masquerade_rule(reg)), "COMMIT", ""]
    return "\n".join(lines)


@pytest.fixture
def lab_of_two(tmp_path, monkeypatch):
    reg = parse(TWO, "/etc/gpushell.yaml")
    state = {"generation": 7, "nat": nat_text(reg, ["alice", "bob"]), "reads": 0}

    def read_nat():
        state["reads"] += 1
        return NatTable(state["nat"], state["generation"])

    monkeypatch.setattr(iptables, "generation", lambda: state["generation"])
    monkeypatch.setattr(iptables, "read_nat", read_nat)
    monkeypatch.setattr(iptables, "apply", lambda lines: bool(lines) and pytest.fail(f"changed: {lines}"))
    monkeypatch.setattr(registry_store, "load_all", lambda paths: reg)
    monkeypatch.setattr(nftrun, "ensure", lambda whole: False)
    ctx = services.Context(Paths(run_dir=str(tmp_path)), reg, None)  # type: ignore[arg-type]
    return ctx, reg, state


def test_after_a_change_the_first_login_vouches_for_the_whole_lab(lab_of_two):
    ctx, reg, state = lab_of_two
    services.ensure_forward(ctx, reg.users["alice"])
    services.ensure_forward(ctx, reg.users["bob"])
    assert state["reads"] == 1  # bob's rule was in alice's look at the whole chain
    with open(ctx.paths.forwards_stamp) as stream:
        assert stream.read().splitlines()[0] == "7"


def test_the_labs_stamp_holds_for_its_generation_only(lab_of_two):
    ctx, reg, state = lab_of_two
    services.ensure_forward(ctx, reg.users["alice"])
    state["generation"] = 9  # a fail2ban ban, an admin's rule
    services.ensure_forward(ctx, reg.users["bob"])
    assert state["reads"] == 2


def test_a_chain_missing_a_rule_vouches_for_nobody(lab_of_two, monkeypatch):
    ctx, reg, state = lab_of_two
    state["nat"] = nat_text(reg, ["alice"])  # bob's rule gone: his login must put it back
    services.ensure_forward(ctx, reg.users["alice"])
    assert not os.path.exists(ctx.paths.forwards_stamp)
    restored: list[list[str]] = []
    monkeypatch.setattr(iptables, "apply", lambda lines: restored.append(list(lines)) or bool(lines))
    monkeypatch.setattr(iptables, "generation", lambda: state["generation"] + len(restored))
    assert services.ensure_forward(ctx, reg.users["bob"]) is True
    assert restored == [[" ".join(forward.user_rule(reg.chain, reg.users["bob"]))]]


def test_the_labs_stamp_vouches_only_for_the_rule_it_names(lab_of_two):
    ctx, reg, state = lab_of_two
    services.ensure_forward(ctx, reg.users["alice"])
    moved = parse(TWO.replace("22002", "22005"), "/etc/gpushell.yaml").users["bob"]  # bob's port changed
    state["nat"] = nat_text(reg, ["alice"]).replace(
        "COMMIT", " ".join(forward.user_rule(reg.chain, moved)) + "\nCOMMIT"
    )
    services.ensure_forward(ctx, moved)
    assert state["reads"] == 2  # his new rule is in no stamp: read and checked
