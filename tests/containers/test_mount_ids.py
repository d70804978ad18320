"""The id map of a user with mounts: the student's container id goes to their host account."""

from __future__ import annotations

from gpushell.admin import apply
from gpushell.containers.lxcconfig import container_config, id_map_lines
from gpushell.core.registry import parse

REG = parse(
    "idmap: {start: 1000000, size: 65536}\nusers:\n"
    "  ann:\n    port: 22001\n    ip: 10.0.3.2\n    idmap: 1000000\n"
    "    mounts:\n      - {source: /srv/nas/ann, target: /nas, mode: rw}\n"
    "  ben:\n    port: 22002\n    ip: 10.0.3.3\n    idmap: 1065536\n",
    "/etc/gpushell.yaml",
)


def test_id_map_lines_cover_the_range_once_with_a_hole_at_the_student() -> None:
    assert id_map_lines("u", 1000000, 65536, None) == ["lxc.idmap = u 0 1000000 65536"]
    assert id_map_lines("g", 1000000, 65536, 1003) == [
        "lxc.idmap = g 0 1000000 1000",
        "lxc.idmap = g 1000 1003 1",
        "lxc.idmap = g 1001 1001001 64535",
    ]
    inside = sum(int(line.split()[-1]) for line in id_map_lines("u", 1000000, 65536, 1003))
    assert inside == 65536


def test_only_a_user_with_mounts_and_known_ids_gets_the_hole() -> None:
    ann = container_config(REG, REG.users["ann"], "/r", student_ids=(1003, 1004)).splitlines()
    assert "lxc.idmap = u 1000 1003 1" in ann and "lxc.idmap = g 1000 1004 1" in ann
    assert "lxc.mount.entry = /srv/nas/ann nas none bind,create=dir,rw 0 0" in ann
    ben = container_config(REG, REG.users["ben"], "/r", student_ids=(1005, 1005)).splitlines()
    assert [line for line in ben if line.startswith("lxc.idmap")] == [
        "lxc.idmap = u 0 1065536 65536",
        "lxc.idmap = g 0 1065536 65536",
    ]
    no_account = container_config(REG, REG.users["ann"], "/r").splitlines()
    assert "lxc.idmap = u 0 1000000 65536" in no_account


def test_apply_regenerates_a_config_when_the_host_account_appears() -> None:
    state = apply.HostState(
        table=apply.NatTable(""), bridge_ready=True, forwarding_on=True,
        configs={name: apply.wanted_config(REG, user, "generated") for name, user in REG.users.items()},
        accounts={}, states={}, student_ids={"ann": (1003, 1004)},
    )  # fmt: skip
    configs = [c for c in apply.plan(REG, apply.Paths(), state).changes if c.kind == apply.CONFIG]
    assert [c.subject for c in configs] == ["ann"]
    assert "lxc.idmap = u 1000 1003 1" in configs[0].config
