"""registry.parse: defaults, validation and the `PATH:LINE: field: message` format."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpushell.core.errors import ExitStatus, GpushellError
from gpushell.core.registry import Lending, LoanLimits, Mount, RegistryError, User, parse

PATH = "/etc/gpushell.yaml"


def user_yaml(name: str, port: int, ip: str, idmap: int, indent: str = "  ") -> str:
    inner = indent * 2
    return f"{indent}{name}:\n{inner}port: {port}\n{inner}ip: {ip}\n{inner}idmap: {idmap}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(RegistryError) as info:
        parse(text, PATH)
    err = info.value
    assert err.status == ExitStatus.CONFIG
    assert err.user_message == "\n".join(err.problems)
    assert err.log_message == err.user_message
    return err.problems


def test_defaults():
    reg = parse("hostname: gpu1\n", PATH)
    assert reg.path == PATH
    assert reg.hostname == "gpu1"
    assert reg.bridge == "lxcbr0"
    assert reg.subnet == ipaddress.IPv4Network("10.0.3.0/24")
    assert reg.ports == (22001, 22999)
    assert reg.template == "gpushell-bookworm"
    assert reg.lxcpath == "/var/lib/lxc"
    assert reg.chain == "GPUSHELL"
    assert reg.idmap_start == 1000000
    assert reg.idmap_size == 65536
    assert reg.gpus == "none"
    assert reg.mounts == ()
    assert reg.start_timeout == 60.0
    assert isinstance(reg.start_timeout, float)
    assert reg.idle_timeout == 3600
    assert reg.masquerade is True
    assert reg.users == {}


def test_all_settings_given():
    text = (
        "hostname: gpu1.example.org\n"
        "bridge: br-gpu\n"
        "subnet: 10.20.0.0/16\n"
        "ports: 30000-30010\n"
        "template: tmpl.v2\n"
        "lxcpath: /srv/lxc\n"
        "chain: GPU_FWD\n"
        "idmap: {start: 2000000, size: 131072}\n"
        "gpus: [1, 0]\n"
        "mounts:\n"
        "  - source: /data\n"
        "    target: /mnt/data\n"
        "  - {source: /scratch, target: /scratch, mode: rw}\n"
        "start_timeout: 2.5\n"
        "idle_timeout: 0\n"
        "masquerade: false\n"
        "users:\n" + user_yaml("alice", 30000, "10.20.0.2", 2000000)
    )
    reg = parse(text, PATH)
    assert reg.hostname == "gpu1.example.org"
    assert reg.bridge == "br-gpu"
    assert reg.subnet == ipaddress.IPv4Network("10.20.0.0/16")
    assert reg.ports == (30000, 30010)
    assert reg.template == "tmpl.v2"
    assert reg.lxcpath == "/srv/lxc"
    assert reg.chain == "GPU_FWD"
    assert (reg.idmap_start, reg.idmap_size) == (2000000, 131072)
    assert reg.gpus == (0, 1)
    assert reg.mounts == (Mount("/data", "/mnt/data", True), Mount("/scratch", "/scratch", False))
    assert reg.start_timeout == 2.5
    assert reg.idle_timeout == 0
    assert reg.masquerade is False
    assert reg.gateway == ipaddress.IPv4Address("10.20.0.1")
    assert reg.users == {
        "alice": User(
            name="alice",
            port=30000,
            ip=ipaddress.IPv4Address("10.20.0.2"),
            idmap=2000000,
            container="alice",
            gpus=(0, 1),
            mounts=reg.mounts,
            autostart=False,
        )
    }


def test_gateway_is_first_host():
    assert parse("subnet: 192.168.7.0/24\n", PATH).gateway == ipaddress.IPv4Address("192.168.7.1")
    assert parse("hostname: x\n", PATH).gateway == ipaddress.IPv4Address("10.0.3.1")


def test_user_lookup():
    reg = parse("users:\n" + user_yaml("alice", 22001, "10.0.3.2", 1000000), PATH)
    assert reg.user("alice").port == 22001
    with pytest.raises(GpushellError) as info:
        reg.user("mallory")
    assert info.value.status == ExitStatus.NOT_REGISTERED
    assert info.value.user_message == f"mallory is not registered in {PATH}"
    assert info.value.log_message == f"user 'mallory' has no entry in {PATH}"


def test_user_settings():
    text = (
        "gpus: all\n"
        "mounts:\n  - {source: /data, target: /data}\n"
        "users:\n"
        "  alice:\n"
        "    port: 22001\n"
        "    ip: 10.0.3.2\n"
        "    idmap: 1000000\n"
        "    container: alice-box\n"
        "    gpus: [3]\n"
        "    autostart: true\n"
        "    mounts:\n"
        "      - {source: /home/alice-data, target: /work, mode: rw}\n"
        "  bob:\n"
        "    port: 22002\n"
        "    ip: 10.0.3.3\n"
        "    idmap: 1065536\n"
        "    gpus: none\n"
        "  carol:\n"
        "    port: 22003\n"
        "    ip: 10.0.3.4\n"
        "    idmap: 1131072\n"
    )
    reg = parse(text, PATH)
    alice, bob, carol = reg.users["alice"], reg.users["bob"], reg.users["carol"]
    assert list(reg.users) == ["alice", "bob", "carol"]
    assert alice.container == "alice-box"
    assert alice.gpus == (3,)
    assert alice.autostart is True
    assert alice.mounts == (Mount("/data", "/data", True), Mount("/home/alice-data", "/work", False))
    assert bob.gpus == "none"
    assert bob.container == "bob"
    assert bob.mounts == (Mount("/data", "/data", True),)
    assert carol.gpus == "all"
    assert carol.autostart is False


def test_empty_and_comment_only():
    assert problems("") == [f"{PATH}:1: the registry is empty"]
    assert problems("# nothing here\n\n") == [f"{PATH}:1: the registry is empty"]


def test_invalid_yaml():
    assert problems("hostname: gpu1\nusers: {alice: {port: 22001}\n") == [
        f"{PATH}:3: not valid YAML: did not find expected ',' or '}}'"
    ]
    assert problems("hostname: a: b\n") == [
        f"{PATH}:1: not valid YAML: mapping values are not allowed in this context"
    ]
    assert problems("a: 1\n---\nb: 2\n") == [f"{PATH}:2: not valid YAML: but found another document"]


def test_root_must_be_mapping():
    assert problems("- a\n- b\n") == [f"{PATH}:1: must be a mapping"]


def test_unknown_key():
    assert problems("hostname: gpu1\n\nhostnmae: gpu2\n") == [f"{PATH}:3: hostnmae: unknown key"]


def test_duplicate_setting():
    assert problems("hostname: gpu1\nbridge: br0\nhostname: gpu2\n") == [f"{PATH}:3: hostname: appears twice"]


def test_duplicate_user():
    text = (
        "users:\n"
        + user_yaml("alice", 22001, "10.0.3.2", 1000000)
        + user_yaml("alice", 22002, "10.0.3.3", 1065536)
    )
    assert problems(text) == [f"{PATH}:6: users.alice: appears twice"]


def test_duplicate_user_key():
    text = "users:\n  alice:\n    port: 22001\n    ip: 10.0.3.2\n    idmap: 1000000\n    port: 22002\n"
    assert problems(text) == [f"{PATH}:6: users.alice.port: appears twice"]


def test_unknown_user_key():
    text = "users:\n" + user_yaml("alice", 22001, "10.0.3.2", 1000000) + "    shell: /bin/bash\n"
    assert problems(text) == [f"{PATH}:6: users.alice.shell: unknown key"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("hostname: -gpu", "hostname: '-gpu' is not a valid host name"),
        ("hostname: gpu_1", "hostname: 'gpu_1' is not a valid host name"),
        ("hostname: 12", "hostname: 12 is not a valid host name"),
        ("bridge: averyverylongbridge", "bridge: 'averyverylongbridge' is not a valid bridge name"),
        ("bridge: 'br 0'", "bridge: 'br 0' is not a valid bridge name"),
        (
            "subnet: 10.0.3.1/24",
            "subnet: '10.0.3.1/24' is not an IPv4 subnet (10.0.3.1/24 has host bits set)",
        ),
        ("subnet: 10.0.3.0/31", "subnet: 10.0.3.0/31 is too small for a bridge and containers"),
        ("subnet: fd00::/64", "subnet: 'fd00::/64' is not an IPv4 subnet (Expected 4 octets in 'fd00::')"),
        ("ports: 22001", "ports: 22001 is not a range like 22001-22999"),
        ("ports: 22999-22001", "ports: '22999-22001' must lie within 1024-65535, low end first"),
        ("ports: 80-1000", "ports: '80-1000' must lie within 1024-65535, low end first"),
        ("ports: 60000-70000", "ports: '60000-70000' must lie within 1024-65535, low end first"),
        ("template: -tmpl", "template: '-tmpl' is not a valid container name"),
        ("template: 'a/b'", "template: 'a/b' is not a valid container name"),
        ("lxcpath: var/lib/lxc", "lxcpath: 'var/lib/lxc' is not an absolute path without blanks"),
        ("lxcpath: /var/../etc", "lxcpath: '/var/../etc' must not contain '..'"),
        ("lxcpath: 5", "lxcpath: 5 is not an absolute path without blanks"),
        ("chain: gpushell", "chain: 'gpushell' is not a valid iptables chain name"),
        ("chain: GPU SHELL", "chain: 'GPU SHELL' is not a valid iptables chain name"),
        ("gpus: some", "gpus: 'some' must be all, none or a list of GPU numbers"),
        ("gpus: [0, 0]", "gpus: lists a GPU twice"),
        ("gpus: [-1]", "gpus: [-1] must be all, none or a list of GPU numbers"),
        ("gpus: [1024]", "gpus: [1024] must be all, none or a list of GPU numbers"),
        ("gpus: [true]", "gpus: [True] must be all, none or a list of GPU numbers"),
        ("gpus: 0", "gpus: 0 must be all, none or a list of GPU numbers"),
        ("start_timeout: 0", "start_timeout: 0 is not a number of seconds between 0 and 86400"),
        ("start_timeout: -1.5", "start_timeout: -1.5 is not a number of seconds between 0 and 86400"),
        ("start_timeout: true", "start_timeout: True is not a number of seconds between 0 and 86400"),
        ("start_timeout: '60'", "start_timeout: '60' is not a number of seconds between 0 and 86400"),
        ("idle_timeout: 1.5", "idle_timeout: 1.5 is not a whole number"),
        ("idle_timeout: true", "idle_timeout: True is not a whole number"),
        ("idle_timeout: -1", "idle_timeout: -1 is outside 0..604800"),
        ("idle_timeout: 604801", "idle_timeout: 604801 is outside 0..604800"),
        ("masquerade: 'yes'", "masquerade: 'yes' is not true or false"),
        ("masquerade: 1", "masquerade: 1 is not true or false"),
        ("idmap: 5", "idmap: must be a mapping"),
        ("idmap: {start: 0}", "idmap.start: 0 is outside 1..2147483648"),
        ("idmap: {size: 65535}", "idmap.size: 65535 is outside 65536..2147483648"),
        ("idmap: {start: 1, base: 2}", "idmap.base: unknown key"),
        ("mounts: /data", "mounts: must be a list of mounts"),
        ("users: 5", "users: must be a mapping"),
        ("users: []", "users: must be a mapping"),
        ("snapshot_limit: -1", "snapshot_limit: -1 is outside 0..100"),
        ("snapshot_limit: 101", "snapshot_limit: 101 is outside 0..100"),
        ("snapshot_limit: many", "snapshot_limit: 'many' is not a whole number"),
        ("disabled_actions: rebuild", "disabled_actions: must be a list of action words"),
        ("disabled_actions: [rebuild, 3]", "disabled_actions: must be a list of action words"),
        (
            "disabled_actions: [status, rebuild, shell]",
            "disabled_actions: 'status', 'shell': can turn off only stop, restart, gpus, kill-gpu-process, "
            "snapshot, snapshots, restore, delete-snapshot, rebuild, keys",
        ),
    ],
)
def test_setting_validation(line, message):
    assert problems(f"# gpushell registry\n{line}\n") == [f"{PATH}:2: {message}"]


def test_setting_boundaries_accepted():
    reg = parse(
        "ports: 1024-65535\nsubnet: 10.0.3.0/30\nidle_timeout: 604800\nidmap: {start: 1, size: 65536}\n", PATH
    )
    assert reg.ports == (1024, 65535)
    assert reg.subnet.num_addresses == 4
    assert reg.idle_timeout == 604800
    assert reg.idmap_start == 1
    assert parse("ports: 22001-22001\n", PATH).ports == (22001, 22001)
    assert parse("gpus: []\n", PATH).gpus == ()
    assert parse("gpus: [0, 1023]\n", PATH).gpus == (0, 1023)


def test_every_problem_is_reported():
    text = "hostname: -x\nbridge: ok\nchain: bad\nusers:\n  root:\n    port: 1\n"
    assert problems(text) == [
        f"{PATH}:1: hostname: '-x' is not a valid host name",
        f"{PATH}:3: chain: 'bad' is not a valid iptables chain name",
        f"{PATH}:6: users.root: 'root' is not an allowed user name",
    ]


@pytest.mark.parametrize("name", ["root", "daemon", "bin", "sys", "sync", "nobody", "sshd"])
def test_reserved_user_names(name):
    text = "users:\n" + user_yaml(name, 22001, "10.0.3.2", 1000000)
    assert problems(text) == [f"{PATH}:3: users.{name}: {name!r} is not an allowed user name"]


@pytest.mark.parametrize("name", ["Alice", "1alice", "al ice", "a.b", "-bob", "a" * 33, "al/ice"])
def test_bad_user_names(name):
    text = f"users:\n  '{name}':\n    port: 22001\n    ip: 10.0.3.2\n    idmap: 1000000\n"
    assert problems(text) == [f"{PATH}:3: users.{name}: {name!r} is not an allowed user name"]


@pytest.mark.parametrize("name", ["_svc", "a", "bob-2", "x_y", "a" * 32])
def test_good_user_names(name):
    reg = parse("users:\n" + user_yaml(name, 22001, "10.0.3.2", 1000000), PATH)
    assert list(reg.users) == [name]


def test_users_null_is_empty():
    assert parse("users:\n", PATH).users == {}
    assert parse("users: ~\n", PATH).users == {}
    assert parse("users: {}\n", PATH).users == {}


def test_user_must_be_mapping():
    assert problems("users:\n  alice: 3\n") == [f"{PATH}:2: users.alice: must be a mapping"]


def test_user_missing_keys():
    assert problems("users:\n  alice: {}\n") == [f"{PATH}:2: users.alice: needs idmap, ip, port"]
    assert problems("users:\n  alice:\n    port: 22001\n") == [f"{PATH}:3: users.alice: needs idmap, ip"]


def test_duplicate_port_ip_and_overlap():
    text = (
        "users:\n"
        + user_yaml("alice", 22001, "10.0.3.2", 1000000)
        + user_yaml("bob", 22001, "10.0.3.2", 1000000)
    )
    assert problems(text) == [
        f"{PATH}:7: users.bob.port: 22001 is already used by alice",
        f"{PATH}:8: users.bob.ip: 10.0.3.2 is already used by alice",
        f"{PATH}:9: users.bob.idmap: 1000000 overlaps the range of alice",
    ]


def test_port_used_message_exact_example():
    text = (
        "# registry\nhostname: gpu1\nusers:\n"
        + user_yaml("alice", 22001, "10.0.3.2", 1000000)
        + "  bob:\n    ip: 10.0.3.3\n    port: 22001\n    idmap: 1065536\n"
    )
    assert problems(text) == [f"{PATH}:10: users.bob.port: 22001 is already used by alice"]


def test_duplicate_container():
    text = (
        "users:\n"
        + user_yaml("alice", 22001, "10.0.3.2", 1000000)
        + "  bob:\n    port: 22002\n    ip: 10.0.3.3\n    idmap: 1065536\n    container: alice\n"
    )
    assert problems(text) == [f"{PATH}:10: users.bob.container: alice is already used by alice"]


def test_container_is_template():
    text = "users:\n" + user_yaml("alice", 22001, "10.0.3.2", 1000000) + "    container: gpushell-bookworm\n"
    assert problems(text) == [f"{PATH}:6: users.alice.container: is the template's name"]
    # without a container key the problem points at the entry, which starts on its first key's line
    text = "template: bob\nusers:\n" + user_yaml("bob", 22001, "10.0.3.2", 1000000)
    assert problems(text) == [f"{PATH}:4: users.bob.container: is the template's name"]


def test_bad_container_name():
    text = "users:\n" + user_yaml("alice", 22001, "10.0.3.2", 1000000) + "    container: ../x\n"
    assert problems(text) == [f"{PATH}:6: users.alice.container: '../x' is not a valid container name"]


def test_idmap_overlap_partial_and_adjacent():
    overlapping = (
        "users:\n"
        + user_yaml("alice", 22001, "10.0.3.2", 1000000)
        + user_yaml("bob", 22002, "10.0.3.3", 1065535)
    )
    assert problems(overlapping) == [f"{PATH}:9: users.bob.idmap: 1065535 overlaps the range of alice"]
    below = (
        "users:\n"
        + user_yaml("alice", 22001, "10.0.3.2", 1065535)
        + user_yaml("bob", 22002, "10.0.3.3", 1000000)
    )
    assert problems(below) == [f"{PATH}:9: users.bob.idmap: 1000000 overlaps the range of alice"]
    adjacent = (
        "users:\n"
        + user_yaml("alice", 22001, "10.0.3.2", 1000000)
        + user_yaml("bob", 22002, "10.0.3.3", 1065536)
    )
    assert sorted(parse(adjacent, PATH).users) == ["alice", "bob"]


def test_idmap_limits():
    assert problems("users:\n" + user_yaml("alice", 22001, "10.0.3.2", 999999)) == [
        f"{PATH}:5: users.alice.idmap: 999999 is outside 1000000..4294901760"
    ]
    assert problems("users:\n" + user_yaml("alice", 22001, "10.0.3.2", 4294901761)) == [
        f"{PATH}:5: users.alice.idmap: 4294901761 is outside 1000000..4294901760"
    ]
    reg = parse("users:\n" + user_yaml("alice", 22001, "10.0.3.2", 4294901760), PATH)
    assert reg.users["alice"].idmap == 4294901760


@pytest.mark.parametrize(
    ("port", "message"),
    [
        (22000, "22000 is outside 22001..22999"),
        (23000, "23000 is outside 22001..22999"),
        ("'22001'", "'22001' is not a whole number"),
        ("22001.0", "22001.0 is not a whole number"),
    ],
)
def test_port_outside_range(port, message):
    text = "users:\n  alice:\n    port: " + str(port) + "\n    ip: 10.0.3.2\n    idmap: 1000000\n"
    assert problems(text) == [f"{PATH}:3: users.alice.port: {message}"]


@pytest.mark.parametrize(
    ("ip", "message"),
    [
        ("10.0.3.0", "10.0.3.0 is not a free host address of 10.0.3.0/24"),
        ("10.0.3.1", "10.0.3.1 is not a free host address of 10.0.3.0/24"),
        ("10.0.3.255", "10.0.3.255 is not a free host address of 10.0.3.0/24"),
        ("10.0.4.2", "10.0.4.2 is not a free host address of 10.0.3.0/24"),
        ("10.0.3.256", "'10.0.3.256' is not an IPv4 address"),
        ("fd00::2", "'fd00::2' is not an IPv4 address"),
    ],
)
def test_bad_ip(ip, message):
    text = f"users:\n  alice:\n    port: 22001\n    ip: {ip}\n    idmap: 1000000\n"
    assert problems(text) == [f"{PATH}:4: users.alice.ip: {message}"]


def test_ip_edges_of_subnet_accepted():
    text = (
        "users:\n"
        + user_yaml("alice", 22001, "10.0.3.2", 1000000)
        + user_yaml("bob", 22002, "10.0.3.254", 1065536)
    )
    reg = parse(text, PATH)
    assert reg.users["bob"].ip == ipaddress.IPv4Address("10.0.3.254")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("everything", "'everything' must be all, none or a list of GPU numbers"),
        ("[1, 1]", "lists a GPU twice"),
    ],
)
def test_bad_user_gpus(value, message):
    text = "users:\n" + user_yaml("alice", 22001, "10.0.3.2", 1000000) + f"    gpus: {value}\n"
    assert problems(text) == [f"{PATH}:6: users.alice.gpus: {message}"]


def test_bad_autostart():
    text = "users:\n" + user_yaml("alice", 22001, "10.0.3.2", 1000000) + "    autostart: sometimes\n"
    assert problems(text) == [f"{PATH}:6: users.alice.autostart: 'sometimes' is not true or false"]


def test_mount_validation():
    text = (
        "mounts:\n"
        "  - source: /data\n"
        "    target: /mnt/data\n"
        "    mode: rx\n"
        "  - source: data\n"
        "    target: /x\n"
        "  - source: /a\n"
        "    target: /b/../c\n"
        "  - source: /a\n"
        "  - {target: /a, mode: rw, size: 3}\n"
        "  - 7\n"
    )
    assert problems(text) == [
        f"{PATH}:4: mounts[0].mode: 'rx' must be ro or rw",
        f"{PATH}:5: mounts[1].source: 'data' is not an absolute path without blanks",
        f"{PATH}:8: mounts[2].target: '/b/../c' must not contain '..'",
        f"{PATH}:9: mounts[3]: needs target",
        f"{PATH}:10: mounts[4].size: unknown key",
        f"{PATH}:10: mounts[4]: needs source",
        f"{PATH}:11: mounts[5]: must be a mapping",
        f"{PATH}:11: mounts[5]: needs source and target",
    ]


def test_user_mount_validation():
    text = (
        "users:\n"
        + user_yaml("alice", 22001, "10.0.3.2", 1000000)
        + "    mounts:\n      - {source: /a, target: rel}\n"
    )
    assert problems(text) == [
        f"{PATH}:7: users.alice.mounts[0].target: 'rel' is not an absolute path without blanks"
    ]
    text = "users:\n" + user_yaml("alice", 22001, "10.0.3.2", 1000000) + "    mounts: {source: /a}\n"
    assert problems(text) == [f"{PATH}:6: users.alice.mounts: must be a list of mounts"]


def test_mount_modes():
    reg = parse(
        "mounts:\n  - {source: /a, target: /a, mode: ro}\n  - {source: /b, target: /b, mode: rw}\n", PATH
    )
    assert reg.mounts == (Mount("/a", "/a", readonly=True), Mount("/b", "/b", readonly=False))


def test_path_in_messages_is_the_given_one():
    assert problems("bogus: 1\n") == [f"{PATH}:1: bogus: unknown key"]
    with pytest.raises(RegistryError) as info:
        parse("bogus: 1\n", "/tmp/other.yaml")
    assert info.value.problems == ["/tmp/other.yaml:1: bogus: unknown key"]


def test_unknown_tag_is_a_registry_error():
    assert problems("hostname: !foo gpu1\n") == [
        f"{PATH}:1: not valid YAML: could not determine a constructor for the tag '!foo'"
    ]


def test_nan_start_timeout_refused():
    assert problems("start_timeout: .nan\n") == [
        f"{PATH}:1: start_timeout: nan is not a number of seconds between 0 and 86400"
    ]


def test_self_service_settings():
    text = (
        "snapshot_limit: 2\n"
        "disabled_actions: [rebuild, keys, rebuild]\n"
        "users:\n"
        + user_yaml("alice", 22001, "10.0.3.2", 1000000)
        + user_yaml("bob", 22002, "10.0.3.3", 1065536)
        + "    snapshot_limit: 0\n"
    )
    reg = parse(text, PATH)
    assert reg.snapshot_limit == 2
    assert reg.disabled_actions == ("rebuild", "keys")
    assert reg.users["alice"].snapshot_limit == 2
    assert reg.users["bob"].snapshot_limit == 0
    defaults = parse("hostname: gpu1\n", PATH)
    assert (defaults.snapshot_limit, defaults.disabled_actions) == (3, ())


def test_user_snapshot_limit_validated():
    text = "users:\n" + user_yaml("alice", 22001, "10.0.3.2", 1000000) + "    snapshot_limit: 500\n"
    assert problems(text) == [f"{PATH}:6: users.alice.snapshot_limit: 500 is outside 0..100"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=2, max_size=8))
def test_idmap_overlaps_match_a_pairwise_check(slots):
    """The windowed overlap check finds exactly what comparing every pair would, in file order."""
    size = 65536
    starts = [1000000 + slot * size // 2 for slot in slots]  # half-range steps: overlaps and touches
    text = "users:\n" + "".join(
        user_yaml(f"u{i}", 22001 + i, f"10.0.3.{i + 2}", start) for i, start in enumerate(starts)
    )
    expected = [
        f"users.u{i}.idmap: {start} overlaps the range of u{j}"
        for i, start in enumerate(starts)
        for j in range(i)
        if abs(starts[j] - start) < size
    ]
    if not expected:
        parse(text, PATH)
        return
    found = [line.split(": ", 1)[1] for line in problems(text)]
    assert found == expected


# --- lending: ---------------------------------------------------------------


def test_no_lending_section_means_no_lending():
    reg = parse("users:\n" + user_yaml("alice", 22001, "10.0.3.2", 1000000), PATH)
    assert reg.lending is None
    assert reg.users["alice"].lending is None


def test_lending_defaults():
    reg = parse("lending: {}\n", PATH)
    assert reg.lending == Lending(gpus="all", max_per_student=1, max_duration=86400, idle_return=7200)
    assert reg.lending.notify_command == ()


def test_lending_settings_given():
    text = (
        "lending:\n"
        "  gpus: [3, 2]\n"
        "  max_per_student: 2\n"
        "  max_duration: 1d12h\n"
        "  idle_return: 0\n"
        "  notify_command: [/usr/local/bin/lab-notify, --via, mail]\n"
    )
    assert parse(text, PATH).lending == Lending(
        gpus=(2, 3),
        max_per_student=2,
        max_duration=86400 + 12 * 3600,
        idle_return=0,
        notify_command=("/usr/local/bin/lab-notify", "--via", "mail"),
    )
    line = parse("lending: {notify_command: /usr/bin/logger -t gpushell, idle_return: 30m}\n", PATH)
    assert line.lending.notify_command == ("/usr/bin/logger", "-t", "gpushell")
    assert line.lending.idle_return == 1800


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("gpus: none", "lending.gpus: lends no GPU: leave lending out to lend none"),
        ("gpus: []", "lending.gpus: lends no GPU: leave lending out to lend none"),
        ("gpus: [1, 1]", "lending.gpus: lists a GPU twice"),
        ("max_per_student: 0", "lending.max_per_student: 0 is outside 1..1024"),
        ("max_per_student: two", "lending.max_per_student: 'two' is not a whole number"),
        ("max_duration: 86400", "lending.max_duration: 86400 is not a duration like 30m, 8h or 2d"),
        ("max_duration: 0", "lending.max_duration: 0 is not a duration like 30m, 8h or 2d"),
        ("max_duration: 0m", "lending.max_duration: '0m' must be between 1m and 365d"),
        ("max_duration: 59s", "lending.max_duration: '59s' must be between 1m and 365d"),
        ("max_duration: 366d", "lending.max_duration: '366d' must be between 1m and 365d"),
        ("idle_return: 30s", "lending.idle_return: '30s' must be between 1m and 365d (or 0: never)"),
        ("idle_return: never", "lending.idle_return: 'never' is not a duration like 30m, 8h or 2d"),
        (
            "notify_command: mail -s warning",
            "lending.notify_command: 'mail' is not an absolute path without blanks",
        ),
        ("notify_command: 'sh -c \"mail x\"'", "lending.notify_command: 'sh' is not an absolute path"),
        ("notify_command: []", "lending.notify_command: must be a command"),
        ("notify_command: [/bin/x, 3]", "lending.notify_command: must be a command"),
        (
            "notify_command: [/bin/../bin/sh]",
            "lending.notify_command: '/bin/../bin/sh' must not contain '..'",
        ),
        (
            'notify_command: ["/bin/x", "a\\nb"]',
            "lending.notify_command: has an empty word or one with a control",
        ),
        ('notify_command: ["/bin/x", ""]', "lending.notify_command: has an empty word"),
        ("notify_command: [/bin/x" + ", a" * 32 + "]", "lending.notify_command: is longer than 32 words"),
        ("max_wait: 1h", "lending.max_wait: unknown key"),
    ],
)
def test_lending_validated(setting, message):
    (problem,) = problems(f"hostname: gpu1\nlending:\n  {setting}\n")
    assert problem.startswith(f"{PATH}:3: {message}"), problem


def test_lending_must_be_a_mapping():
    assert problems("lending: yes\n") == [f"{PATH}:1: lending: must be a mapping"]


def test_a_student_may_have_their_own_allowance():
    text = (
        "lending: {max_per_student: 1, max_duration: 8h}\n"
        "users:\n"
        + user_yaml("alice", 22001, "10.0.3.2", 1000000)
        + "    lending: {max_per_student: 3}\n"
        + user_yaml("bob", 22002, "10.0.3.3", 1065536)
        + "    lending: {max_duration: 2d}\n"
        + user_yaml("carol", 22003, "10.0.3.4", 1131072)
        + "    lending: {max_per_student: 0}\n"
        + user_yaml("dave", 22004, "10.0.3.5", 1196608)
    )
    reg = parse(text, PATH)
    assert reg.users["alice"].lending == LoanLimits(max_per_student=3, max_duration=8 * 3600)
    assert reg.users["bob"].lending == LoanLimits(max_per_student=1, max_duration=2 * 86400)
    assert reg.users["carol"].lending == LoanLimits(max_per_student=0, max_duration=8 * 3600)
    assert reg.users["dave"].lending is None
    assert reg.lending.limits_for(reg.users["dave"]) == LoanLimits(1, 8 * 3600)
    assert reg.lending.limits_for(reg.users["alice"]) == LoanLimits(3, 8 * 3600)


def test_a_students_own_allowance_is_validated():
    base = "lending: {}\nusers:\n" + user_yaml("alice", 22001, "10.0.3.2", 1000000)
    assert problems(base + "    lending: {max_per_student: -1, gpus: all}\n") == [
        f"{PATH}:7: users.alice.lending.gpus: unknown key",
        f"{PATH}:7: users.alice.lending.max_per_student: -1 is outside 0..1024",
    ]
    assert problems(base + "    lending: {max_duration: 1m30}\n") == [
        f"{PATH}:7: users.alice.lending.max_duration: '1m30' is not a duration like 30m, 8h or 2d"
    ]


def test_a_students_own_allowance_needs_the_labs_lending():
    text = "users:\n" + user_yaml("alice", 22001, "10.0.3.2", 1000000) + "    lending: {max_per_student: 2}\n"
    assert problems(text) == [
        f"{PATH}:6: users.alice.lending: this registry has no top-level lending: (no GPU is lent)"
    ]


def test_lending_survives_the_helpers_compiled_copy():
    from gpushell.system import registry_cache

    text = (
        "lending: {gpus: [1], max_duration: 2d, notify_command: [/usr/bin/logger, -t, gp]}\n"
        "users:\n"
        + user_yaml("alice", 22001, "10.0.3.2", 1000000)
        + "    lending: {max_per_student: 2}\n"
        + user_yaml("bob", 22002, "10.0.3.3", 1065536)
    )
    for full in (parse(text, PATH), parse("lending: {}\n", PATH), parse("hostname: x\n", PATH)):
        assert registry_cache.registry_from_plain(registry_cache.to_plain(full)) == full
    full = parse(text, PATH)
    reg, alice = registry_cache.from_plain(registry_cache.to_plain(full), "alice")
    assert (reg.lending, alice.lending) == (full.lending, LoanLimits(2, 2 * 86400))
    assert reg.lending is not None and reg.lending.notify_command == ("/usr/bin/logger", "-t", "gp")
