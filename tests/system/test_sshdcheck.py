"""doctor's sshd checks: recorded `sshd -T -ddd` runs of OpenSSH 9.2, a made-up /proc, file times.

Recorded with a Debian-like sshd_config (the drop-in included first,
`X11Forwarding yes` globally) for an account `alice` in group `gpushell`;
the bad variants change only what the comments say, as recorded.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import pytest

from gpushell.admin import doctor
from gpushell.core.paths import Paths
from gpushell.system import runner, sshdcheck
from gpushell.system.sshdcheck import Listener, Probe, SshdFacts

PATHS = Paths()
CONFIG = "/etc/ssh/sshd_config"
DROPIN = "/etc/ssh/sshd_config.d/gpushell.conf"
# 2026-11-28 21:26:15 UTC and so on
SECOND = 1_000_000_000  # times are in ns, as file times are
STARTED, LOADED, CHANGED = 1795901172_140000000, 1795901175_900000000, 1795901338_500000000

# (its algorithm lists, the lines over 100 characters, left out)
GOOD_DUMP = """\
port 22
addressfamily any
listenaddress [::]:22
listenaddress 0.0.0.0:22
usepam yes
logingracetime 120
x11displayoffset 10
maxauthtries 6
maxsessions 10
clientaliveinterval 0
clientalivecountmax 3
requiredrsasize 1024
streamlocalbindmask 0177
unusedconnectiontimeout none
permitrootlogin without-password
ignorerhosts yes
ignoreuserknownhosts no
hostbasedauthentication no
hostbasedusesnamefrompacketonly no
pubkeyauthentication yes
kerberosauthentication no
kerberosorlocalpasswd yes
kerberosticketcleanup yes
gssapiauthentication no
gssapicleanupcredentials yes
gssapikeyexchange no
gssapistrictacceptorcheck yes
gssapistorecredentialsonrekey no
passwordauthentication yes
kbdinteractiveauthentication no
printmotd no
printlastlog yes
x11forwarding no
x11uselocalhost yes
permittty yes
permituserrc no
strictmodes yes
tcpkeepalive yes
permitemptypasswords no
compression yes
gatewayports no
usedns no
allowtcpforwarding no
allowagentforwarding no
disableforwarding yes
allowstreamlocalforwarding no
streamlocalbindunlink no
fingerprinthash SHA256
exposeauthinfo no
pidfile /run/sshd.pid
modulifile /etc/ssh/moduli
xauthlocation /usr/bin/xauth
banner none
forcecommand none
chrootdirectory none
trustedusercakeys none
revokedkeys none
securitykeyprovider internal
authorizedprincipalsfile none
versionaddendum none
authorizedkeyscommand none
authorizedkeyscommanduser none
authorizedprincipalscommand none
authorizedprincipalscommanduser none
hostkeyagent none
loglevel DEBUG3
syslogfacility AUTH
authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2
hostkey /etc/ssh/ssh_host_ed25519_key
acceptenv LANG
acceptenv LC_*
authenticationmethods any
subsystem sftp /usr/lib/openssh/sftp-server
maxstartups 10:30:100
persourcemaxstartups none
persourcenetblocksize 32:128
permittunnel no
ipqos lowdelay throughput
rekeylimit 0 0
permitopen none
permitlisten none
permituserenvironment no
pubkeyauthoptions none
"""


GOOD_DEBUG = """\
debug2: load_server_config: filename /etc/ssh/sshd_config
debug2: load_server_config: done config len = 226
debug2: parse_server_config_depth: config /etc/ssh/sshd_config len 226
debug2: /etc/ssh/sshd_config line 1: new include /etc/ssh/sshd_config.d/gpushell.conf
debug2: /etc/ssh/sshd_config line 1: including /etc/ssh/sshd_config.d/gpushell.conf
debug2: load_server_config: filename /etc/ssh/sshd_config.d/gpushell.conf
debug2: load_server_config: done config len = 266
debug2: parse_server_config_depth: config /etc/ssh/sshd_config.d/gpushell.conf len 266
debug3: /etc/ssh/sshd_config.d/gpushell.conf:1 setting PermitUserEnvironment no
debug3: checking syntax for 'Match Group gpushell'
debug3: checking syntax for 'Match all'
debug3: /etc/ssh/sshd_config:2 setting HostKey /etc/ssh/ssh_host_ed25519_key
debug3: /etc/ssh/sshd_config:3 setting PidFile /run/sshd.pid
debug3: /etc/ssh/sshd_config:4 setting KbdInteractiveAuthentication no
debug3: /etc/ssh/sshd_config:5 setting UsePAM yes
debug3: /etc/ssh/sshd_config:6 setting X11Forwarding yes
debug3: /etc/ssh/sshd_config:7 setting PrintMotd no
debug3: /etc/ssh/sshd_config:8 setting AcceptEnv LANG LC_*
debug3: /etc/ssh/sshd_config:9 setting Subsystem sftp\t/usr/lib/openssh/sftp-server
debug1: sshd version OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026
debug1: private host key #0: ssh-ed25519 SHA256:jmTO1ZU1zf+MClE68HktT9JmOzP83BKDEpuuwfNlM88
debug2: parse_server_config_depth: config reprocess config len 226
debug2: parse_server_config_depth: config /etc/ssh/sshd_config.d/gpushell.conf len 266
debug3: checking match for 'Group gpushell' user alice host localhost addr 127.0.0.1 laddr (null) lport 0
debug1: user alice matched group list gpushell at line 2
debug3: match found
debug3: /etc/ssh/sshd_config.d/gpushell.conf:3 setting DisableForwarding yes
debug3: /etc/ssh/sshd_config.d/gpushell.conf:4 setting AllowTcpForwarding no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:5 setting AllowAgentForwarding no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:6 setting AllowStreamLocalForwarding no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:7 setting X11Forwarding no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:8 setting PermitTunnel no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:9 setting PermitOpen none
debug3: /etc/ssh/sshd_config.d/gpushell.conf:10 setting PermitListen none
debug3: /etc/ssh/sshd_config.d/gpushell.conf:11 setting GatewayPorts no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:12 setting PermitUserRC no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:13 setting PermitTTY yes
debug3: checking match for 'all' user alice host localhost addr 127.0.0.1 laddr (null) lport 0
"""


BASE_DEBUG = """\
debug2: load_server_config: filename /etc/ssh/sshd_config
debug2: load_server_config: done config len = 226
debug2: parse_server_config_depth: config /etc/ssh/sshd_config len 226
debug2: /etc/ssh/sshd_config line 1: new include /etc/ssh/sshd_config.d/gpushell.conf
debug2: /etc/ssh/sshd_config line 1: including /etc/ssh/sshd_config.d/gpushell.conf
debug2: load_server_config: filename /etc/ssh/sshd_config.d/gpushell.conf
debug2: load_server_config: done config len = 266
debug2: parse_server_config_depth: config /etc/ssh/sshd_config.d/gpushell.conf len 266
debug3: /etc/ssh/sshd_config.d/gpushell.conf:1 setting PermitUserEnvironment no
debug3: checking syntax for 'Match Group gpushell'
debug3: checking syntax for 'Match all'
debug3: /etc/ssh/sshd_config:2 setting HostKey /etc/ssh/ssh_host_ed25519_key
debug3: /etc/ssh/sshd_config:3 setting PidFile /run/sshd.pid
debug3: /etc/ssh/sshd_config:4 setting KbdInteractiveAuthentication no
debug3: /etc/ssh/sshd_config:5 setting UsePAM yes
debug3: /etc/ssh/sshd_config:6 setting X11Forwarding yes
debug3: /etc/ssh/sshd_config:7 setting PrintMotd no
debug3: /etc/ssh/sshd_config:8 setting AcceptEnv LANG LC_*
debug3: /etc/ssh/sshd_config:9 setting Subsystem sftp\t/usr/lib/openssh/sftp-server
debug1: sshd version OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026
debug1: private host key #0: ssh-ed25519 SHA256:jmTO1ZU1zf+MClE68HktT9JmOzP83BKDEpuuwfNlM88
debug2: parse_server_config_depth: config reprocess config len 226
debug2: parse_server_config_depth: config /etc/ssh/sshd_config.d/gpushell.conf len 266
debug3: checking match for 'Group gpushell' user (null) host (null) addr (null) laddr (null) lport 0
debug3: match not found
debug3: checking match for 'all' user (null) host (null) addr (null) laddr (null) lport 0
"""


NOINCLUDE_DEBUG = """\
debug2: load_server_config: filename /etc/ssh/sshd_config
debug2: load_server_config: done config len = 193
debug2: parse_server_config_depth: config /etc/ssh/sshd_config len 193
debug3: /etc/ssh/sshd_config:1 setting HostKey /etc/ssh/ssh_host_ed25519_key
debug3: /etc/ssh/sshd_config:2 setting PidFile /run/sshd.pid
debug3: /etc/ssh/sshd_config:3 setting KbdInteractiveAuthentication no
debug3: /etc/ssh/sshd_config:4 setting UsePAM yes
debug3: /etc/ssh/sshd_config:5 setting X11Forwarding yes
debug3: /etc/ssh/sshd_config:6 setting PrintMotd no
debug3: /etc/ssh/sshd_config:7 setting AcceptEnv LANG LC_*
debug3: /etc/ssh/sshd_config:8 setting Subsystem sftp\t/usr/lib/openssh/sftp-server
debug1: sshd version OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026
debug1: private host key #0: ssh-ed25519 SHA256:jmTO1ZU1zf+MClE68HktT9JmOzP83BKDEpuuwfNlM88
debug2: parse_server_config_depth: config reprocess config len 193
"""


PUE_DEBUG = """\
debug2: load_server_config: filename /etc/ssh/sshd_config
debug2: load_server_config: done config len = 252
debug2: parse_server_config_depth: config /etc/ssh/sshd_config len 252
debug3: /etc/ssh/sshd_config:1 setting PermitUserEnvironment yes
debug2: /etc/ssh/sshd_config line 2: new include /etc/ssh/sshd_config.d/gpushell.conf
debug2: /etc/ssh/sshd_config line 2: including /etc/ssh/sshd_config.d/gpushell.conf
debug2: load_server_config: filename /etc/ssh/sshd_config.d/gpushell.conf
debug2: load_server_config: done config len = 266
debug2: parse_server_config_depth: config /etc/ssh/sshd_config.d/gpushell.conf len 266
debug3: /etc/ssh/sshd_config.d/gpushell.conf:1 setting PermitUserEnvironment no
debug3: checking syntax for 'Match Group gpushell'
debug3: checking syntax for 'Match all'
debug3: /etc/ssh/sshd_config:3 setting HostKey /etc/ssh/ssh_host_ed25519_key
debug3: /etc/ssh/sshd_config:4 setting PidFile /run/sshd.pid
debug3: /etc/ssh/sshd_config:5 setting KbdInteractiveAuthentication no
debug3: /etc/ssh/sshd_config:6 setting UsePAM yes
debug3: /etc/ssh/sshd_config:7 setting X11Forwarding yes
debug3: /etc/ssh/sshd_config:8 setting PrintMotd no
debug3: /etc/ssh/sshd_config:9 setting AcceptEnv LANG LC_*
debug3: /etc/ssh/sshd_config:10 setting Subsystem sftp\t/usr/lib/openssh/sftp-server
debug1: sshd version OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026
debug1: private host key #0: ssh-ed25519 SHA256:jmTO1ZU1zf+MClE68HktT9JmOzP83BKDEpuuwfNlM88
debug2: parse_server_config_depth: config reprocess config len 252
debug2: parse_server_config_depth: config /etc/ssh/sshd_config.d/gpushell.conf len 266
debug3: checking match for 'Group gpushell' user alice host localhost addr 127.0.0.1 laddr (null) lport 0
debug1: user alice matched group list gpushell at line 2
debug3: match found
debug3: /etc/ssh/sshd_config.d/gpushell.conf:3 setting DisableForwarding yes
debug3: /etc/ssh/sshd_config.d/gpushell.conf:4 setting AllowTcpForwarding no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:5 setting AllowAgentForwarding no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:6 setting AllowStreamLocalForwarding no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:7 setting X11Forwarding no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:8 setting PermitTunnel no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:9 setting PermitOpen none
debug3: /etc/ssh/sshd_config.d/gpushell.conf:10 setting PermitListen none
debug3: /etc/ssh/sshd_config.d/gpushell.conf:11 setting GatewayPorts no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:12 setting PermitUserRC no
debug3: /etc/ssh/sshd_config.d/gpushell.conf:13 setting PermitTTY yes
debug3: checking match for 'all' user alice host localhost addr 127.0.0.1 laddr (null) lport 0
"""


def variant(*lines: str) -> str:
    """GOOD_DUMP with recorded lines in place of the good ones (the same keyword)."""
    dump = GOOD_DUMP.splitlines()
    for line in lines:
        keyword = line.split()[0]
        dump = [line if old.split()[0] == keyword else old for old in dump]
    return "\n".join(dump) + "\n"


# `Include` line taken out of sshd_config (recorded)
NOINCLUDE_DUMP = variant(
    "x11forwarding yes", "permituserrc yes", "allowtcpforwarding yes", "allowagentforwarding yes",
    "disableforwarding no", "allowstreamlocalforwarding yes", "permitopen any", "permitlisten any",
)  # fmt: skip
# `PermitUserEnvironment yes` as sshd_config's first line (recorded)
PUE_DUMP = variant("permituserenvironment yes")
# `Subsystem sftp internal-sftp` in sshd_config (recorded: these lines differ)
ISFTP_DUMP = variant("subsystem sftp internal-sftp")
ISFTP_DEBUG = GOOD_DEBUG.replace(
    "setting Subsystem sftp\t/usr/lib/openssh/sftp-server", "setting Subsystem sftp\tinternal-sftp"
)
# `Match User alice` / `ForceCommand /bin/true` at sshd_config's end, lines 10-11 (recorded)
FC_DUMP = variant("forcecommand /bin/true")
FC_DEBUG = GOOD_DEBUG + (
    "debug3: checking match for 'User alice' user alice host localhost addr 127.0.0.1 laddr (null) lport 0\n"
    "debug1: user alice matched 'User alice' at line 10\n"
    "debug3: match found\n"
    "debug3: reprocess config:11 setting ForceCommand /bin/true\n"
)
# `Bogus yes` as the first line (recorded, shortened)
BOGUS_DEBUG = """\
debug2: load_server_config: filename /etc/ssh/sshd_config
debug2: load_server_config: done config len = 236
debug2: parse_server_config_depth: config /etc/ssh/sshd_config len 236
/etc/ssh/sshd_config: line 1: Bad configuration option: Bogus
debug3: /etc/ssh/sshd_config:1 setting Bogus yes
/etc/ssh/sshd_config: terminating, 1 bad configuration options
"""

BASE = Probe(None, 0, GOOD_DUMP, BASE_DEBUG)
SSHD = Listener(4242, STARTED, LOADED)


def facts(
    *probes: Probe, dropin_read: bool | None = True, base: Probe = BASE, **changes: object
) -> SshdFacts:
    made = SshdFacts(
        config=CONFIG,
        base=base,
        probes=probes,
        listeners=(SSHD,),
        changed={CONFIG: STARTED - 100 * SECOND, DROPIN: STARTED - 50 * SECOND},
        dropin_read=dropin_read,
    )
    return dataclasses.replace(made, **changes)  # type: ignore[arg-type]


def lines(sshd: SshdFacts) -> list[str]:
    host = doctor.Facts(
        bridge_exists=True, bridge_addresses=[], bridge_mac_fixed=True, forwarding_on=True,
        table=doctor.NatTable(""),
        sudoers=doctor.InstalledFile(None), sshd=doctor.InstalledFile(None), subids={},
        template_exists=True, configs={}, listeners={}, accounts={}, sshd_effect=sshd,
    )  # fmt: skip
    found = doctor.check_sshd_settings(None, PATHS, host) + doctor.check_sshd_running(None, PATHS, host)  # type: ignore[arg-type]
    return [item.line() for item in found]


RELOAD = "reload sshd: kill -HUP 4242"
INCLUDE = f"add `Include /etc/ssh/sshd_config.d/*.conf` as the first line of {CONFIG}, then {RELOAD}"


# --- parsing ---------------------------------------------------------------


def test_settings_of_a_recorded_dump() -> None:
    found = sshdcheck.settings(GOOD_DUMP)
    assert found["disableforwarding"] == ["yes"]
    assert found["subsystem"] == ["sftp /usr/lib/openssh/sftp-server"]
    assert sshdcheck.value(GOOD_DUMP, "pidfile") == "/run/sshd.pid"
    assert sshdcheck.value(GOOD_DUMP, "forcecommand") == "none"
    assert sshdcheck.value(GOOD_DUMP, "nosuchkeyword") is None


def test_files_read_and_where_a_value_was_set() -> None:
    assert sshdcheck.files_read(BASE_DEBUG) == [CONFIG, DROPIN]
    assert sshdcheck.files_read(NOINCLUDE_DEBUG) == [CONFIG]
    assert sshdcheck.files_read("sshd: something else entirely\n") is None
    assert sshdcheck.origins(PUE_DEBUG, "permituserenvironment", "yes", CONFIG) == [f"{CONFIG}:1"]
    assert sshdcheck.origins(PUE_DEBUG, "PermitUserEnvironment", "no", CONFIG) == [f"{DROPIN}:1"]
    assert sshdcheck.origins(ISFTP_DEBUG, "subsystem", "sftp internal-sftp", CONFIG) == [f"{CONFIG}:9"]
    # Lines of Match blocks in the main file: sshd calls it `reprocess config` then.
    assert sshdcheck.origins(FC_DEBUG, "forcecommand", "/bin/true", CONFIG) == [f"{CONFIG}:11"]
    assert sshdcheck.origins(GOOD_DEBUG, "allowtcpforwarding", "yes", CONFIG) == []


def test_error_line_is_sshds_first_complaint() -> None:
    assert sshdcheck.error_line(Probe(None, 255, "", BOGUS_DEBUG)) == (
        "/etc/ssh/sshd_config: line 1: Bad configuration option: Bogus"
    )
    assert sshdcheck.error_line(Probe(None, 1, "", "debug1: x\n")) == "exit status 1"


def test_arguments_of_a_retitled_listener_and_of_a_plain_one() -> None:
    title = b"sshd: /usr/sbin/sshd -D -e -f /run/x/sshd_config [listener] 0 of 10-100 startups\0\0"
    assert sshdcheck.listener_argv(title) == ["/usr/sbin/sshd", "-D", "-e", "-f", "/run/x/sshd_config"]
    assert sshdcheck.listener_argv(b"sshd: /usr/sbin/sshd -D [listener] 1 of 10-100 startups\0") == [
        "/usr/sbin/sshd", "-D",
    ]  # fmt: skip
    assert sshdcheck.listener_argv(b"/usr/sbin/sshd\0-T\0-f\0/a b\0") == [
        "/usr/sbin/sshd",
        "-T",
        "-f",
        "/a b",
    ]


def test_sshd_options_as_getopt_reads_them() -> None:
    assert sshdcheck.options(["sshd", "-Def", "cfg", "-o", "Port=2"]) == (
        {"D", "e"},
        {"f": "cfg", "o": "Port=2"},
    )
    assert sshdcheck.options(["sshd", "-f/x", "-T"]) == ({"T"}, {"f": "/x"})
    assert sshdcheck.options(["sshd"]) == (set(), {})


def test_proc_stat_and_boot_time() -> None:
    fields = "S 77 " + "0 " * 17 + "123456 999"
    assert sshdcheck.proc_stat(f"4242 (sshd) x) {fields}") == (77, 123456)
    assert sshdcheck.boot_time("cpu 1 2\nbtime 1795000000\nprocesses 9\n") == 1795000000


# --- reading a made-up /proc, and gather with recorded runs --------------------


def fake_process(
    proc: pathlib.Path, pid: int, parent: int, exe: str, cmdline: bytes, start: int = 100, cwd: str = "/"
) -> None:
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "exe").symlink_to(exe)
    (proc / str(pid) / "cwd").symlink_to(cwd)
    (proc / str(pid) / "stat").write_text(f"{pid} (sshd) S {parent} " + "0 " * 17 + f"{start} 0 0\n")
    (proc / str(pid) / "cmdline").write_bytes(cmdline)


def made_up_proc(tmp_path: pathlib.Path, config: str, sshd: str = "/usr/sbin/sshd") -> pathlib.Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "stat").write_text("cpu 1 2 3\nbtime 1795900000\n")
    (proc / "self").symlink_to("1")
    fake_process(proc, 1, 0, "/sbin/init", b"/sbin/init\0")
    listener = f"sshd: /usr/sbin/sshd -D -f {config} [listener] 0 of 10-100 startups".encode()
    fake_process(proc, 100, 1, sshd, listener + b"\0\0\0", start=500)
    fake_process(proc, 101, 100, sshd, b"sshd: alice [priv]\0")  # a connection
    fake_process(proc, 102, 1, sshd, f"/usr/sbin/sshd\0-T\0-f\0{config}\0".encode())  # a test
    fake_process(proc, 103, 1, sshd, b"sshd: /usr/sbin/sshd -D -f /other [listener] 0\0")
    fake_process(proc, 104, 1, "/bin/bash", f"bash\0-f\0{config}\0".encode())
    fake_process(proc, 105, 1, sshd, b"sshd\0-Def\0sshd_config\0", start=700, cwd=os.path.dirname(config))
    fake_process(proc, 106, 1, f"{sshd} (deleted)", listener + b"\0", start=900)  # after an upgrade
    fake_process(proc, 107, 1, sshd, b"sshd: /usr/sbin/sshd -i\0")  # socket activation
    return proc


def test_find_listeners_in_a_made_up_proc(tmp_path: pathlib.Path) -> None:
    config = str(tmp_path / "sshd_config")
    proc = made_up_proc(tmp_path, config)
    tick = os.sysconf("SC_CLK_TCK")
    assert sshdcheck.find_listeners(config, str(proc)) == [
        (100, "/usr/sbin/sshd", 1795900000 * SECOND + 500 * SECOND // tick),
        (105, "/usr/sbin/sshd", 1795900000 * SECOND + 700 * SECOND // tick),
        (106, "/usr/sbin/sshd", 1795900000 * SECOND + 900 * SECOND // tick),
    ]
    assert [pid for pid, _, _ in sshdcheck.find_listeners("/other", str(proc))] == [103]
    # A connection's sshd (parent: the listener) and an inetd-style one use the default file.
    assert sshdcheck.find_listeners(sshdcheck.DEFAULT_CONFIG, str(proc)) == []


def test_the_pid_file_counts_only_when_it_names_the_listener(tmp_path: pathlib.Path) -> None:
    pidfile = tmp_path / "sshd.pid"
    pidfile.write_text("4242\n")
    os.utime(pidfile, ns=(LOADED, LOADED))
    assert sshdcheck.pidfile_time(str(pidfile), 4242) == LOADED
    assert sshdcheck.pidfile_time(str(pidfile), 4243) is None
    assert sshdcheck.pidfile_time("none", 4242) is None
    assert sshdcheck.pidfile_time(str(tmp_path / "missing"), 4242) is None


def test_gather_runs_sshd_T_for_each_user_and_reads_the_times(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, dropin, pidfile = (str(tmp_path / name) for name in ("sshd_config", "gpushell.conf", "sshd.pid"))

    def here(text: str) -> str:
        return text.replace(DROPIN, dropin).replace(CONFIG, config).replace("/run/sshd.pid", pidfile)

    for path, when in ((config, STARTED - 100 * SECOND), (dropin, STARTED - 50 * SECOND)):
        pathlib.Path(path).write_text("x\n")
        os.utime(path, ns=(when, when))
    pathlib.Path(pidfile).write_text("100\n")
    os.utime(pidfile, ns=(LOADED, LOADED))
    ran: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> runner.Result:
        ran.append(argv)
        return runner.Result(0, here(GOOD_DUMP), here(BASE_DEBUG if "-C" not in argv else GOOD_DEBUG))

    monkeypatch.setattr(sshdcheck, "run", fake_run)
    sshd = tmp_path / "sbin" / "sshd"  # the running listener's program is the one asked
    sshd.parent.mkdir()
    sshd.write_text("")
    found = sshdcheck.gather(config, dropin, ["alice", "bob"], str(made_up_proc(tmp_path, config, str(sshd))))
    assert ran == [
        [str(sshd), "-T", "-ddd", "-f", config],
        [str(sshd), "-T", "-ddd", "-f", config, "-C", "user=alice,host=localhost,addr=127.0.0.1"],
        [str(sshd), "-T", "-ddd", "-f", config, "-C", "user=bob,host=localhost,addr=127.0.0.1"],
    ]
    assert [probe.user for probe in found.probes] == ["alice", "bob"]
    assert found.changed == {config: STARTED - 100 * SECOND, dropin: STARTED - 50 * SECOND}
    assert found.dropin_read is True
    tick = os.sysconf("SC_CLK_TCK")
    assert found.listeners[0] == Listener(100, 1795900000 * SECOND + 500 * SECOND // tick, LOADED)
    assert [listener.loaded for listener in found.listeners[1:]] == [None, None]  # the pid file names 100


def test_gather_asks_no_user_when_the_configuration_does_not_load(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> runner.Result:
        ran.append(argv)
        return runner.Result(255, "", BOGUS_DEBUG)

    monkeypatch.setattr(sshdcheck, "run", fake_run)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "stat").write_text("btime 1\n")
    found = sshdcheck.gather(CONFIG, DROPIN, ["alice"], str(tmp_path / "proc"))
    assert ran == [["sshd", "-T", "-ddd", "-f", CONFIG]]
    assert (found.base.returncode, found.probes, found.listeners) == (255, (), ())
    assert lines(found) == [
        f"FAIL: sshd -T -f {CONFIG} fails: /etc/ssh/sshd_config: line 1: Bad configuration option: Bogus"
        f" — fix: correct {CONFIG} or what it includes (a reload with it now would stop sshd)",
        f"FAIL: no running sshd was started with {CONFIG} — fix: start sshd: systemctl start ssh",
    ]


# --- the checks ------------------------------------------------------------------


def test_a_good_configuration_read_since_it_changed() -> None:
    alice, bob = Probe("alice", 0, GOOD_DUMP, GOOD_DEBUG), Probe("bob", 0, GOOD_DUMP, GOOD_DEBUG)
    assert lines(facts(alice, bob)) == [
        f"ok: sshd reads {DROPIN} through {CONFIG}",
        "ok: sshd gives alice, bob (group gpushell): no forwarding of any kind, no ~/.ssh/rc, "
        "no client environment, no ForceCommand, no internal-sftp",
        f"ok: sshd PID 4242 has read its configuration since {DROPIN} last changed",
    ]


def test_the_drop_in_not_included() -> None:
    probe = Probe("alice", 0, NOINCLUDE_DUMP, NOINCLUDE_DEBUG)
    wrong = [
        ("disableforwarding", "no", "yes"), ("allowtcpforwarding", "yes", "no"),
        ("allowagentforwarding", "yes", "no"), ("allowstreamlocalforwarding", "yes", "no"),
        ("x11forwarding", "yes", "no"), ("permitopen", "any", "none"), ("permitlisten", "any", "none"),
        ("permituserrc", "yes", "no"),
    ]  # fmt: skip
    assert lines(facts(probe, dropin_read=False, changed={CONFIG: STARTED - 100 * SECOND})) == [
        f"FAIL: sshd never reads {DROPIN}: {CONFIG} does not include it — fix: {INCLUDE}",
        *(
            f"FAIL: sshd would give alice `{key} {got}`, not `{key} {want}` — fix: {INCLUDE}"
            for key, got, want in wrong
        ),
        f"ok: sshd PID 4242 has read its configuration since {CONFIG} last changed",
    ]


def test_an_earlier_global_line_wins_over_the_drop_in() -> None:
    assert lines(facts(Probe("alice", 0, PUE_DUMP, PUE_DEBUG))) == [
        f"ok: sshd reads {DROPIN} through {CONFIG}",
        "FAIL: sshd would give alice `permituserenvironment yes`, not `permituserenvironment no` — fix: "
        f"take out the line that sets it at {CONFIG}:1 (sshd keeps the first value it reads, and a "
        f"matching Match block overrides a global line), then {RELOAD}",
        f"ok: sshd PID 4242 has read its configuration since {DROPIN} last changed",
    ]


def test_internal_sftp_and_a_forced_command() -> None:
    (sftp,) = [line for line in lines(facts(Probe("alice", 0, ISFTP_DUMP, ISFTP_DEBUG))) if "FAIL" in line]
    assert sftp == (
        "FAIL: sshd would run subsystem sftp for alice as internal-sftp, which bypasses the login shell"
        f" — fix: make it `Subsystem sftp /usr/lib/openssh/sftp-server` at {CONFIG}:9, then {RELOAD}"
    )
    good = Probe("bob", 0, GOOD_DUMP, GOOD_DEBUG)
    (forced,) = [line for line in lines(facts(good, Probe("alice", 0, FC_DUMP, FC_DEBUG))) if "FAIL" in line]
    assert forced.startswith(
        "FAIL: sshd would give alice `forcecommand /bin/true`, not `forcecommand none`"
        f" — fix: take out the line that sets it at {CONFIG}:11 "
    )


def test_settings_that_sshd_does_not_show_and_many_students() -> None:
    names = ["ann", "bea", "cid", "dan", "eve"]
    missing = GOOD_DUMP.replace("disableforwarding yes\n", "")
    found = lines(facts(*(Probe(name, 0, missing, GOOD_DEBUG) for name in names)))
    assert found[1] == (
        "FAIL: sshd would give ann, bea, cid and 2 more `disableforwarding (not shown)`, not "
        f"`disableforwarding yes` — fix: make {DROPIN} what gpushell installs (gpushell-admin init) "
        f"and include it before any other setting in {CONFIG}, then {RELOAD}"
    )


def test_no_account_in_the_group_to_ask_about() -> None:
    assert lines(facts())[:2] == [
        f"ok: sshd reads {DROPIN} through {CONFIG}",
        "ok: no account in group gpushell yet: what sshd applies to students is not checked "
        "(sshd matches `Match Group` only for an existing account)",
    ]


def test_debug_lines_not_understood_leave_out_the_include_finding() -> None:
    found = lines(facts(Probe("alice", 0, GOOD_DUMP, ""), dropin_read=None))
    assert not [line for line in found if "reads" in line and "through" in line]
    assert all(line.startswith("ok: ") for line in found)


def test_sshd_not_reloaded_since_the_drop_in_changed() -> None:
    probe = Probe("alice", 0, GOOD_DUMP, GOOD_DEBUG)
    assert lines(facts(probe, changed={CONFIG: STARTED - 100 * SECOND, DROPIN: CHANGED}))[-1] == (
        "FAIL: sshd PID 4242 last read its configuration at 2026-11-28 21:26:15 UTC, before "
        f"{DROPIN} changed at 2026-11-28 21:28:58 UTC — fix: {RELOAD}"
    )
    # Read in the same clock tick as the change: taken as read after it.
    assert lines(facts(probe, changed={DROPIN: LOADED}))[-1].startswith("ok: sshd PID 4242 has read")
    # One nanosecond later is later (file times are kept in ns, not rounded through a float).
    assert lines(facts(probe, changed={DROPIN: LOADED + 1}))[-1].startswith("FAIL: sshd PID 4242 last read")


def test_without_a_pid_file_only_a_start_after_the_change_is_proof() -> None:
    probe = Probe("alice", 0, GOOD_DUMP, GOOD_DEBUG)
    unknown = Listener(4242, STARTED, None)
    assert lines(facts(probe, listeners=(unknown,)))[-1] == (
        f"ok: sshd PID 4242 started after {DROPIN} last changed"
    )
    assert lines(facts(probe, listeners=(unknown,), changed={DROPIN: STARTED - SECOND // 2}))[-1] == (
        "FAIL: sshd PID 4242 started at 2026-11-28 21:26:12 UTC, before "
        f"{DROPIN} changed at 2026-11-28 21:26:11 UTC, and has no PidFile naming it that would show"
        " a reload — fix: restart sshd (without a PidFile a reload leaves no trace to check)"
    )


def test_no_running_sshd_for_the_configuration() -> None:
    probe = Probe("alice", 0, GOOD_DUMP, GOOD_DEBUG)
    assert lines(facts(probe, listeners=()))[-1] == (
        f"FAIL: no running sshd was started with {CONFIG} — fix: start sshd: systemctl start ssh"
    )
    two = (Listener(7, STARTED, LOADED), Listener(8, STARTED, STARTED - 60 * SECOND))
    assert lines(facts(probe, listeners=two))[-2:] == [
        f"ok: sshd PID 7 has read its configuration since {DROPIN} last changed",
        "FAIL: sshd PID 8 last read its configuration at 2026-11-28 21:25:12 UTC, before "
        f"{DROPIN} changed at 2026-11-28 21:25:22 UTC — fix: reload sshd: kill -HUP 8",
    ]


def test_sshd_users_are_the_students_in_the_group_else_one_kept_account() -> None:
    from gpushell.admin.apply import Account

    accounts = {
        "bob": Account("/x", True),
        "alice": Account("/x", True),
        "carl": Account("/x", False),
        "dan": None,
    }
    assert doctor.sshd_users(accounts, ["old"]) == ["alice", "bob"]
    assert doctor.sshd_users({"dan": None}, ["old", "older"]) == ["old"]
    assert doctor.sshd_users({}, []) == []
