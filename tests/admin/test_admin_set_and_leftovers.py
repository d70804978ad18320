"""set (registry_edit.set_user_key, usersettings), template rows, archive names, leftovers."""

from __future__ import annotations

import dataclasses
import datetime
import os

import pytest

from gpushell.admin import apply, doctor, editing, leftovers
from gpushell.admin.leftovers import Journal, Scan
from gpushell.containers import archive
from gpushell.core import registry_edit, usersettings
from gpushell.core.errors import GpushellError
from gpushell.core.paths import Paths
from gpushell.core.registry import parse

PATH = "/etc/gpushell.yaml"
TEXT = """\
# top comment
template: tpl   # the template
lxcpath: /var/lib/lxc
users:
  # first student
  alice:
    port: 22001   # alice's port
    ip: 10.0.3.2
    gpus:
      - 0   # the first card
      - 1
    # after gpus
    idmap: 1000000

  bob:
    port: 22002
    ip: 10.0.3.3
    idmap: 1065536
  # trailing comment
# after users
masquerade: false
"""
COMMENTS = [line for line in TEXT.splitlines() if "#" in line]


def comments_kept(text: str) -> bool:
    lines = text.splitlines()
    return all(any(c.split("#", 1)[1] in line for line in lines) for c in COMMENTS)


def test_set_replaces_a_scalar_keeping_its_comment() -> None:
    out = registry_edit.set_user_key(TEXT, "alice", "port", 22009)
    assert "    port: 22009   # alice's port" in out.splitlines()
    assert out.replace("22009", "22001") == TEXT
    assert parse(out, PATH).users["alice"].port == 22009


def test_set_replaces_a_block_list_and_keeps_what_follows() -> None:
    out = registry_edit.set_user_key(TEXT, "alice", "gpus", [0, 2])
    reg = parse(out, PATH)
    assert reg.users["alice"].gpus == (0, 2) and reg.users["alice"].idmap == 1000000
    assert comments_kept(out)
    assert reg.users["bob"] == parse(TEXT, PATH).users["bob"]


def test_set_adds_a_missing_key_inside_the_right_block() -> None:
    out = registry_edit.set_user_key(TEXT, "bob", "autostart", True)
    lines = out.splitlines()
    assert lines[lines.index("    idmap: 1065536") + 1] == "    autostart: true"
    assert parse(out, PATH).users["bob"].autostart is True
    assert parse(out, PATH).users["alice"].autostart is False
    assert comments_kept(out)


def test_set_of_an_unknown_user_or_a_flow_entry_is_refused() -> None:
    with pytest.raises(GpushellError, match="carol is not registered"):
        registry_edit.set_user_key(TEXT, "carol", "port", 22003)
    flow = "users:\n  alice: {port: 22001, ip: 10.0.3.2, idmap: 1000000}\n"
    with pytest.raises(GpushellError, match="flow style"):
        registry_edit.set_user_key(flow, "alice", "port", 22003)


def test_set_setting_replaces_or_adds_before_users() -> None:
    out = registry_edit.set_setting(TEXT, "template", "other")
    assert "template: other   # the template" in out.splitlines() and parse(out, PATH).template == "other"
    added = registry_edit.set_setting(TEXT, "hostname", "gpu1")
    lines = added.splitlines()
    assert lines[lines.index("users:") - 1] == "hostname: gpu1"
    assert parse(added, PATH).hostname == "gpu1"


def test_parse_assignments() -> None:
    assert usersettings.parse_assignments(["gpus=2,0", "port=22005", "autostart=true"]) == {
        "gpus": [0, 2],
        "port": 22005,
        "autostart": True,
    }
    assert usersettings.parse_assignments(["gpus=all"]) == {"gpus": "all"}


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ([], "nothing to set"),
        (["colour=red"], "unknown key 'colour'"),
        (["port"], "is not key=value"),
        (["port=abc"], "port=abc: not a port number"),
        (["gpus=0,0"], "lists a GPU twice"),
        (["gpus=some"], "use all, none or GPU numbers"),
        (["autostart=yes"], "use true or false"),
        (["port=22001", "port=22002"], "port is given twice"),
    ],
)
def test_parse_assignments_refuses(words: list[str], message: str) -> None:
    with pytest.raises(GpushellError, match=message) as caught:
        usersettings.parse_assignments(words)
    assert "\n" not in caught.value.user_message


def test_set_effects_say_when_each_change_applies() -> None:
    reg = parse(TEXT, PATH)
    old = reg.users["alice"]
    new = parse(editing.edit_user(TEXT, "alice", {"gpus": "all", "port": 22007}), PATH).users["alice"]
    notes = editing.set_effects(old, new, running=True)
    assert notes == [
        "port 22001 -> 22007: forward replaced now",
        "gpus 0,1 -> all: config regenerated, takes effect at the container's next start",
    ]
    assert editing.set_effects(old, old, running=False) == ["nothing changed"]


def test_archive_name_is_utc_and_sortable() -> None:
    when = datetime.datetime(2025, 3, 4, 5, 6, 7, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert archive.archive_name("alice", when) == "alice-20250304T030607Z.tar"
    assert archive.tar_argv("/r", "/o")[:2] == ["tar", "--numeric-owner"]


def test_template_rows() -> None:
    reg = parse(TEXT, PATH)
    rows = editing.template_rows(reg, {"old": ("bullseye", 2048)}, {"alice": "old", "bob": "tpl"})
    assert [(r.name, r.suite, r.size, r.users, r.default) for r in rows] == [
        ("old", "bullseye", 2048, ["alice"], False),
        ("tpl", None, None, ["bob"], True),
    ]
    table = editing.render_templates(rows).splitlines()
    assert table[1].split() == ["old", "bullseye", "2.0", "KiB", "alice"]
    assert table[2].split() == ["tpl", "?", "not", "built", "bob", "yes"]


def test_a_clusters_templates_are_its_images_by_alias_and_each_container_names_its_own() -> None:
    images = [  # as the engine's /1.0/images?recursion=1 lists them (the fields read)
        {"fingerprint": "f1", "size": 90_000_000, "properties": {"release": "bookworm"},
         "aliases": [{"name": "lab-image"}, {"name": "lab-2025"}]},
        {"fingerprint": "f2", "size": 95_000_000, "properties": {}, "aliases": [{"name": "lab-new"}]},
        {"fingerprint": "f3", "size": 1, "aliases": []},  # no alias: no template of gpushell's
    ]  # fmt: skip
    instances = [
        {"name": "gpushell-alice", "config": {"volatile.base_image": "f1"}},
        {"name": "gpushell-bob", "config": {"volatile.base_image": "f9"}},  # its image deleted since
        {"name": "someone-elses", "config": {"volatile.base_image": "f2"}},
    ]
    containers = {"gpushell-alice": "alice", "gpushell-bob": "bob", "gpushell-carol": "carol"}
    built, origins = editing.images_and_origins(images, instances, containers)
    bookworm = ("bookworm", 90_000_000)
    assert built == {"lab-image": bookworm, "lab-2025": bookworm, "lab-new": (None, 95_000_000)}
    assert origins == {"alice": "lab-image", "bob": None, "carol": None}  # carol's container is missing


# --- leftovers -------------------------------------------------------------------

PATHS = Paths(shell="/usr/local/bin/gpushell", group="gpushell")
REG = parse(TEXT, PATH)


def scan(**changes: object) -> Scan:
    base = Scan(
        entries={"alice": "dir", "bob": "dir", "tpl": "dir"},
        templates=frozenset({"tpl"}),
        journals={},
        group_members=frozenset({"alice", "bob"}),
        accounts={},
    )
    return base.replace(**changes)


def test_staging_directory_names() -> None:
    def is_staging(entry: str) -> bool:
        return leftovers.STAGING.fullmatch(entry) is not None

    assert is_staging(".alice-ab_9xyz0")
    assert is_staging(".a-" + "0" * 8) and is_staging("." + "a" * 63 + "-" + "0" * 8)
    assert not is_staging("." + "a" * 64 + "-" + "0" * 8)  # longer than a container name
    assert not is_staging("._alice-ab_9xyz0") and not is_staging(".alice-AB_9XYZ0")
    assert not is_staging("alice-ab_9xyz0") and not is_staging(".alice-ab_9xyz")


def test_a_clean_host_has_no_leftovers() -> None:
    assert leftovers.find(REG, PATHS, scan()) == []
    kept = scan(group_members=frozenset({"alice", "bob", "old"}))
    assert leftovers.find(REG, PATHS, kept) == []
    assert leftovers.unregistered_members(REG, kept) == ["old"]


def test_an_interrupted_add_is_undone_in_order() -> None:
    journal = Journal("carol", "carol", account_existed=False)
    found = leftovers.find(
        REG,
        PATHS,
        scan(
            entries={
                "alice": "dir",
                "bob": "dir",
                "tpl": "dir",
                "carol": "dir",
                ".carol-ab12cd_9": "dir",
                ".gpushell-add-carol": "file",
            },
            journals={".gpushell-add-carol": journal},
            group_members=frozenset({"alice", "bob", "carol"}),
            accounts={"carol": leftovers.HostAccountInfo(1005, PATHS.shell, True)},
        ),
    )
    assert [(item.subject, item.action) for item in found] == [
        ("carol", leftovers.USERDEL),
        ("/var/lib/lxc/.carol-ab12cd_9", leftovers.RMTREE),
        ("/var/lib/lxc/carol", leftovers.RMTREE),
        ("/var/lib/lxc/.gpushell-add-carol", leftovers.UNLINK),  # last: it explains the others
    ]


def test_an_adopted_account_gets_its_shell_back_and_system_accounts_are_never_touched() -> None:
    journal = Journal("dave", "dave", account_existed=True, old_shell="/bin/zsh")
    info = leftovers.HostAccountInfo(1006, PATHS.shell, True)
    found = leftovers.find(REG, PATHS, scan(journals={"j": journal}, accounts={"dave": info}))
    assert (found[0].subject, found[0].action, found[0].old_shell) == (
        "dave",
        leftovers.RESTORE_ACCOUNT,
        "/bin/zsh",
    )
    system = leftovers.HostAccountInfo(5, PATHS.shell, True)
    found = leftovers.find(REG, PATHS, scan(journals={"j": journal}, accounts={"dave": system}))
    assert [i.action for i in found] == [leftovers.UNLINK]


def test_registered_things_and_unjournalled_containers_are_never_deleted() -> None:
    # A journal for a registered user (killed after the registry write): only the journal goes.
    journal = Journal("alice", "alice", account_existed=False)
    info = leftovers.HostAccountInfo(1001, PATHS.shell, True)
    found = leftovers.find(REG, PATHS, scan(journals={"j": journal}, accounts={"alice": info}))
    assert [i.action for i in found] == [leftovers.UNLINK]
    # A container without a journal may be someone's work: reported only.
    found = leftovers.find(
        REG, PATHS, scan(entries={"alice": "dir", "bob": "dir", "tpl": "dir", "eve": "dir"})
    )
    assert [(i.subject, i.action) for i in found] == [("/var/lib/lxc/eve", leftovers.REPORT)]
    assert "tar --numeric-owner" in found[0].fix
    # A link named like a staging directory is not followed or deleted.
    found = leftovers.find(REG, PATHS, scan(entries={"alice": "dir", "bob": "dir", ".x-abcdefgh": "other"}))
    assert found == []


def test_journal_round_trip_and_garbage() -> None:
    journal = Journal("carol", "carol", True, "/bin/bash")
    assert leftovers.parse_journal(journal.dumps()) == journal
    assert leftovers.parse_journal("{not json") is None
    assert leftovers.parse_journal('{"user": "x"}') is None


def test_doctor_and_apply_report_leftovers() -> None:
    item = leftovers.Leftover("/var/lib/lxc/.carol-ab12cd_9", "staging directory X", leftovers.RMTREE)
    other = leftovers.Leftover("/var/lib/lxc/eve", "container eve", leftovers.REPORT, "rm -rf it")
    facts_kwargs = {"leftovers": (item, other), "kept_accounts": ("old",)}
    facts = dataclasses.replace(_facts(), **facts_kwargs)  # type: ignore[arg-type]
    lines = [f.line() for f in doctor.check_leftovers(REG, PATHS, facts)]
    assert lines == [
        "FAIL: staging directory X — fix: gpushell-admin apply",
        "FAIL: container eve — fix: rm -rf it",
        "ok: host accounts in group gpushell kept without a registry entry: old "
        "(gpushell-admin add NAME registers one again)",
    ]
    assert [f.line() for f in doctor.check_leftovers(REG, PATHS, _facts())] == [
        "ok: no leftovers of interrupted adds in /var/lib/lxc"
    ]
    state = apply.HostState(
        table=doctor.NatTable(""), bridge_ready=True, forwarding_on=True, configs={}, accounts={},
        states={}, leftovers=(item, other),
    )  # fmt: skip
    plan = apply.plan(parse("lxcpath: /var/lib/lxc\nchain: GPUSHELL\n", PATH), PATHS, state)
    leftover_changes = [c for c in plan.changes if c.kind == apply.LEFTOVER]
    assert [(c.subject, c.leftover) for c in leftover_changes] == [(item.subject, item)]
    assert "container eve; rm -rf it" in plan.warnings


def _facts() -> doctor.Facts:
    return doctor.Facts(
        bridge_exists=True, bridge_addresses=[], bridge_mac_fixed=True, forwarding_on=True,
        table=doctor.NatTable(""),
        sudoers=doctor.InstalledFile(None), sshd=doctor.InstalledFile(None), subids={},
        template_exists=True, configs={}, listeners={}, accounts={},
    )  # fmt: skip


def test_port_owner() -> None:
    assert editing.port_owner(REG, "alice", 22002) == "bob"
    assert editing.port_owner(REG, "alice", 22001) is None
    assert editing.port_owner(REG, "alice", None) is None


def test_an_interrupted_btrfs_add_leaves_a_name_leftovers_knows(tmp_path, monkeypatch) -> None:
    from gpushell.containers import btrfs

    made: list[str] = []
    monkeypatch.setattr(btrfs, "check_lxcpath", lambda path: None)
    monkeypatch.setattr(btrfs, "btrfs", lambda *args, **_: made.append(os.path.basename(args[-1])) or "")
    monkeypatch.setattr(btrfs.BtrfsStorage, "_ensure_group", lambda self, directory: "1/256")
    monkeypatch.setattr(btrfs.os, "chmod", lambda path, mode: None)
    btrfs.BtrfsStorage(str(tmp_path)).new_container_dir(str(tmp_path), ".carol-")
    assert len(made) == 1 and leftovers.STAGING.fullmatch(made[0]) is not None
