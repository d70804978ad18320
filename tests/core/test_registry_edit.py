"""registry_edit: add/remove a user in the text, keeping the admin's layout."""

from __future__ import annotations

import ipaddress

import pytest

from gpushell.core.allocate import Allocation
from gpushell.core.errors import GpushellError
from gpushell.core.registry import parse
from gpushell.core.registry_edit import add_user, remove_user, user_block

PATH = "/etc/gpushell.yaml"
CAROL = Allocation(22003, ipaddress.IPv4Address("10.0.3.4"), 1131072)

REGISTRY = """\
# gpushell registry for gpu1
hostname: gpu1   # the name students type

users:
  # first student
  alice:
    port: 22001   # alice's port
    ip: 10.0.3.2
    idmap: 1000000

  bob:
    port: 22002
    ip: 10.0.3.3
    idmap: 1065536
  # trailing comment in users

# after users
masquerade: false
"""

ALICE_LINES = ["  alice:", "    port: 22001   # alice's port", "    ip: 10.0.3.2", "    idmap: 1000000"]
BOB_LINES = ["  bob:", "    port: 22002", "    ip: 10.0.3.3", "    idmap: 1065536"]
CAROL_LINES = ["  carol:", "    port: 22003", "    ip: 10.0.3.4", "    idmap: 1131072"]


def ports(text: str) -> dict[str, int]:
    return {name: user.port for name, user in parse(text, PATH).users.items()}


def test_user_block():
    assert user_block("carol", CAROL) == CAROL_LINES
    assert user_block("carol", CAROL, {"gpus": [0, 1]}) == [*CAROL_LINES, "    gpus: [0, 1]"]


def test_add_keeps_comments_blank_lines_and_order():
    out = add_user(REGISTRY, "carol", CAROL)
    lines = REGISTRY.splitlines()
    at = lines.index("    idmap: 1065536") + 1
    assert out.splitlines() == lines[:at] + CAROL_LINES + lines[at:]
    assert out.endswith("masquerade: false\n")
    assert ports(out) == {"alice": 22001, "bob": 22002, "carol": 22003}
    reg = parse(out, PATH)
    assert reg.users["carol"].ip == ipaddress.IPv4Address("10.0.3.4")
    assert reg.users["carol"].idmap == 1131072
    assert reg.masquerade is False
    assert reg.hostname == "gpu1"


def test_add_to_users_at_end_of_file():
    text = "hostname: gpu1\nusers:\n" + "\n".join(ALICE_LINES) + "\n"
    out = add_user(text, "carol", CAROL)
    assert out == "hostname: gpu1\nusers:\n" + "\n".join(ALICE_LINES + CAROL_LINES) + "\n"
    assert ports(out) == {"alice": 22001, "carol": 22003}


def test_add_to_users_at_end_without_final_newline():
    text = "users:\n" + "\n".join(ALICE_LINES)
    out = add_user(text, "carol", CAROL)
    assert out == "users:\n" + "\n".join(ALICE_LINES + CAROL_LINES) + "\n"


def test_add_to_users_followed_by_comment_at_end():
    text = "users:\n" + "\n".join(ALICE_LINES) + "\n\n# the end\n"
    out = add_user(text, "carol", CAROL)
    assert out == "users:\n" + "\n".join(ALICE_LINES + CAROL_LINES) + "\n\n# the end\n"
    assert ports(out) == {"alice": 22001, "carol": 22003}


def test_add_to_missing_users():
    text = "# registry\nhostname: gpu1\n"
    out = add_user(text, "carol", CAROL)
    assert out == "# registry\nhostname: gpu1\nusers:\n" + "\n".join(CAROL_LINES) + "\n"
    assert ports(out) == {"carol": 22003}


@pytest.mark.parametrize("empty", ["users:", "users: null", "users: ~", "users: {}"])
def test_add_to_empty_users(empty):
    text = f"hostname: gpu1\n{empty}\nmasquerade: true\n"
    out = add_user(text, "carol", CAROL)
    assert out == "hostname: gpu1\nusers:\n" + "\n".join(CAROL_LINES) + "\nmasquerade: true\n"
    reg = parse(out, PATH)
    assert list(reg.users) == ["carol"]
    assert reg.masquerade is True


def test_add_to_empty_users_keeps_comment():
    text = "hostname: gpu1\nusers: {}  # none yet\nmasquerade: true\n"
    out = add_user(text, "carol", CAROL)
    assert out == "hostname: gpu1\nusers:  # none yet\n" + "\n".join(CAROL_LINES) + "\nmasquerade: true\n"
    assert ports(out) == {"carol": 22003}


def test_add_to_null_users_keeps_comment():
    text = "users:   # students below\n"
    out = add_user(text, "carol", CAROL)
    # The `users:` line stays exactly as written, spacing included.
    assert out == "users:   # students below\n" + "\n".join(CAROL_LINES) + "\n"
    assert ports(out) == {"carol": 22003}


def test_add_to_four_space_mapping():
    text = (
        "users:\n"
        "    alice:\n"
        "        port: 22001\n"
        "        ip: 10.0.3.2\n"
        "        idmap: 1000000\n"
        "hostname: gpu1\n"
    )
    out = add_user(text, "carol", CAROL)
    lines = out.splitlines()
    assert lines[:5] == text.splitlines()[:5]
    assert lines[5] == "    carol:"
    assert lines[-1] == "hostname: gpu1"
    assert len(lines) == 10
    assert ports(out) == {"alice": 22001, "carol": 22003}
    assert parse(out, PATH).users["carol"].idmap == 1131072
    assert parse(out, PATH).hostname == "gpu1"


def test_add_twice_then_parse():
    out = add_user(REGISTRY, "carol", CAROL)
    out = add_user(out, "dave", Allocation(22004, ipaddress.IPv4Address("10.0.3.5"), 1196608))
    assert ports(out) == {"alice": 22001, "bob": 22002, "carol": 22003, "dave": 22004}
    dave = ["  dave:", "    port: 22004", "    ip: 10.0.3.5", "    idmap: 1196608"]
    lines = REGISTRY.splitlines()
    at = lines.index("    idmap: 1065536") + 1
    assert out.splitlines() == lines[:at] + CAROL_LINES + dave + lines[at:]


def test_add_with_list_extra():
    out = add_user(REGISTRY, "carol", CAROL, {"gpus": [0, 1]})
    assert parse(out, PATH).users["carol"].gpus == (0, 1)


def test_add_with_scalar_extra():
    out = add_user(REGISTRY, "carol", CAROL, {"autostart": True})
    assert "..." not in out.splitlines()
    assert parse(out, PATH).users["carol"].autostart is True


def test_add_refuses_flow_style_users():
    text = "users: {alice: {port: 22001, ip: 10.0.3.2, idmap: 1000000}}\n"
    with pytest.raises(GpushellError) as info:
        add_user(text, "carol", CAROL)
    assert info.value.user_message == "cannot edit `users:` written in flow style; please use a block mapping"


@pytest.mark.parametrize("text", ["users: 5\n", "users: [a]\n"])
def test_add_refuses_non_mapping_users(text):
    with pytest.raises(GpushellError) as info:
        add_user(text, "carol", CAROL)
    assert info.value.user_message == "cannot edit `users:` written in flow style; please use a block mapping"


@pytest.mark.parametrize("text", ["", "- a\n", "just text\n"])
def test_add_refuses_non_mapping_registry(text):
    with pytest.raises(GpushellError) as info:
        add_user(text, "carol", CAROL)
    assert info.value.user_message == "the registry is not a mapping"


def test_remove_first_user():
    out = remove_user(REGISTRY, "alice")
    expected = [line for line in REGISTRY.splitlines() if line not in ALICE_LINES]
    assert out.splitlines() == expected
    assert ports(out) == {"bob": 22002}
    assert parse(out, PATH).masquerade is False


def test_remove_last_user_keeps_trailing_comment():
    out = remove_user(REGISTRY, "bob")
    expected = [line for line in REGISTRY.splitlines() if line not in BOB_LINES]
    assert out.splitlines() == expected
    assert "  # trailing comment in users" in out.splitlines()
    assert ports(out) == {"alice": 22001}


def test_remove_middle_user():
    text = add_user(REGISTRY, "carol", CAROL)
    out = remove_user(text, "bob")
    expected = [line for line in text.splitlines() if line not in BOB_LINES]
    assert out.splitlines() == expected
    assert ports(out) == {"alice": 22001, "carol": 22003}


def test_remove_then_add_round_trip():
    text = add_user(REGISTRY, "carol", CAROL)
    assert remove_user(text, "carol") == REGISTRY


def test_remove_user_with_nested_mounts_and_flow_values():
    text = (
        "users:\n"
        "  alice:\n"
        "    port: 22001\n"
        "    ip: 10.0.3.2\n"
        "    idmap: 1000000\n"
        "    mounts:\n"
        "      - source: /data\n"
        "        target: /data\n"
        "  bob: {port: 22002, ip: 10.0.3.3, idmap: 1065536}\n"
        "hostname: gpu1\n"
    )
    out = remove_user(text, "alice")
    assert out == "users:\n  bob: {port: 22002, ip: 10.0.3.3, idmap: 1065536}\nhostname: gpu1\n"
    assert ports(out) == {"bob": 22002}
    out = remove_user(text, "bob")
    assert out == text.replace("  bob: {port: 22002, ip: 10.0.3.3, idmap: 1065536}\n", "")
    assert parse(out, PATH).users["alice"].mounts[0].target == "/data"


def test_remove_only_user():
    text = "hostname: gpu1\nusers:\n" + "\n".join(ALICE_LINES) + "\n"
    out = remove_user(text, "alice")
    assert out == "hostname: gpu1\nusers:\n"
    assert parse(out, PATH).users == {}


@pytest.mark.parametrize("text", [REGISTRY, "hostname: gpu1\n", "users:\n", "users: {}\n"])
def test_remove_unknown_user(text):
    with pytest.raises(GpushellError) as info:
        remove_user(text, "mallory")
    assert info.value.user_message == "mallory is not registered"


def test_remove_refuses_flow_style_users():
    text = "users: {alice: {port: 22001, ip: 10.0.3.2, idmap: 1000000}}\n"
    with pytest.raises(GpushellError) as info:
        remove_user(text, "alice")
    assert info.value.user_message == "cannot edit `users:` written in flow style; please use a block mapping"
