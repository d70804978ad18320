"""reconcile: the plan `gpushell-admin apply` makes from the registry and the host's state."""

from __future__ import annotations

import os
import pathlib

import pytest

from gpushell.admin import apply
from gpushell.admin.apply import Account, HostState
from gpushell.containers import lxcconfig
from gpushell.core.forward import NatTable, jump_rule, user_rule
from gpushell.core.model import Registry
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from tests.fakes import FakeBackend

TOP = pathlib.Path(__file__).resolve().parents[2]
PATHS = Paths()
REG = parse(
    "chain: GPUSHELL\nmasquerade: false\nlxcpath: /var/lib/lxc\nusers:\n"
    "  alice:\n    port: 22001\n    ip: 10.0.3.2\n    idmap: 1000000\n"
    "  bob:\n    port: 22002\n    ip: 10.0.3.3\n    idmap: 1065536\n    autostart: true\n",
    "/etc/gpushell.yaml",
)
ALICE, BOB = REG.users["alice"], REG.users["bob"]


def nat(*users: str) -> NatTable:
    rules = [jump_rule("PREROUTING", "GPUSHELL"), jump_rule("OUTPUT", "GPUSHELL")]
    rules += [user_rule("GPUSHELL", REG.users[name]) for name in users]
    return NatTable("*nat\n:GPUSHELL - [0:0]\n" + "".join(" ".join(r) + "\n" for r in rules) + "COMMIT\n")


def healthy() -> HostState:
    return HostState(
        table=nat("bob", "alice"),
        bridge_ready=True,
        forwarding_on=True,
        configs={name: apply.wanted_config(REG, user, "generated") for name, user in REG.users.items()},
        accounts={name: Account(PATHS.shell, True) for name in REG.users},
        states={"alice": "STOPPED", "bob": "RUNNING"},
    )


def texts(state: HostState) -> list[str]:
    return [change.text for change in apply.plan(REG, PATHS, state).changes]


def test_a_matching_host_needs_nothing() -> None:
    result = apply.plan(REG, PATHS, healthy())
    assert result.changes == [] and result.warnings == []
    assert apply.render_dry_run(result) == ["nothing to do: the host matches the registry"]


def test_a_flushed_chain_is_rebuilt() -> None:
    state = healthy().replace(table=nat())
    (change,) = apply.plan(REG, PATHS, state).changes
    assert change.kind == apply.FORWARDS and change.subject == "GPUSHELL"
    assert change.text.startswith("rebuild nat chain GPUSHELL (2 forwards): no forward for alice (port 22001")
    assert change.table is state.table  # reused under the forward lock while still current


def test_a_rebuild_names_three_reasons_and_counts_the_rest() -> None:
    many = "users:\n" + "".join(
        f"  u{n}:\n    port: {22001 + n}\n    ip: 10.0.3.{2 + n}\n    idmap: {1000000 + n * 65536}\n"
        for n in range(5)
    )
    reg = parse("chain: GPUSHELL\nmasquerade: false\n" + many, "/etc/gpushell.yaml")
    state = healthy().replace(table=nat(), configs={}, accounts={}, states={})
    (change,) = [c for c in apply.plan(reg, PATHS, state).changes if c.kind == apply.FORWARDS]
    assert change.text == (
        "rebuild nat chain GPUSHELL (5 forwards): no forward for u0 (port 22001 -> 10.0.3.2:22); "
        "no forward for u1 (port 22002 -> 10.0.3.3:22); no forward for u2 (port 22003 -> 10.0.3.4:22); "
        "2 more (gpushell-admin doctor lists each)"
    )


def test_network_changes_come_first() -> None:
    state = healthy().replace(bridge_ready=False, forwarding_on=False, table=nat("alice"))
    kinds = [change.kind for change in apply.plan(REG, PATHS, state).changes]
    assert kinds == [apply.BRIDGE, apply.FORWARDING, apply.FORWARDS]
    assert texts(state)[0] == "set up bridge lxcbr0 with 10.0.3.1/24 and a fixed MAC address"


def test_short_kernel_pools_are_raised_before_any_container_starts() -> None:
    short = {"fs.inotify.max_user_instances": (128, 33554432)}
    state = healthy().replace(pools=short, states={"alice": "STOPPED", "bob": "STOPPED"})
    changes = apply.plan(REG, PATHS, state).changes
    assert [change.kind for change in changes] == [apply.KERNEL_POOLS, apply.START]  # bob's autostart after
    assert changes[0].text == (
        "raise the kernel pools every container shares: fs.inotify.max_user_instances is 128, below 33554432"
    )


def test_a_changed_config_is_regenerated_with_the_registry_text() -> None:
    state = healthy()
    state.configs["bob"] = "lxc.uts.name = hacked\n"
    (change,) = apply.plan(REG, PATHS, state).changes
    assert change.kind == apply.CONFIG and change.subject == "bob"
    assert change.config == apply.wanted_config(REG, BOB, "generated")
    assert "lxc.start.auto = 1" in change.config
    assert change.text == (
        "regenerate /var/lib/lxc/bob/config from the registry (takes effect at its next start)"
    )


def test_the_apparmor_profile_is_part_of_the_wanted_config() -> None:
    state = healthy().replace(apparmor_profile="unconfined")
    assert [change.subject for change in apply.plan(REG, PATHS, state).changes] == ["alice", "bob"]


def test_a_missing_container_is_a_warning_not_a_change() -> None:
    state = healthy()
    state.configs["alice"] = None
    result = apply.plan(REG, PATHS, state)
    assert result.changes == []
    assert result.warnings == [
        "alice: container alice does not exist; "
        "recreate it with: gpushell-admin remove alice && gpushell-admin add alice"
    ]


def test_wrong_shell_and_group_are_fixed_and_a_missing_account_is_a_warning() -> None:
    state = healthy()
    state.accounts["alice"] = Account("/bin/bash", False)
    state.accounts["bob"] = None
    result = apply.plan(REG, PATHS, state)
    assert [change.text for change in result.changes] == [
        "fix account alice: login shell /bin/bash -> /usr/local/bin/gpushell, add to group gpushell"
    ]
    assert result.warnings == ["bob: no host account; gpushell-admin add bob makes one"]


@pytest.mark.parametrize(("state", "starts"), [("STOPPED", True), ("UNKNOWN", True), ("RUNNING", False)])
def test_autostart_containers_are_started_unless_running(state: str, starts: bool) -> None:
    host = healthy().replace(states={"alice": "STOPPED", "bob": state})
    expected = ["start container bob (autostart)"] if starts else []
    assert texts(host) == expected  # alice is stopped but not autostart


def test_dry_run_lists_each_change_and_a_summary() -> None:
    state = healthy().replace(forwarding_on=False, table=nat("alice"))
    lines = apply.render_dry_run(apply.plan(REG, PATHS, state))
    assert lines[0] == "would turn on IPv4 forwarding"
    assert lines[1].startswith("would rebuild nat chain GPUSHELL")
    assert lines[2] == "dry run: 2 change(s) planned, nothing changed"


def test_execute_goes_on_after_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpushell.core.errors import GpushellError

    made: list[str] = []

    def execute_change(change: apply.Change, reg: object, paths: object) -> None:
        if change.kind == apply.FORWARDING:
            raise GpushellError("permission denied")
        made.append(change.kind)

    monkeypatch.setattr(apply, "execute_change", execute_change)
    state = healthy().replace(bridge_ready=False, forwarding_on=False, table=nat())
    reported: list[str] = []
    failed: list[str] = []
    count = apply.execute(apply.plan(REG, PATHS, state), REG, PATHS, reported.append, failed.append)
    assert count == 1 and made == [apply.BRIDGE, apply.FORWARDS]
    assert failed == ["failed to turn on IPv4 forwarding: permission denied"]
    assert reported[0] == "done: set up bridge lxcbr0 with 10.0.3.1/24 and a fixed MAC address"


def test_shipped_apply_unit_runs_apply_at_boot_before_sshd() -> None:
    unit = (TOP / "etc/gpushell-apply.service").read_text()
    lines = set(unit.splitlines())
    assert "Type=oneshot" in lines
    assert "ExecStart=/usr/local/bin/gpushell-admin apply" in lines
    assert "WantedBy=multi-user.target" in lines
    assert "Wants=network-online.target" in lines
    after = next(line for line in lines if line.startswith("After="))
    before = next(line for line in lines if line.startswith("Before="))
    assert "network-online.target" in after.split("=", 1)[1].split()
    assert {"ssh.service", "sshd.service"} <= set(before.split("=", 1)[1].split())


@pytest.mark.parametrize(
    ("nsswitch", "complete"),
    [("passwd:         files systemd\ngroup: files\n", True), ("passwd: compat\n", True),
     ("passwd: files ldap\n", False), ("passwd: files [NOTFOUND=return] sss\n", False),
     ("passwd: files [NOTFOUND=return]\n", True), ("# passwd: ldap\npasswd: files # ldap\n", True),
     ("group: files\n", False), ("", False), ("passwd:\n", False)],
)  # fmt: skip
def test_which_account_sources_list_everything(nsswitch, complete):
    assert apply.enumerates_every_account(nsswitch) is complete


@pytest.mark.parametrize("nsswitch", ["passwd: files\n"])
def test_host_accounts_trust_a_complete_listing(monkeypatch, nsswitch):
    import pwd

    monkeypatch.setattr(apply, "read_text_or_none", lambda path: nsswitch)
    monkeypatch.setattr(pwd, "getpwall", lambda: [])
    monkeypatch.setattr(pwd, "getpwnam", lambda name: pytest.fail("looked up alone"))
    assert apply.host_accounts(["gone"], "gpushell-no-such-group") == {"gone": None}


def test_host_accounts_in_one_pass_with_a_lookup_for_what_it_did_not_list(monkeypatch):
    import grp
    import pwd

    listed = [pwd.struct_passwd(("ann", "x", 2001, 2001, "", "/home/ann", "/usr/local/bin/gpushell"))]
    looked_up: list[str] = []

    def getpwnam(name):
        looked_up.append(name)
        if name == "ldap-bob":  # known to the directory, not enumerated by it
            return pwd.struct_passwd((name, "x", 2002, 2002, "", "/home/b", "/bin/sh"))
        raise KeyError(name)

    monkeypatch.setattr(apply, "read_text_or_none", lambda path: "passwd: files ldap\n")
    monkeypatch.setattr(pwd, "getpwall", lambda: listed)
    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(grp, "getgrnam", lambda name: grp.struct_group((name, "x", 900, ["ann"])))
    accounts = apply.host_accounts(["ann", "ldap-bob", "gone"], "gpushell")
    assert accounts == {
        "ann": apply.Account("/usr/local/bin/gpushell", True),
        "ldap-bob": apply.Account("/bin/sh", False),
        "gone": None,
    }
    assert looked_up == ["ldap-bob", "gone"]


def test_container_states_ask_lxc_once_for_every_container() -> None:
    driver = FakeBackend({"c-bob": "RUNNING", "someone-elses": "RUNNING"})
    configs = {"c-alice": "lxc.uts.name = c-alice\n", "c-bob": "", "c-carol": None}
    states = apply.container_states(driver, configs)
    assert states == {"c-alice": "STOPPED", "c-bob": "RUNNING"}  # no container, no state
    assert driver.calls == ["running"]


def test_container_states_ask_nothing_when_no_container_exists() -> None:
    driver = FakeBackend()
    assert apply.container_states(driver, {"c-alice": None}) == {}
    assert driver.calls == []


def test_the_chain_rebuild_holds_the_forward_lock_and_reuses_a_current_table(tmp_path, monkeypatch) -> None:
    import fcntl
    import os

    from gpushell.system import iptables

    paths = Paths(run_dir=str(tmp_path))
    observed = nat("alice")
    change = apply.Change(apply.FORWARDS, "GPUSHELL", "rebuild", table=observed)
    applied: list[tuple[list[str], bool]] = []

    def restore(lines: list[str]) -> bool:
        probe = os.open(paths.forward_lock, os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = False
        except BlockingIOError:
            held = True
        finally:
            os.close(probe)
        applied.append((lines, held))
        return True

    monkeypatch.setattr(iptables, "still_current", lambda table: table)
    monkeypatch.setattr(iptables, "apply", restore)
    apply.execute_change(change, REG, paths)
    ((lines, held),) = applied
    assert held  # no login's fix of its own forward interleaves with the rebuild
    assert lines[0] == "-F GPUSHELL" and len(lines) == 3  # flush, then alice's and bob's rules


def lab_in(lxcpath: pathlib.Path) -> Registry:
    text = f"chain: GPUSHELL\nlxcpath: {lxcpath}\nusers:\n  alice:\n    port: 22001\n    ip: 10.0.3.2\n"
    return parse(text + "    idmap: 1000000\n", "/etc/gpushell.yaml")


def test_a_missing_or_stale_seccomp_profile_makes_the_config_count_as_stale(tmp_path: pathlib.Path) -> None:
    reg = lab_in(tmp_path)
    directory = tmp_path / "alice"
    directory.mkdir()
    (directory / "config").write_text("the config\n")
    assert apply.container_configs(reg) == {"alice": ""}  # no profile: apply writes both
    (directory / "seccomp").write_text("2\ndenylist\n")
    assert apply.container_configs(reg) == {"alice": ""}  # an older profile: the same
    (directory / "seccomp").write_text(lxcconfig.seccomp_profile())
    assert apply.container_configs(reg) == {"alice": "the config\n"}


def test_a_config_change_writes_the_profile_it_names(tmp_path: pathlib.Path) -> None:
    reg = lab_in(tmp_path)
    (tmp_path / "alice").mkdir()
    config = apply.wanted_config(reg, reg.users["alice"], "generated")
    apply.execute_change(apply.Change(apply.CONFIG, "alice", "regenerate", config), reg, PATHS)
    profile = tmp_path / "alice" / "seccomp"
    assert f"lxc.seccomp.profile = {profile}\n" in (tmp_path / "alice" / "config").read_text()
    assert profile.read_text() == lxcconfig.seccomp_profile()
    assert profile.stat().st_mode & 0o7777 == 0o644 and profile.stat().st_uid == os.getuid()
    assert apply.container_configs(reg) == {"alice": config}
