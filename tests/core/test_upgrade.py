"""upgrade.advice: what an admin should write into a registry from an earlier release."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpushell.core.registry import parse
from gpushell.core.upgrade import SEP, advice

REGISTRIES = Path(__file__).parent.parent / "data" / "registries"
EXAMPLE = Path(__file__).parent.parent.parent / "etc" / "gpushell.yaml"
HEAD = "hostname: gpu1\ngpus: [0, 1]\n"
ALICE = "  alice:\n    port: 22001\n    ip: 10.0.3.2\n    idmap: 1000000\n"
BOB = "  bob:\n    port: 22002\n    ip: 10.0.3.3\n    idmap: 1065536\n"
ISOLATION = "allow_container_traffic: false\negress_deny: []\n"


def advice_for(text: str) -> list[str]:
    return advice(text, parse(text, "/etc/gpushell.yaml"))


def stored(name: str) -> list[str]:
    return advice_for((REGISTRIES / name).read_text(encoding="utf-8"))


def about(lines: list[str], start: str) -> list[str]:
    return [line for line in lines if line.startswith(start)]


# --- the registries earlier releases wrote ----------------------------------------------------

BEFORE_LIMITS = [
    "init-add-first-4590e9e.yaml",
    "example-first-f69e78a.yaml",
    "example-before-limits-0da1380.yaml",
    "init-add-set-before-limits-7e6e39f.yaml",
]


@pytest.mark.parametrize("name", BEFORE_LIMITS)
def test_a_registry_from_before_limits_and_isolation_is_told_both(name: str) -> None:
    lines = stored(name)
    assert len(lines) == 2
    limits, isolation = lines
    assert limits.startswith("no top-level `limits:`: 2 of 2 students get the built-in ")
    assert "memory 8G, cpus 4, pids 4096, disk 50G" in limits
    assert "`gpushell-admin init` puts half its memory and CPUs there, but only in a new registry" in limits
    assert isolation.startswith("no `allow_container_traffic:`")
    assert "write `allow_container_traffic: true` if the lab needs it" in isolation
    assert "`egress_deny:`" in isolation


@pytest.mark.parametrize(
    "name",
    ["init-add-set-limits-0c2f688.yaml", "example-before-storage-0c2f688.yaml"],
)
def test_a_registry_with_limits_and_isolation_keys_on_dir_storage_needs_nothing(name: str) -> None:
    assert stored(name) == []


def test_disk_limits_on_dir_storage_point_to_storage_migrate() -> None:
    assert stored("init-add-set-disk-dir-5bf1fcd.yaml") == [
        f"disk limits written (alice) are not enforced on dir storage{SEP}a quota needs btrfs: "
        "put /var/lib/lxc on btrfs, then `gpushell-admin storage migrate`"
    ]


def test_btrfs_limits_without_disk_name_who_gets_the_built_in_quota() -> None:
    assert stored("init-btrfs-pool-5bf1fcd.yaml") == [
        "`limits:` has no disk: students without their own (alice) get the built-in quota 50G"
        f"{SEP}add `disk: SIZE` to `limits:`"
    ]


def test_todays_example_registry_needs_nothing() -> None:
    assert advice_for(EXAMPLE.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("name", sorted(path.name for path in REGISTRIES.glob("*.yaml")))
def test_each_line_says_what_and_what_to_do(name: str) -> None:
    for line in stored(name):
        what, sep, fix = line.partition(SEP)
        assert sep and what and fix and SEP not in fix
        assert "\n" not in line


# --- each rule ---------------------------------------------------------------------------------


def test_limits_written_with_the_defaults_values_are_not_advice() -> None:
    text = HEAD + "limits: {memory: 8G, cpus: 4, pids: 4096}\n" + ISOLATION + "users:\n" + ALICE
    assert advice_for(text) == []


def test_no_limits_counts_the_students_without_their_own() -> None:
    alice = ALICE + "    limits: {memory: 16G}\n"
    lines = about(advice_for(HEAD + ISOLATION + "users:\n" + alice + BOB), "no top-level `limits:`")
    assert len(lines) == 1
    assert lines[0].startswith("no top-level `limits:`: 1 of 2 students get the built-in memory 8G")


def test_no_limits_and_every_student_with_their_own_still_concerns_new_students() -> None:
    text = HEAD + ISOLATION + "users:\n" + ALICE + "    limits: {memory: 16G}\n"
    (line,) = advice_for(text)
    assert line.startswith("no top-level `limits:`: every new student gets the built-in memory 8G")


def test_no_limits_and_no_students() -> None:
    (line,) = advice_for(HEAD + ISOLATION)
    assert "every new student" in line


def test_btrfs_quota_advice_only_for_students_without_their_own_disk() -> None:
    text = HEAD + "storage: btrfs\nlimits: {memory: 8G}\n" + ISOLATION + "users:\n"
    assert advice_for(text + ALICE + "    limits: {disk: 10G}\n") == []
    (line,) = advice_for(text + ALICE + BOB + "    limits: {disk: 10G}\n")
    assert "(alice)" in line


def test_btrfs_with_a_disk_limit_needs_nothing() -> None:
    assert advice_for(HEAD + "storage: btrfs\nlimits: {disk: 100G}\n" + ISOLATION + "users:\n" + ALICE) == []


def test_a_top_level_disk_limit_on_dir_storage_is_named() -> None:
    text = HEAD + "limits: {memory: 8G, disk: 100G}\n" + ISOLATION + "users:\n" + ALICE
    text += BOB + "    limits: {disk: 20G}\n"
    (line,) = advice_for(text)
    assert line.startswith("disk limits written (top-level, bob) are not enforced on dir storage")


def test_a_written_storage_dir_with_a_disk_limit_is_told_too() -> None:
    text = HEAD + "storage: dir\nlimits: {disk: 100G}\n" + ISOLATION
    assert about(advice_for(text), "disk limits written (top-level)")


def test_no_disk_limit_on_dir_storage_is_left_to_doctors_storage_check() -> None:
    assert advice_for(HEAD + "storage: dir\nlimits: {memory: 8G}\n" + ISOLATION) == []


def test_egress_deny_alone_keeps_the_isolation_line_short() -> None:
    (line,) = advice_for(HEAD + "limits: {memory: 8G}\negress_deny: [192.168.10.0/24]\n")
    assert line.startswith("no `allow_container_traffic:`")
    assert "egress_deny" not in line


def test_allow_container_traffic_alone_is_a_choice() -> None:
    assert advice_for(HEAD + "limits: {memory: 8G}\nallow_container_traffic: true\n") == []


def test_no_lending_while_gpus_are_assigned_is_a_choice() -> None:
    text = HEAD + "limits: {memory: 8G}\n" + ISOLATION + "users:\n" + ALICE + "    gpus: all\n"
    assert advice_for(text) == []


def test_many_names_are_cut_short() -> None:
    users = "".join(
        f"  s{i}:\n    port: {22001 + i}\n    ip: 10.0.3.{2 + i}\n    idmap: {1000000 + 65536 * i}\n"
        f"    limits: {{disk: 1G}}\n"
        for i in range(8)
    )
    (line,) = advice_for(HEAD + "limits: {memory: 8G}\n" + ISOLATION + "users:\n" + users)
    assert "(s0, s1, s2, s3, s4 and 3 more)" in line


# --- doctor's lines ----------------------------------------------------------------------------


def test_doctor_shows_each_piece_of_advice_as_an_upgrade_warning() -> None:
    from gpushell.admin import doctor

    text = (REGISTRIES / "init-add-first-4590e9e.yaml").read_text(encoding="utf-8")
    found = doctor.upgrade_findings(text, parse(text, "/etc/gpushell.yaml"))
    assert [item.line().split(" — ")[0] for item in found] == [
        "warning: upgrade: no top-level `limits:`: 2 of 2 students get the built-in memory 8G, cpus 4, "
        "pids 4096, disk 50G",
        "warning: upgrade: no `allow_container_traffic:` (written before network isolation): containers can "
        "no longer connect to each other (only through the forwarded ports) nor to this host's services",
    ]
    assert (
        found[0]
        .line()
        .endswith(
            " — write `limits:` sized for this host (`gpushell-admin init` puts "
            "half its memory and CPUs there, but only in a new registry)"
        )
    )
    assert doctor.all_ok(found)  # advice, not a failure: doctor still exits 0
