"""poolmove.plan: which students `storage migrate` moves on a cluster (the moves themselves run on a
real cluster in tests/integration/test_cluster.py)."""

from __future__ import annotations

from gpushell.admin import poolmove
from gpushell.core.registry import parse

CLUSTER = """\
backend: lxd
bridge: labnet
subnet: 10.9.0.0/24
lxd:
  credentials: /etc/gpushell/lxd
  pool: fast
  members:
    m1: {address: 192.168.5.11}
users:
  alice: {port: 22001, ip: 10.9.0.2, idmap: 1000000, member: m1}
  bob: {port: 22002, ip: 10.9.0.3, idmap: 1065536, member: m1}
  carol: {port: 22003, ip: 10.9.0.4, idmap: 1131072, member: m1}
  dave: {port: 22004, ip: 10.9.0.5, idmap: 1196608, member: m1}
"""


def test_plan_moves_those_on_another_pool_and_names_those_without_a_container() -> None:
    reg = parse(CLUSTER, "/etc/gpushell.yaml")
    assert reg.cluster is not None and reg.cluster.pool == "fast"
    alice, bob, carol, dave = (reg.users[name] for name in ("alice", "bob", "carol", "dave"))
    pools = {"alice": "default", "bob": "fast", "carol": "", "stray": "default"}
    todo, there, missing = poolmove.plan([alice, bob, carol, dave], pools, reg.cluster.pool)
    # carol's disk names no pool (the engine did not describe it): moved, the engine decides.
    assert (todo, there, missing) == ([alice, carol], [bob], [dave])
    assert poolmove.plan([], pools, "fast") == ([], [], [])
