"""The login's slow path makes sure the isolation tables exist before a container starts."""

from __future__ import annotations

import pytest

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
