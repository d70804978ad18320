"""doctor: each check, on facts built by hand, and the line it prints."""

from __future__ import annotations

import dataclasses

from gpushell.admin import apply, doctor, helpercheck
from gpushell.admin.apply import Account
from gpushell.admin.doctor import Facts, Finding, InstalledFile
from gpushell.core import dropins
from gpushell.core.forward import NatTable, jump_rule, member_masquerade_rule, user_rule
from gpushell.core.model import Registry
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from gpushell.system import sshdcheck

PATHS = Paths()
REG = parse(
    "chain: GPUSHELL\nmasquerade: false\nlxcpath: /var/lib/lxc\ntemplate: tpl\n"
    "idmap:\n  start: 1000000\n  size: 65536\nusers:\n"
    "  alice:\n    port: 22001\n    ip: 10.0.3.2\n    idmap: 1000000\n"
    "  bob:\n    port: 22002\n    ip: 10.0.3.3\n    idmap: 1065536\n",
    "/etc/gpushell.yaml",
)


def nat(*rules: list[str], jumps: tuple[str, ...] = ("PREROUTING", "OUTPUT")) -> NatTable:
    all_rules = [jump_rule(parent, "GPUSHELL") for parent in jumps] + list(rules)
    return NatTable("*nat\n:GPUSHELL - [0:0]\n" + "".join(" ".join(r) + "\n" for r in all_rules) + "COMMIT\n")


ALICE = user_rule("GPUSHELL", REG.users["alice"])
BOB = user_rule("GPUSHELL", REG.users["bob"])


SECOND = sshdcheck.SECOND
# The lines of `sshd -T` that doctor reads, as OpenSSH 9.2 prints them for a
# student with the drop-in in effect (tests/unit/test_sshdcheck.py has whole runs).
SSHD_T = (
    "x11forwarding no\npermituserrc no\ngatewayports no\nallowtcpforwarding no\n"
    "allowagentforwarding no\ndisableforwarding yes\nallowstreamlocalforwarding no\n"
    "pidfile /run/sshd.pid\nforcecommand none\nsubsystem sftp /usr/lib/openssh/sftp-server\n"
    "permittunnel no\npermitopen none\npermitlisten none\npermituserenvironment no\n"
)
SSHD = sshdcheck.SshdFacts(
    config="/etc/ssh/sshd_config",
    base=sshdcheck.Probe(None, 0, SSHD_T, ""),
    probes=(sshdcheck.Probe("alice", 0, SSHD_T, ""), sshdcheck.Probe("bob", 0, SSHD_T, "")),
    listeners=(sshdcheck.Listener(4242, 1795901172 * SECOND, 1795901175 * SECOND),),
    changed={"/etc/ssh/sshd_config": 1795901000 * SECOND, PATHS.sshd_dropin: 1795901100 * SECOND},
    dropin_read=True,
)


def healthy() -> Facts:
    return Facts(
        bridge_exists=True,
        bridge_addresses=["10.0.3.1/24"],
        bridge_mac_fixed=True,
        forwarding_on=True,
        table=nat(ALICE, BOB),
        sudoers=InstalledFile(dropins.sudoers(PATHS), 0o440, 0),
        sshd=InstalledFile(dropins.sshd(PATHS), 0o644, 0),
        subids={"/etc/subgid": ["root:1000000:4293967294"], "/etc/subuid": ["x:1:2", "root:1000000:131072"]},
        template_exists=True,
        configs={name: apply.wanted_config(REG, user, "generated") for name, user in REG.users.items()},
        listeners={22: "sshd, pid 1"},
        accounts={name: Account(PATHS.shell, True) for name in REG.users},
        sshd_effect=SSHD,
        helper_server=helpercheck.ServerFacts(pid=77, started=2000.0, code_changed=1000.0),
    )


def failures(facts: Facts) -> list[str]:
    return [item.line() for item in doctor.run_checks(REG, PATHS, facts) if not item.ok]


def test_a_healthy_host_passes_every_check() -> None:
    findings = doctor.run_checks(REG, PATHS, healthy())
    assert doctor.all_ok(findings)
    assert "ok: alice: one forward, port 22001 -> 10.0.3.2:22" in [item.line() for item in findings]
    assert len(findings) == 24  # 19 + "no leftovers of interrupted adds" + 3 for sshd + the resident helper
    reloaded = "ok: sshd PID 4242 has read its configuration since /etc/ssh/sshd_config.d/gpushell.conf"
    assert f"{reloaded} last changed" in [item.line() for item in findings]


def test_the_resident_helper_is_a_warning_when_missing_and_a_failure_when_older_than_the_code() -> None:
    def lines(server: helpercheck.ServerFacts | None) -> list[str]:
        facts = dataclasses.replace(healthy(), helper_server=server)
        return [item.line() for item in doctor.check_helper_server(REG, PATHS, facts)]

    assert lines(healthy().helper_server) == [
        "ok: the resident helper (PID 77) answers on /run/gpushell-helper.sock with the installed code"
    ]
    assert lines(None) == [
        "warning: no resident helper answers on /run/gpushell-helper.sock: students' logins use sudo "
        f"(slower) — {helpercheck.FIX}"
    ]
    stale = helpercheck.ServerFacts(pid=77, started=1000.0, code_changed=2000.0)
    assert lines(stale) == [
        "FAIL: the resident helper (PID 77) started before gpushell was last installed: it answers "
        "students with the old code — fix: systemctl restart gpushell-helper.service"
    ]


def test_kernel_pools_too_small_for_the_host_fail_and_apply_fixes_them() -> None:
    memory = 16 * 2**30
    instances, watches = "fs.inotify.max_user_instances", "fs.inotify.max_user_watches"
    roomy = dataclasses.replace(healthy(), pools={instances: 33554432, watches: 600000000}, memory=memory)
    assert failures(roomy) == []
    assert (
        "ok: the kernel pools every container shares are as large as the host needs: "
        f"{instances} 33554432, {watches} 600000000"
    ) in [item.line() for item in doctor.run_checks(REG, PATHS, roomy)]
    assert failures(dataclasses.replace(roomy, pools={instances: 128, watches: 600000000})) == [
        f"FAIL: {instances} is 128, below 33554432: every container draws on this host-wide pool, "
        "and one container can take it all — fix: gpushell-admin apply"
    ]


def test_a_queued_signal_pool_below_what_memory_could_fill_is_a_warning() -> None:
    def lines(pool: tuple[int, int] | None) -> list[str]:
        facts = dataclasses.replace(healthy(), signal_pool=pool)
        return [item.line() for item in doctor.check_signal_pool(REG, PATHS, facts)]

    assert lines(None) == []  # not examined: a cluster, whose engine starts the containers
    assert lines((357913941, 357913941)) == [
        "ok: each container gets a pool of 357913941 queued signals, more than memory could fill"
    ]
    assert lines((96369, 357913941)) == [
        "warning: each container gets a pool of 96369 queued signals (root's RLIMIT_SIGPENDING), below "
        "357913941: one container can queue them all and leave its neighbours none — give root "
        "CAP_SYS_RESOURCE (a stock host's root has it), or a hard RLIMIT_SIGPENDING of at least 357913941 "
        "where gpushell starts containers"
    ]
    assert failures(dataclasses.replace(healthy(), signal_pool=(96369, 357913941))) == []  # doctor passes


def test_with_lending_on_a_tick_that_stopped_fails_and_names_the_timer() -> None:
    lending = REG.replace(lending=parse("lending: {gpus: all}\nusers: {}\n", "/etc/gpushell.yaml").lending)
    now = 1795901000.0

    def tick_lines(reg: Registry, last_tick: float | None) -> list[str]:
        facts = dataclasses.replace(healthy(), now=now, last_tick=last_tick)
        return [item.line() for item in doctor.check_tick(reg, PATHS, facts)]

    assert tick_lines(REG, None) == []  # no lending: the tick is the admin's choice
    assert tick_lines(lending, now - 70) == ["ok: gpushell-admin tick ran 70 s ago"]
    fix = f"fix: {doctor.TICK_FIX}"
    assert doctor.TICK_FIX.startswith("systemctl enable --now gpushell-tick.timer")
    assert tick_lines(lending, None) == [
        "FAIL: gpushell-admin tick has not run since boot: GPU loans do not end and the line is not served"
        f" — {fix}"
    ]
    assert tick_lines(lending, now - 3600) == [
        "FAIL: gpushell-admin tick last ran 60 minutes ago: GPU loans do not end and the line is not served"
        f" — {fix}"
    ]


def test_finding_lines() -> None:
    assert Finding(True, "bridge up").line() == "ok: bridge up"
    assert Finding(False, "bridge down", "gpushell-admin init").line() == (
        "FAIL: bridge down — fix: gpushell-admin init"
    )
    assert not doctor.all_ok([Finding(True, "a"), Finding(False, "b", "c")])


def test_bridge_missing_or_without_gateway() -> None:
    assert failures(dataclasses.replace(healthy(), bridge_exists=False, bridge_addresses=[])) == [
        "FAIL: bridge lxcbr0 does not exist — fix: gpushell-admin init"
    ]
    assert failures(dataclasses.replace(healthy(), bridge_addresses=["10.0.3.7/24"])) == [
        "FAIL: bridge lxcbr0 lacks the gateway address 10.0.3.1/24 — fix: gpushell-admin init"
    ]


def test_a_bridge_whose_mac_follows_its_ports_fails() -> None:
    assert failures(dataclasses.replace(healthy(), bridge_mac_fixed=False)) == [
        "FAIL: bridge lxcbr0 takes its MAC address from its ports: each container's start or stop may change "
        "it and cut the running containers off from the host for ~30 s — fix: gpushell-admin apply"
    ]
    assert "ok: bridge lxcbr0 keeps a MAC address of its own" in [
        f.line() for f in doctor.run_checks(REG, PATHS, healthy())
    ]


def test_forwarding_off() -> None:
    assert failures(dataclasses.replace(healthy(), forwarding_on=False)) == [
        "FAIL: IPv4 forwarding is off — fix: gpushell-admin init (or: sysctl -w net.ipv4.ip_forward=1)"
    ]


def test_missing_jump_and_missing_or_doubled_rules() -> None:
    facts = dataclasses.replace(healthy(), table=nat(ALICE, ALICE, jumps=("PREROUTING",)))
    assert failures(facts) == [
        "FAIL: no jump from OUTPUT to GPUSHELL — fix: gpushell-admin apply",
        "FAIL: alice: 2 rule(s) tagged gpushell:alice, 2 of them right (port 22001 -> 10.0.3.2:22)"
        " — fix: gpushell-admin apply",
        "FAIL: bob: 0 rule(s) tagged gpushell:bob, 0 of them right (port 22002 -> 10.0.3.3:22)"
        " — fix: gpushell-admin apply",
    ]


def test_stray_rules() -> None:
    ghost = ["-A", "GPUSHELL", "-p", "tcp", "-m", "tcp", "--dport", "22500", "-m", "comment",
             "--comment", "gpushell:ghost", "-j", "DNAT", "--to-destination", "10.0.3.50:22"]  # fmt: skip
    (line,) = failures(dataclasses.replace(healthy(), table=nat(ALICE, BOB, ghost)))
    assert line.startswith("FAIL: 1 stray rule(s) in GPUSHELL: orphan rule for unregistered gpushell:ghost")
    assert line.endswith(" — fix: gpushell-admin apply")


def test_a_masquerade_rule_left_from_a_cluster_is_a_stray() -> None:
    left = member_masquerade_rule("GPUSHELL", "192.168.5.11")  # the lab went back to one host
    (line,) = failures(dataclasses.replace(healthy(), table=nat(ALICE, BOB, left)))
    assert line.startswith(
        "FAIL: 1 stray rule(s) in GPUSHELL: MASQUERADE rule for no member of the registry:"
    )
    assert "-d 192.168.5.11/32" in line and line.endswith(" — fix: gpushell-admin apply")


def test_sshd_would_allow_forwarding_and_has_not_reloaded() -> None:
    loose = sshdcheck.Probe("bob", 0, SSHD_T.replace("allowtcpforwarding no", "allowtcpforwarding yes"), "")
    stale = dataclasses.replace(
        SSHD, probes=(SSHD.probes[0], loose), changed={PATHS.sshd_dropin: 1795901300 * SECOND}
    )
    assert failures(dataclasses.replace(healthy(), sshd_effect=stale)) == [
        "FAIL: sshd would give bob `allowtcpforwarding yes`, not `allowtcpforwarding no`"
        " — fix: make /etc/ssh/sshd_config.d/gpushell.conf what gpushell installs (gpushell-admin init)"
        " and include it before any other setting in /etc/ssh/sshd_config, then reload sshd: kill -HUP 4242",
        "FAIL: sshd PID 4242 last read its configuration at 2026-11-28 21:26:15 UTC, before"
        " /etc/ssh/sshd_config.d/gpushell.conf changed at 2026-11-28 21:28:20 UTC"
        " — fix: reload sshd: kill -HUP 4242",
    ]


def test_dropins_missing_different_or_loose() -> None:
    facts = dataclasses.replace(
        healthy(), sudoers=InstalledFile(None), sshd=InstalledFile(dropins.sshd(PATHS), 0o666, 0)
    )
    assert failures(facts) == [
        "FAIL: sudoers drop-in /etc/sudoers.d/gpushell is missing — fix: gpushell-admin init",
        "FAIL: sshd drop-in /etc/ssh/sshd_config.d/gpushell.conf has owner 0, mode 0666"
        " — fix: chown root:root /etc/ssh/sshd_config.d/gpushell.conf"
        " && chmod 0644 /etc/ssh/sshd_config.d/gpushell.conf",
    ]
    edited = dataclasses.replace(healthy(), sudoers=InstalledFile("ALL ALL=(ALL) ALL\n", 0o440, 0))
    assert failures(edited) == [
        "FAIL: sudoers drop-in /etc/sudoers.d/gpushell differs from what gpushell installs"
        " — fix: gpushell-admin init"
    ]


def test_subordinate_ids_must_cover_every_range() -> None:
    assert doctor.covers("root:1000000:131072", 1000000, 1131071)
    assert not doctor.covers("root:1000000:131071", 1000000, 1131071)
    assert not doctor.covers("lxd:0:4294967295", 1000000, 1131071)
    assert not doctor.covers("root:1000001:9999999", 1000000, 1131071)
    subids = {"/etc/subuid": None, "/etc/subgid": ["root:1000000:65536"]}
    facts = dataclasses.replace(healthy(), subids=subids)
    assert failures(facts) == [
        "FAIL: /etc/subgid has no root: line covering ids 1000000-1131071 — fix: gpushell-admin init",
        "FAIL: /etc/subuid has no root: line covering ids 1000000-1131071 — fix: gpushell-admin init",
    ]


def test_template_and_containers() -> None:
    facts = healthy()
    facts.configs["alice"] = None
    facts.configs["bob"] = facts.configs["bob"] + "lxc.extra = 1\n"  # type: ignore[operator]
    assert failures(dataclasses.replace(facts, template_exists=False)) == [
        "FAIL: template tpl is missing from /var/lib/lxc — fix: gpushell-admin template build",
        "FAIL: alice: container alice does not exist in /var/lib/lxc"
        " — fix: gpushell-admin remove alice && gpushell-admin add alice",
        "FAIL: bob: /var/lib/lxc/bob/config differs from the registry's — fix: gpushell-admin apply",
    ]


def test_a_host_service_on_a_students_port() -> None:
    (line,) = failures(dataclasses.replace(healthy(), listeners={22002: "nginx, pid 42"}))
    assert line == (
        "FAIL: bob: port 22002 is also a listening host service (nginx, pid 42)"
        " — fix: move that service, or give bob another port in /etc/gpushell.yaml"
        " and run gpushell-admin apply"
    )


def test_accounts() -> None:
    facts = healthy()
    facts.accounts["alice"] = None
    facts.accounts["bob"] = Account("/bin/bash", False)
    assert failures(facts) == [
        "FAIL: alice: no host account — fix: useradd --create-home --shell /usr/local/bin/gpushell"
        " --groups gpushell alice, then install the student's key in ~alice/.ssh/authorized_keys",
        "FAIL: bob: host account has shell /bin/bash and is not in group gpushell"
        " — fix: gpushell-admin apply",
    ]
