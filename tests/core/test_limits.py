"""Per-student limits: the registry's `limits:`, `set`, and the LXC lines for cgroup v1 and v2."""

from __future__ import annotations

import pytest

from gpushell.admin import editing
from gpushell.containers.cgroups import CGROUP_V1, CGROUP_V2, CgroupLayout, layout
from gpushell.containers.lxcconfig import container_config, limit_lines
from gpushell.core import usersettings
from gpushell.core.allocate import host_interface
from gpushell.core.errors import GpushellError
from gpushell.core.model import DEFAULT_LIMITS, Limits
from gpushell.core.registry import RegistryError, parse, size_in_bytes, size_text
from gpushell.system import registry_cache

BASE = """\
subnet: 10.0.3.0/24
users:
  alice:
    port: 22001
    ip: 10.0.3.2
    idmap: 1000000
    limits: {memory: 32G, cpus: 0.5}
  bob:
    port: 22002
    ip: 10.0.3.3
    idmap: 1065536
"""


def test_without_limits_every_container_gets_the_finite_defaults():
    reg = parse(BASE.replace("    limits: {memory: 32G, cpus: 0.5}\n", ""), "/r")
    assert reg.limits == DEFAULT_LIMITS
    assert reg.users["bob"].limits == DEFAULT_LIMITS
    assert (DEFAULT_LIMITS.memory, DEFAULT_LIMITS.cpus, DEFAULT_LIMITS.pids) == (8 * 2**30, 4.0, 4096)


def test_a_users_limits_override_only_the_keys_they_name():
    reg = parse("limits: {memory: 4G, cpus: 2, pids: 500}\n" + BASE, "/r")
    assert reg.users["alice"].limits == Limits(memory=32 * 2**30, cpus=0.5, pids=500)
    assert reg.users["bob"].limits == Limits(memory=4 * 2**30, cpus=2.0, pids=500)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("{memory: lots}", "users.alice.limits.memory: 'lots' is not a size like 16G or 512M"),
        ("{memory: 1M}", "users.alice.limits.memory: '1M' must be between 64M and 1024T"),
        ("{cpus: 0}", "users.alice.limits.cpus: 0 is not a number of CPUs between 0.01 and 1024"),
        ("{cpus: '4'}", "users.alice.limits.cpus: '4' is not a number of CPUs"),
        ("{pids: 5}", "users.alice.limits.pids: 5 is outside 32..4194304"),
        ("{swap: 1G}", "users.alice.limits.swap: unknown key"),
        ("unlimited", "users.alice.limits: must be a mapping"),
    ],
)
def test_bad_limits_name_the_line_and_field(limits: str, message: str):
    with pytest.raises(RegistryError) as caught:
        parse(BASE.replace("{memory: 32G, cpus: 0.5}", limits), "/r")
    assert caught.value.problems[0].startswith(f"/r:7: {message}")


@pytest.mark.parametrize(
    ("text", "size"),
    [("16G", 16 * 2**30), ("512M", 512 * 2**20), ("1.5G", 3 * 2**29), ("2GiB", 2**31), ("1t", 2**40),
     (1073741824, 2**30)],
)  # fmt: skip
def test_sizes(text: object, size: int):
    assert size_in_bytes(text) == size


def test_size_text_reads_back():
    for size in (16 * 2**30, 512 * 2**20, 3 * 2**29, 2**40):
        assert size_in_bytes(size_text(size)) == size
    assert size_text(3 * 2**29) == "1.5G"


def test_v1_lines_cap_memory_swap_cpu_and_pids():
    limits = Limits(memory=2**30, cpus=1.5, pids=256)
    assert limit_lines(limits, CGROUP_V1) == [
        "lxc.cgroup.memory.limit_in_bytes = 1073741824",
        "lxc.cgroup.memory.memsw.limit_in_bytes = 2147483648",
        "lxc.cgroup.cpu.cfs_period_us = 100000",
        "lxc.cgroup.cpu.cfs_quota_us = 150000",
        "lxc.cgroup.cpu.shares = 128",
        "lxc.cgroup.pids.max = 256",
    ]


def test_v2_lines_are_the_unified_keys():
    limits = Limits(memory=2**30, cpus=0.5, pids=256)
    assert limit_lines(limits, CGROUP_V2) == [
        "lxc.cgroup2.memory.max = 1073741824",
        "lxc.cgroup2.memory.swap.max = 1073741824",
        "lxc.cgroup2.cpu.max = 50000 100000",
        "lxc.cgroup2.cpu.weight = 12",
        "lxc.cgroup2.pids.max = 256",
    ]


def test_no_swap_line_where_the_kernel_cannot_limit_swap():
    # LXC refuses to start a container whose config names a missing file.
    for version in (1, 2):
        lines = limit_lines(DEFAULT_LIMITS, CgroupLayout(version, swap=False))
        assert not [line for line in lines if "swap" in line or "memsw" in line]


def test_container_config_has_the_users_limits_in_the_hosts_layout():
    reg = parse(BASE, "/r")
    v2 = container_config(reg, reg.users["alice"], "/r/rootfs", cgroup=CGROUP_V2).splitlines()
    assert "lxc.cgroup2.memory.max = 34359738368" in v2
    assert "lxc.cgroup2.cpu.max = 50000 100000" in v2
    assert not [
        line for line in v2 if line.startswith("lxc.cgroup.memory") or line.startswith("lxc.cgroup.pids")
    ]
    v1 = container_config(reg, reg.users["bob"], "/r/rootfs", cgroup=CGROUP_V1).splitlines()
    assert "lxc.cgroup.pids.max = 4096" in v1
    assert f"lxc.net.0.veth.pair = {host_interface('10.0.3.3')}" in v1


def test_host_interface_names_are_short_unique_and_stable():
    assert host_interface("10.0.3.2") == "gs0a000302"
    assert host_interface("192.168.255.254") == "gsc0a8fffe"
    assert len(host_interface("255.255.255.255")) <= 15


def test_layout_reads_the_hosts_cgroup_mounts(tmp_path):
    (tmp_path / "memory").mkdir()
    assert layout(str(tmp_path)) == CgroupLayout(1, swap=False)
    (tmp_path / "memory" / "memory.memsw.limit_in_bytes").write_text("0")
    assert layout(str(tmp_path)) == CgroupLayout(1, swap=True)
    (tmp_path / "cgroup.controllers").write_text("memory pids")
    assert layout(str(tmp_path)).version == 2


def test_the_compiled_copy_keeps_every_limit():
    reg = parse("limits: {pids: 700}\negress_deny: [192.168.1.0/24]\n" + BASE, "/r")
    copy = registry_cache.registry_from_plain(registry_cache.to_plain(reg))
    assert copy.users["alice"].limits == reg.users["alice"].limits
    assert copy.limits == reg.limits
    assert copy.egress_deny == ("192.168.1.0/24",)


def test_set_writes_limits_into_the_users_own_mapping():
    values = usersettings.parse_assignments(["memory=16g", "pids=1024"])
    text = editing.edit_user(BASE, "alice", values)
    reg = parse(text, "/r")
    assert reg.users["alice"].limits == Limits(memory=16 * 2**30, cpus=0.5, pids=1024)
    assert reg.users["bob"].limits == DEFAULT_LIMITS
    text = editing.edit_user(text, "bob", usersettings.parse_assignments(["cpus=0.25"]))
    assert parse(text, "/r").users["bob"].limits == DEFAULT_LIMITS.replace(cpus=0.25)


@pytest.mark.parametrize("word", ["memory=16Q", "memory=1M", "cpus=0", "cpus=many", "pids=10", "pids=-1"])
def test_set_refuses_bad_limits_in_one_line(word: str):
    with pytest.raises(GpushellError) as caught:
        usersettings.parse_assignments([word])
    assert caught.value.user_message.startswith(word.split("=")[0] + "=")
    assert "\n" not in caught.value.user_message


def test_set_says_limits_apply_at_the_next_start():
    reg = parse(BASE, "/r")
    old = reg.users["alice"]
    new = old.replace(limits=old.limits.replace(memory=2**30))
    notes = editing.set_effects(old, new, running=True)
    assert notes == [
        "limits memory=32G cpus=0.5 pids=4096 disk=50G -> memory=1G cpus=0.5 pids=4096 disk=50G: "
        "config regenerated, takes effect at the container's next start (restart it to apply now)"
    ]


def test_egress_deny_and_the_traffic_switch():
    reg = parse("allow_container_traffic: true\negress_deny: [192.168.10.7/24, 10.9.0.0/16]\n" + BASE, "/r")
    assert reg.allow_container_traffic is True
    assert reg.egress_deny == ("192.168.10.0/24", "10.9.0.0/16")
    with pytest.raises(RegistryError) as caught:
        parse("egress_deny: [nas]\n" + BASE, "/r")
    assert "egress_deny: 'nas' is not an IPv4 network" in caught.value.problems[0]


def test_disk_is_a_limit_like_the_others_and_storage_a_setting():
    reg = parse(
        "storage: btrfs\nlimits: {disk: 100G}\n" + BASE.replace("cpus: 0.5}", "cpus: 0.5, disk: 20G}"), "/r"
    )
    assert reg.storage == "btrfs"
    assert reg.limits.disk == 100 * 2**30
    assert reg.users["alice"].limits.disk == 20 * 2**30
    assert reg.users["bob"].limits.disk == 100 * 2**30
    assert parse(BASE, "/r").storage == "dir" and DEFAULT_LIMITS.disk == 50 * 2**30
    copy = registry_cache.registry_from_plain(registry_cache.to_plain(reg))
    assert (copy.storage, copy.limits, copy.users["alice"].limits) == (
        "btrfs",
        reg.limits,
        reg.users["alice"].limits,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("storage: zfs\n", "/r:1: storage: 'zfs' is not a storage kind (dir or btrfs)"),
        ("limits: {disk: 10M}\n", "/r:1: limits.disk: '10M' must be between 256M and 1024T"),
        ("limits: {disk: much}\n", "/r:1: limits.disk: 'much' is not a size like 16G or 512M"),
    ],
)
def test_bad_storage_or_disk_is_one_line(text: str, message: str):
    with pytest.raises(RegistryError) as caught:
        parse(text + BASE, "/r")
    assert caught.value.problems[0].startswith(message)


def test_set_disk_goes_into_the_users_limits_and_applies_at_the_next_start():
    values = usersettings.parse_assignments(["disk=80g"])
    assert values == {"disk": "80G"} and "disk" in usersettings.SETTABLE
    reg = parse(editing.edit_user(BASE, "alice", values), "/r")
    assert reg.users["alice"].limits == Limits(memory=32 * 2**30, cpus=0.5, pids=4096, disk=80 * 2**30)
    with pytest.raises(GpushellError) as caught:
        usersettings.parse_assignments(["disk=100M"])
    assert caught.value.user_message == "disk=100M: use a size like 50G or 1T (at least 256M)"
