"""Attacks on gpushell through the real sshd, the real sudo and real containers.

Every refused attack is checked for what it must not do (run anything, change
the container, open a port, write a file) and for the audit line it must leave.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pexpect
import psutil
import pytest

from gpushell.containers import provision
from gpushell.core.errors import GpushellError
from gpushell.system import rootfs

from .conftest import Syslog
from .lab import ENV, SSH_OPTIONS, Lab, Student, free_port, sh

PROMPT = "gpushell>"
SUDO = "/usr/bin/sudo"
PYTHON = "/usr/bin/python3"


# --- helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def attacker(lab: Lab) -> Iterator[Student]:
    """One student for the many refusal cases; its container stays stopped throughout."""
    made = lab.add_student("atk")
    try:
        yield made
    finally:
        lab.admin("remove", made.name, "--purge", check=False)


def audit_lines(syslog: Syslog, *words: str) -> list[str]:
    return syslog.matching(*words)


def wait_for_new(syslog: Syslog, before: int, *words: str, seconds: float = 5) -> list[str]:
    """Audit lines matching words beyond the first `before` ones (the reader thread lags a bit)."""
    deadline = time.monotonic() + seconds
    while True:
        found = syslog.matching(*words)
        if len(found) > before or time.monotonic() > deadline:
            return found[before:]
        time.sleep(0.05)


def one_gpushell_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("gpushell: "), stderr
    return lines[0]


def netns_python(lab: Lab, script: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """A short Python script run inside the client namespace (where the students' ssh runs)."""
    return sh(["ip", "netns", "exec", lab.netns, PYTHON, "-I", "-c", script], check=False, timeout=timeout)


def ssh_background(lab: Lab, student: Student, *options: str, env: dict[str, str] | None = None):
    argv = lab.ssh_argv(student, *options)
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or ENV,
    )


def stop_process(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.communicate(timeout=5)


def login(
    lab: Lab, student: Student, *options: str, env: dict[str, str] | None = None, term: str = "xterm"
) -> pexpect.spawn:
    argv = lab.ssh_argv(student, "-tt", *options)
    environment = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "TERM": term, **(env or {})}
    child = pexpect.spawn(
        argv[0], argv[1:], env=environment, encoding="utf-8", codec_errors="replace", timeout=90,
        dimensions=(40, 200),
    )  # fmt: skip
    child.expect(PROMPT)
    return child


def student_processes(name: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["username"]):
        if proc.info["username"] == name:
            found.append(proc)
    return found


def gpushell_process(lab: Lab, name: str, seconds: float = 10) -> psutil.Process:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for proc in student_processes(name):
            with contextlib.suppress(psutil.Error):
                if lab.paths["shell"] in " ".join(proc.cmdline()):
                    return proc
        time.sleep(0.1)
    raise AssertionError(f"no gpushell process for {name}")


def wait_no_processes(name: str, seconds: float = 10) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while (left := student_processes(name)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


class Listener:
    """A TCP server on the lab's host address that greets and counts connections."""

    GREETING = b"HELLO-FROM-THE-HOST\n"

    def __init__(self, address: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            with conn, contextlib.suppress(OSError):
                conn.sendall(self.GREETING)

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def listener(lab: Lab) -> Iterator[Listener]:
    made = Listener(lab.host_ip)
    try:
        yield made
    finally:
        made.close()


PROBE_TCP = """
import socket, sys, time
deadline = time.monotonic() + 15
while True:
    try:
        s = socket.create_connection(("127.0.0.1", {port}), 2)
        break
    except OSError:
        if time.monotonic() > deadline:
            print("NOCONNECT"); sys.exit(0)
        time.sleep(0.1)
s.settimeout(4)
data = b""
try:
    while len(data) < 100:
        chunk = s.recv(100)
        if not chunk:
            break
        data += chunk
except OSError:
    pass
print("CONNECTED", repr(data))
"""

PROBE_SOCKS = """
import socket, struct, sys, time
deadline = time.monotonic() + 15
while True:
    try:
        s = socket.create_connection(("127.0.0.1", {port}), 2)
        break
    except OSError:
        if time.monotonic() > deadline:
            print("NOCONNECT"); sys.exit(0)
        time.sleep(0.1)
s.settimeout(5)
s.sendall(b"\\x05\\x01\\x00")
hello = s.recv(2)
s.sendall(b"\\x05\\x01\\x00\\x01" + socket.inet_aton("{host}") + struct.pack(">H", {target}))
reply = b""
try:
    reply = s.recv(10)
    reply += s.recv(100)
except OSError:
    pass
print("CONNECTED", repr(hello), repr(reply))
"""


def listening(port: int) -> bool:
    return any(
        c.laddr and c.laddr.port == port for c in psutil.net_connections("inet") if c.status == "LISTEN"
    )


# --- 1. command smuggling via `ssh host CMD` ----------------------------------------

SMUGGLED = [
    # separators
    "status;touch {c}",
    "status && touch {c}",
    "status || touch {c}",
    "status | touch {c}",
    "status & touch {c}",
    "status `touch {c}`",
    "`touch {c}`",
    "status $(touch {c})",
    "$(touch {c})",
    "status;{{touch,{c}}}",
    # newlines and other line breaks
    "status\ntouch {c}",
    "status\r\ntouch {c}",
    "\nstatus",
    "status\n",
    "status\u2028touch {c}",
    "status\x85touch {c}",
    # quotes
    "'status'",
    '"status"',
    "stat''us",
    "st\\atus",
    "'status;touch {c}'",
    '"$(touch {c})"',
    # globbing
    "stat*",
    "sta?us",
    "[s]tatus",
    "/usr/bin/tou?h {c}",
    "/*/*/touch {c}",
    # leading dashes (the shell itself is `gpushell -c CMD`)
    "-c touch {c}",
    "-c status",
    "--help",
    "-i",
    "-",
    "--",
    "-I -c 'import os; os.system(\"touch {c}\")'",
    # case, blanks and look-alikes
    "STATUS",
    " status",
    "status ",
    "status\t",
    "\uff53\uff54\uff41\uff54\uff55\uff53",
    "status\u200b",
    "statu\u017f",
    # NUL-adjacent (a real NUL cannot cross execve)
    "status\\0",
    "status\\x00;touch {c}",
    "status%00",
    "status\x01",
    "status\x7f",
    "\x1b[2Jstatus",
    "\x1b]0;pwned\x07status",
    # not UTF-8 (raw bytes through surrogateescape)
    "status\udcff",
    "\udcc3\udca9status",
    "st\udce1tus;touch {c}",
    "\udcff\udcfe\udcfd",
    # file transfer and other servers
    "/usr/lib/openssh/sftp-server",
    "/usr/lib/sftp-server",
    "sftp-server -d /",
    "internal-sftp",
    "scp -t /tmp",
    "scp -t {c}",
    "scp -f /etc/shadow",
    "scp -r -t .",
    "rsync --server -vlogDtpre.iLsfxCIvu . {c}",
    "rsync --server --sender -vlogDtpre.iLsfxCIvu . /etc/",
    "git-upload-pack '/etc'",
    # ~/.ssh/rc as sshd would run it, and plain shells
    "/bin/sh .ssh/rc",
    "/bin/sh -c 'sh .ssh/rc'",
    "sh ~/.ssh/rc",
    "exec touch {c}",
    "bash",
    "bash -i",
    "/bin/bash --norc",
    "python3",
    "env",
    # allowed words with extras
    "status status",
    "help me",
    "status --all",
    "stop;start",
    # self-service words: names are never paths, text never reaches a shell
    "snapshot ../../etc",
    "snapshot $(touch {c})",
    "snapshot a;touch {c}",
    "snapshot /tmp",
    "snapshot a b",
    "restore ../x --yes",
    "restore snap1",
    "restore snap1 --yes;touch {c}",
    "restore snap1 --yes --wipe-home",
    "delete-snapshot * --yes",
    "delete-snapshot snap1 yes",
    "rebuild",
    "rebuild --wipe-home",
    "rebuild -y",
    "rebuild --yes --wipe-home",
    "rebuild --yes $(touch {c})",
    "keys --force",
    "snapshots ../other",
]


def smuggled_id(command: str) -> str:
    return ascii(command)[:40]


@pytest.mark.parametrize("command", SMUGGLED, ids=[smuggled_id(c) for c in SMUGGLED])
def test_smuggled_command_is_refused_and_runs_nothing(
    lab: Lab, attacker: Student, syslog: Syslog, command: str
) -> None:
    canary = f"/tmp/{attacker.name}-smuggled-canary"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(canary)
    text = command.format(c=canary)
    before = len(audit_lines(syslog, f"user={attacker.name}", "action=command", "result=refused"))
    # `--` ends ssh's own options, so a leading dash reaches the server unchanged.
    result = lab.ssh(attacker, "--", text)
    assert result.returncode == 2, (result.returncode, result.stderr)
    one_gpushell_line(result.stderr)
    assert result.stdout == ""
    assert not os.path.exists(canary)
    assert lab.state(attacker) == "STOPPED"
    new = wait_for_new(syslog, before, f"user={attacker.name}", "action=command", "result=refused")
    assert len(new) == 1, new


@pytest.mark.parametrize(
    "command",
    ["x" * 100_000, "status;" + "A" * 100_000 + ";touch {c}", "status " * 15_000, "\udcff" * 50_000],
    ids=["100k-x", "100k-separated", "status-x15000", "50k-invalid-bytes"],
)
def test_very_long_command_is_refused_in_one_line(
    lab: Lab, attacker: Student, syslog: Syslog, command: str
) -> None:
    canary = f"/tmp/{attacker.name}-long-canary"
    before = len(audit_lines(syslog, f"user={attacker.name}", "action=command", "result=refused"))
    result = lab.ssh(attacker, "--", command.format(c=canary))
    assert result.returncode == 2, result.stderr[:500]
    line = one_gpushell_line(result.stderr)
    assert len(line) < 1000  # the echo of the command is cut (64 characters, escaped)
    assert result.stdout == ""
    assert not os.path.exists(canary)
    assert lab.state(attacker) == "STOPPED"
    new = wait_for_new(syslog, before, f"user={attacker.name}", "action=command", "result=refused")
    assert len(new) == 1 and len(new[0]) < 4000  # 500 characters at most, escaped


def test_positive_control_an_allowed_word_after_double_dash_works(lab: Lab, attacker: Student) -> None:
    """The refusals above are not an artefact of how the command is passed."""
    result = lab.ssh(attacker, "--", "status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Container {attacker.container}: stopped")


# --- 2. file transfer, subsystems and forwarding -------------------------------------


def client_tool(lab: Lab, student: Student, tool: str, *args: str, port_flag: str = "-P"):
    return subprocess.run(
        ["ip", "netns", "exec", lab.netns, tool, *SSH_OPTIONS, "-i", student.key,
         port_flag, str(lab.sshd_port), *args],
        capture_output=True, text=True, timeout=60, env=ENV, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def host_home(student: Student) -> str:
    return pwd.getpwnam(student.name).pw_dir


@pytest.mark.parametrize(
    ("kind", "expected_detail"),
    [
        ("sftp", "detail=/usr/lib/openssh/sftp-server"),
        ("ssh -s sftp", "detail=/usr/lib/openssh/sftp-server"),
        ("scp default (sftp protocol)", "detail=/usr/lib/openssh/sftp-server"),
        ("scp -O upload", "scp -t"),
        ("scp -O download", "scp -f"),
        ("rsync", "rsync --server"),
    ],
)
def test_file_transfer_to_the_host_is_refused(
    lab: Lab, attacker: Student, syslog: Syslog, tmp_path, kind: str, expected_detail: str
) -> None:
    home = host_home(attacker)
    target = "planted-by-transfer"
    downloaded = tmp_path / "downloaded"
    before = len(audit_lines(syslog, f"user={attacker.name}", "action=command", "result=refused"))
    remote = f"{attacker.name}@{lab.host_ip}"
    if kind == "sftp":
        batch = tmp_path / "batch"
        batch.write_text(f"put /etc/hostname {target}\n")
        result = client_tool(lab, attacker, "sftp", "-b", str(batch), remote)
    elif kind == "ssh -s sftp":
        result = lab.ssh(attacker, "sftp", options=("-s",))
    elif kind == "scp default (sftp protocol)":
        result = client_tool(lab, attacker, "scp", "-s", "/etc/hostname", f"{remote}:{target}")
    elif kind == "scp -O upload":
        result = client_tool(lab, attacker, "scp", "-O", "/etc/hostname", f"{remote}:{target}")
    elif kind == "scp -O download":
        result = client_tool(lab, attacker, "scp", "-O", f"{remote}:/etc/hostname", str(downloaded))
    else:
        ssh_cmd = " ".join(["ssh", *SSH_OPTIONS, "-i", attacker.key, "-p", str(lab.sshd_port)])
        result = subprocess.run(
            ["ip", "netns", "exec", lab.netns, "rsync", "-e", ssh_cmd, "/etc/hostname", f"{remote}:{target}"],
            capture_output=True, text=True, timeout=60, env=ENV,
        )  # fmt: skip
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert not os.path.exists(os.path.join(home, target))
    assert not downloaded.exists()
    assert lab.state(attacker) == "STOPPED"
    new = wait_for_new(syslog, before, f"user={attacker.name}", "action=command", "result=refused")
    assert new and all(expected_detail in line for line in new), new


def test_internal_sftp_subsystem_is_not_offered(lab: Lab, attacker: Student) -> None:
    result = lab.ssh(attacker, "internal-sftp", options=("-s",))
    assert result.returncode != 0
    assert result.stdout == ""


@pytest.mark.parametrize("forward", ["tcp", "tcp-to-sshd-port", "unix"])
def test_local_forwarding_is_refused(
    lab: Lab, attacker: Student, listener: Listener, forward: str, tmp_path
) -> None:
    local = free_port()
    if forward == "tcp":
        spec = f"127.0.0.1:{local}:{lab.host_ip}:{listener.port}"
    elif forward == "tcp-to-sshd-port":
        spec = f"127.0.0.1:{local}:{lab.host_ip}:{lab.sshd_port}"
    else:
        path = f"/run/{attacker.name}-fwd.sock"
        unix = socket.socket(socket.AF_UNIX)
        unix.bind(path)
        unix.listen(4)
        unix.settimeout(0.2)
        spec = f"127.0.0.1:{local}:{path}"
    proc = ssh_background(lab, attacker, "-N", "-o", "ExitOnForwardFailure=yes", "-L", spec)
    try:
        probe = netns_python(lab, PROBE_TCP.format(port=local))
    finally:
        stop_process(proc)
    # The client's own listener answered (so the probe really went through
    # ssh), but nothing came back from the far end.
    assert probe.stdout.startswith("CONNECTED"), probe.stdout + probe.stderr
    assert "HELLO" not in probe.stdout and "SSH-2.0" not in probe.stdout, probe.stdout
    assert listener.accepted == 0
    if forward == "unix":
        with pytest.raises(OSError):
            unix.accept()
        unix.close()
        os.unlink(path)


@pytest.mark.parametrize("where", ["tcp-host-ip", "tcp-loopback", "unix-socket"])
def test_remote_forwarding_opens_nothing_on_the_host(lab: Lab, attacker: Student, where: str) -> None:
    port = free_port()
    path = f"/tmp/{attacker.name}-remote-fwd.sock"
    spec = {
        "tcp-host-ip": f"{lab.host_ip}:{port}:127.0.0.1:9",
        "tcp-loopback": f"127.0.0.1:{port}:127.0.0.1:9",
        "unix-socket": f"{path}:127.0.0.1:9",
    }[where]
    # Once with ExitOnForwardFailure (the server must say no), once without
    # (the session stays up: still no listener on the host).
    strict = ssh_background(lab, attacker, "-N", "-o", "ExitOnForwardFailure=yes", "-R", spec)
    try:
        strict.wait(30)
    finally:
        _out, err = stop_process(strict)
    assert strict.returncode != 0
    assert "forwarding failed" in err, err
    lenient = ssh_background(lab, attacker, "-N", "-o", "ExitOnForwardFailure=no", "-R", spec)
    try:
        for _ in range(20):
            assert not listening(port)
            assert not os.path.exists(path)
            time.sleep(0.1)
        assert lenient.poll() is None  # the session was up all along
        for address in (lab.host_ip, "127.0.0.1"):
            with pytest.raises(OSError), socket.create_connection((address, port), 2):
                pass
    finally:
        stop_process(lenient)


def test_dynamic_forwarding_is_refused(lab: Lab, attacker: Student, listener: Listener) -> None:
    socks = free_port()
    proc = ssh_background(lab, attacker, "-N", "-D", f"127.0.0.1:{socks}")
    try:
        probe = netns_python(lab, PROBE_SOCKS.format(port=socks, host=lab.host_ip, target=listener.port))
    finally:
        stop_process(proc)
    assert probe.stdout.startswith("CONNECTED b'\\x05\\x00'"), probe.stdout + probe.stderr
    reply = probe.stdout.split(" ", 2)[2]
    # A granted CONNECT answers 05 00; a refused one closes or answers an error code.
    assert not reply.startswith("b'\\x05\\x00"), reply
    assert "HELLO" not in probe.stdout
    assert listener.accepted == 0


def test_tunnel_device_forwarding_is_refused(lab: Lab, attacker: Student) -> None:
    def tun_devices() -> set[str]:
        out = sh(["ip", "-o", "link", "show", "type", "tun"]).stdout
        return {line.split(":")[1].strip() for line in out.splitlines()}

    before = tun_devices()
    proc = ssh_background(
        lab, attacker, "-N", "-v", "-w", "any:any", "-o", "Tunnel=point-to-point",
        "-o", "ExitOnForwardFailure=yes",
    )  # fmt: skip
    try:
        proc.wait(30)
    finally:
        _out, err = stop_process(proc)
    assert proc.returncode != 0
    assert "Requesting tun unit" in err, err[-2000:]  # the client did ask the server
    assert "tunnel forwarding failed" in err.lower() or "open failed" in err.lower(), err[-2000:]
    assert tun_devices() <= before


@pytest.mark.parametrize(
    ("flag", "client_env", "must_be_absent"),
    [
        ("-A", "SSH_AUTH_SOCK", "SSH_AUTH_SOCK"),
        ("-X", "DISPLAY", "DISPLAY"),
        ("-Y", "DISPLAY", "DISPLAY"),
    ],
)
def test_agent_and_x11_forwarding_reach_nothing(
    lab: Lab, attacker: Student, tmp_path, flag: str, client_env: str, must_be_absent: str
) -> None:
    env: dict[str, str] = {}
    agent = None
    if client_env == "SSH_AUTH_SOCK":
        sock = f"/tmp/{attacker.name}-agent.sock"
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL)
        for _ in range(50):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        env["SSH_AUTH_SOCK"] = sock
    else:
        env["DISPLAY"] = "127.0.0.1:77"
    owner = pwd.getpwnam(attacker.name).pw_uid
    child = login(lab, attacker, flag, env=env)
    try:
        proc = gpushell_process(lab, attacker.name)
        environ = proc.environ()
        assert "SSH_CONNECTION" in environ  # the right process, and its environ is readable
        assert must_be_absent not in environ, environ
        agent_dirs = [
            entry.path
            for entry in os.scandir("/tmp")
            if entry.name.startswith("ssh-") and entry.stat(follow_symlinks=False).st_uid == owner
        ]
        assert agent_dirs == []
        for port in range(6010, 6030):  # where sshd would put X11 displays
            if listening(port):
                sshd_owned = [
                    c
                    for c in psutil.net_connections("inet")
                    if c.laddr and c.laddr.port == port and c.pid and attacker.name in _proc_user(c.pid)
                ]
                assert sshd_owned == []
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
        if agent is not None:
            agent.terminate()
            agent.wait(5)
    assert child.exitstatus == 0
    lab.ssh(attacker, "stop")


def _proc_user(pid: int) -> str:
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        return f"{proc.username()} {' '.join(proc.cmdline())}"
    return ""


# --- 3. environment -------------------------------------------------------------------

ODD_LOCALES = [
    "C",
    "POSIX",
    "en_US.ISO-8859-1",
    "xx_XX.UTF-8",
    "tr_TR.UTF-8",
    "ja_JP.SJIS",
    "../../../../tmp/evil",
    "/tmp/evil",
    "C.UTF-8@x",
    "%n%n%s%s",
    "A" * 4000,
    "",
]


@pytest.mark.parametrize("variable", ["LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES"])
@pytest.mark.parametrize("value", ODD_LOCALES, ids=[v[:20] or "empty" for v in ODD_LOCALES])
def test_odd_locale_from_the_client_changes_nothing(
    lab: Lab, attacker: Student, variable: str, value: str
) -> None:
    options = ("-o", f"SetEnv={variable}={value}")
    good = lab.ssh(attacker, "status", options=options)
    assert good.returncode == 0, good.stderr
    assert good.stderr == ""
    state = lab.state(attacker).lower()
    first, using = good.stdout.split("\n", 1)
    assert first == f"Container {attacker.container}: {state}, IP {attacker.ip}, port {attacker.port}"
    assert re.fullmatch(r"Using: +disk \d+\.\d\d GiB \(no quota\)\n", using), using  # stopped: disk only
    bad = lab.ssh(attacker, "--", "status\udcff;id", options=options)
    assert bad.returncode == 2
    one_gpushell_line(bad.stderr)
    assert bad.stdout == ""


def evil_python_tree(base: str, canary: str) -> None:
    """A directory that would create canary if Python ever imported from it."""
    os.makedirs(base, exist_ok=True)
    code = f"open({canary!r}, 'w').close()\n"
    for name in ("sitecustomize.py", "usercustomize.py", "startup.py", "json.py", "syslog.py", "signal.py"):
        with open(os.path.join(base, name), "w", encoding="utf-8") as stream:
            stream.write(code)
    with open(os.path.join(base, "evil.pth"), "w", encoding="utf-8") as stream:
        stream.write(f"import os; open({canary!r}, 'w').close()\n")


def test_python_variables_from_the_client_are_dropped(lab: Lab, attacker: Student) -> None:
    base = f"/tmp/{attacker.name}-evilpy"
    canary = f"/tmp/{attacker.name}-pyenv-canary"
    evil_python_tree(base, canary)
    try:
        sent = {
            "PYTHONPATH": base,
            "PYTHONSTARTUP": f"{base}/startup.py",
            "PYTHONINSPECT": "1",
            "PYTHONHOME": base,
            "PYTHONUSERBASE": base,
            "LD_PRELOAD": "/nonexistent/evil.so",
            "BASH_ENV": f"{base}/startup.py",
            "LC_ALL": "C.UTF-8",  # accepted by this sshd: proves SetEnv does arrive
        }
        # ssh keeps only the first SetEnv option: send all variables in one.
        options = ["-o", "SetEnv=" + " ".join(f"{key}={value}" for key, value in sent.items())]
        good = lab.ssh(attacker, "status", options=options)
        assert good.returncode == 0 and good.stderr == "", good.stderr
        bad = lab.ssh(attacker, "bash", options=options)
        assert bad.returncode == 2
        one_gpushell_line(bad.stderr)
        child = login(lab, attacker, *options)
        try:
            environ = gpushell_process(lab, attacker.name).environ()
            assert environ.get("LC_ALL") == "C.UTF-8"
            for key in sent:
                if key != "LC_ALL":
                    assert key not in environ, key
            child.sendline("quit")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
            lab.ssh(attacker, "stop")
        assert not os.path.exists(canary)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(canary)


@pytest.mark.parametrize(
    "term",
    [
        "",
        "dumb",
        "xterm\x1b]0;pwned\x07",
        "../../../../etc/passwd",
        "A" * 1000,
        "vt100;id",
        "$(id)",
        "xterm\udcff",
    ],
    ids=["empty", "dumb", "osc", "path", "long", "semicolon", "subst", "non-utf8"],
)
def test_odd_term_still_gives_only_the_menu(lab: Lab, attacker: Student, term: str) -> None:
    child = login(lab, attacker, term=term)
    try:
        child.sendline("1")
        child.expect(PROMPT)
        assert "Container" in child.before and attacker.ip in child.before
        child.sendline("id")
        child.expect("please choose")
        child.expect(PROMPT)
        child.sendline("quit")
        child.expect(pexpect.EOF)
        assert "Traceback" not in (child.before or "")
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    lab.ssh(attacker, "stop")
    assert lab.state(attacker) == "STOPPED"


def plant(path: str, text: str, owner: int, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.chmod(path, mode)
    os.chown(path, owner, owner)


def test_files_planted_in_the_host_home_have_no_effect(lab: Lab, student: Student, syslog: Syslog) -> None:
    entry = pwd.getpwnam(student.name)
    home, uid = entry.pw_dir, entry.pw_uid
    canary = f"/tmp/{student.name}-planted-canary"
    evil = f"{home}/evilpy"
    touch = f"open({canary!r}, 'w').close()\n"
    site = f"{home}/.local/lib/python3.11/site-packages"
    plant(
        f"{home}/.ssh/environment",
        f"PYTHONPATH={evil}\nGPUSHELL_PLANTED=yes\nLD_PRELOAD=/nonexistent.so\n",
        uid,
        0o600,
    )
    plant(f"{home}/.ssh/rc", f"touch {canary}\n", uid, 0o755)
    plant(f"{site}/sitecustomize.py", touch, uid)
    plant(f"{site}/usercustomize.py", touch, uid)
    plant(f"{site}/evil.pth", f"import os; {touch}", uid)
    plant(f"{evil}/sitecustomize.py", touch, uid)
    for name in ("json.py", "syslog.py", "pwd.py", ".profile", ".bashrc", ".pythonrc.py"):
        plant(f"{home}/{name}", touch if name.endswith(".py") else f"touch {canary}\n", uid)
    for directory in (f"{home}/.local", f"{home}/.local/lib", f"{home}/.local/lib/python3.11", site, evil):
        os.chown(directory, uid, uid)

    result = lab.ssh(student, "status")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # an LD_PRELOAD from ~/.ssh/environment would complain here
    refused = lab.ssh(student, "bash")
    assert refused.returncode == 2
    one_gpushell_line(refused.stderr)
    child = login(lab, student)
    try:
        environ = gpushell_process(lab, student.name).environ()
        assert "SSH_CONNECTION" in environ
        assert "GPUSHELL_PLANTED" not in environ and "PYTHONPATH" not in environ
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert not os.path.exists(canary)
    # With PermitUserRC on, sshd would have run `gpushell -c '/bin/sh .ssh/rc'`:
    # the shell would refuse it, but the refusal in the log shows sshd tried.
    time.sleep(0.5)
    assert [line for line in syslog.matching(f"user={student.name}") if ".ssh/rc" in line] == []


# --- 4. the menu over a real pty --------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "\x01\x02\x05\x06\x07\x0b\x0e\x10\x18",
        "\x1b[A\x1b[A",
        "\x1b[2J\x1b[H",
        "\x1b]0;title\x07",
        "\x1bP+q544e\x1b\\",
        "\u009b31m",
        "\x1b[200~status; id\x1b[201~",
        "status\x1b[D\x1b[D;id",
        "1\t2",
        "A" * 3000,
        "1" + " " * 2000,
        "status" + "\x00" * 5,
    ],
    ids=[
        "ctrl",
        "arrows",
        "clear",
        "osc",
        "dcs",
        "c1-csi",
        "paste",
        "cursor",
        "tab",
        "huge",
        "1-then-2000-blanks",
        "nuls",
    ],
)
def test_odd_menu_input_is_refused_and_the_menu_continues(
    lab: Lab, attacker: Student, syslog: Syslog, line: str
) -> None:
    before = len(syslog.matching(f"user={attacker.name}", "result=ok", "action=status"))
    child = login(lab, attacker)
    try:
        child.send(line + "\r")
        child.expect("please choose")
        child.expect(PROMPT)
        child.sendline("help")
        child.expect(PROMPT)
        assert "Web services" in child.before  # still the menu, still working
        child.sendline("quit")
        child.expect(pexpect.EOF)
        assert "Traceback" not in child.before
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert not wait_no_processes(attacker.name)
    # the odd line ran no status action
    assert len(syslog.matching(f"user={attacker.name}", "result=ok", "action=status")) == before
    lab.ssh(attacker, "stop")


@pytest.mark.parametrize(
    ("keys", "exit_status", "audit_why"),
    [
        ("\x04", 0, None),  # EOF at the prompt
        ("sta\x04\x04\x04", 0, None),  # EOF after a partial line
        ("\x03", 130, None),  # Ctrl-C
        ("sta\x03", 130, None),
        ("\x1a", 0, "SIGTSTP"),  # Ctrl-Z
        ("\x1c", 0, "SIGQUIT"),  # Ctrl-\
    ],
    ids=["eof", "partial-eof", "ctrl-c", "partial-ctrl-c", "ctrl-z", "ctrl-backslash"],
)
def test_keys_end_the_session_cleanly(
    lab: Lab, attacker: Student, syslog: Syslog, keys: str, exit_status: int, audit_why: str | None
) -> None:
    before = len(syslog.matching(f"user={attacker.name}", "action=session"))
    child = login(lab, attacker)
    try:
        child.send(keys)
        child.expect(pexpect.EOF, timeout=20)
        seen = child.before or ""
    finally:
        child.close(force=True)
    assert "Traceback" not in seen and "$ " not in seen and "# " not in seen
    assert child.exitstatus == exit_status, (child.exitstatus, seen)
    assert not wait_no_processes(attacker.name)
    new = wait_for_new(syslog, before, f"user={attacker.name}", "action=session", seconds=2)
    if audit_why:
        assert any("result=ended" in line and audit_why in line for line in new), new
        assert f"Session ended ({audit_why})" in seen
    assert not any("result=crashed" in line for line in new), new
    lab.ssh(attacker, "stop")


def test_ctrl_c_during_restart_does_not_leave_the_container_down(lab: Lab, student: Student) -> None:
    child = login(lab, student)
    try:
        assert lab.state(student) == "RUNNING"
        child.sendline("4")  # restart
        time.sleep(0.3)
        child.send("\x03")
        child.expect(pexpect.EOF, timeout=30)
        assert "Traceback" not in (child.before or "")
    finally:
        child.close(force=True)
    # The helper ignores the interrupt and finishes: the container comes back with its rule.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        lab.state(student) == "RUNNING" and lab.rules_for(student.name)
    ):
        time.sleep(0.5)
    assert lab.state(student) == "RUNNING"
    assert len(lab.rules_for(student.name)) == 1
    deadline = time.monotonic() + 30
    while True:
        inside = lab.ssh(student, "hostname", port=student.port, timeout=20)
        if inside.stdout.strip() == student.container or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert inside.stdout.strip() == student.container


# --- 5. the helper called directly --------------------------------------------------------


def as_student(student: Student, *argv: str, env: dict[str, str] | None = None):
    return subprocess.run(
        ["runuser", "-u", student.name, "--", *argv],
        capture_output=True, text=True, timeout=120, env=env or ENV, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture(scope="module")
def bystander(lab: Lab) -> Iterator[Student]:
    made = lab.add_student("bys")
    try:
        yield made
    finally:
        lab.admin("remove", made.name, "--purge", check=False)


@pytest.mark.parametrize(
    "arguments",
    [
        ("bash",),
        ("status", "extra"),
        ("status", "{other}"),
        ("{other}",),
        ("start", "--user", "{other}"),
        (),
        ("status;id",),
        ("-h",),
    ],
    ids=["bash", "extra", "other-name", "only-other-name", "user-flag", "no-verb", "separator", "dash-h"],
)
def test_sudo_refuses_helper_calls_outside_the_verbs(
    lab: Lab, attacker: Student, bystander: Student, syslog: Syslog, arguments: tuple[str, ...]
) -> None:
    args = [a.format(other=bystander.name) for a in arguments]
    helper = lab.paths["helper"]
    before_helper = len(syslog.matching("gpushell-helper[", f"user={attacker.name}"))
    result = as_student(attacker, SUDO, "-n", helper, *args)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "password is required" in result.stderr or "not allowed" in result.stderr, result.stderr
    assert lab.state(attacker) == "STOPPED" and lab.state(bystander) == "STOPPED"
    # sudo -n refuses before authenticating and logs nothing; the helper never ran,
    # so no gpushell audit line exists to check beyond its absence.
    time.sleep(0.5)
    assert len(syslog.matching("gpushell-helper[", f"user={attacker.name}")) == before_helper


@pytest.mark.parametrize(
    "sudo_options",
    [("-E",), ("--preserve-env=SUDO_UID",), ("SUDO_UID=0",), ("SUDO_UID={other_uid}",), ("-u", "{other}")],
    ids=["-E", "preserve-env", "sudo-uid-0", "sudo-uid-other", "runas-other"],
)
def test_sudo_refuses_identity_tricks(
    lab: Lab, attacker: Student, bystander: Student, syslog: Syslog, sudo_options: tuple[str, ...]
) -> None:
    other_uid = pwd.getpwnam(bystander.name).pw_uid
    options = [o.format(other=bystander.name, other_uid=other_uid) for o in sudo_options]
    env = {**ENV, "SUDO_UID": str(other_uid)}
    helper = lab.paths["helper"]
    before_helper = len(syslog.matching("gpushell-helper[", "action=start"))
    if options[0].startswith("SUDO_UID"):
        argv = [SUDO, "-n", options[0], helper, "start"]
    else:
        argv = [SUDO, "-n", *options, helper, "start"]
    result = as_student(attacker, *argv, env=env)
    assert result.returncode != 0, result.stdout
    assert result.stdout == ""
    assert lab.state(bystander) == "STOPPED" and lab.state(attacker) == "STOPPED"
    time.sleep(0.3)
    assert len(syslog.matching("gpushell-helper[", "action=start")) == before_helper


def test_the_helper_without_sudo_refuses(
    lab: Lab, attacker: Student, bystander: Student, syslog: Syslog
) -> None:
    other_uid = str(pwd.getpwnam(bystander.name).pw_uid)
    before = len(syslog.matching("gpushell-helper[", "action=start", "result=failed"))
    result = as_student(attacker, lab.paths["helper"], "start", env={**ENV, "SUDO_UID": other_uid})
    assert result.returncode != 0
    assert "through sudo" in result.stdout
    assert lab.state(bystander) == "STOPPED" and lab.state(attacker) == "STOPPED"
    new = wait_for_new(syslog, before, "gpushell-helper[", "action=start", "result=failed")
    assert len(new) == 1 and "helper run without root" in new[0], new


def test_the_helper_without_sudo_names_the_caller_in_the_audit_line(
    lab: Lab, attacker: Student, syslog: Syslog
) -> None:
    before = len(syslog.matching("gpushell-helper[", "helper run without root"))
    as_student(attacker, lab.paths["helper"], "status")
    new = wait_for_new(syslog, before, "gpushell-helper[", "helper run without root")
    assert new and f"user={attacker.name}" in new[-1], new


def test_helper_refuses_a_symlinked_registry(lab: Lab, attacker: Student, syslog: Syslog) -> None:
    registry = lab.registry
    real_copy = registry + ".real"
    moved = registry + ".moved"
    before = len(syslog.matching("gpushell-helper[", f"user={attacker.name}", "symbolic link"))
    shutil.copy2(registry, real_copy)  # root-owned, 0644: only the link itself is wrong
    os.rename(registry, moved)
    os.symlink(real_copy, registry)
    try:
        direct = as_student(attacker, SUDO, "-n", lab.paths["helper"], "status")
        through_ssh = lab.ssh(attacker, "start")
    finally:
        os.unlink(registry)
        os.rename(moved, registry)
        os.unlink(real_copy)
    assert direct.returncode != 0
    assert "contact your administrator" in direct.stdout
    assert attacker.container not in direct.stdout  # nothing from the registry is shown
    assert through_ssh.returncode != 0
    assert one_gpushell_line(through_ssh.stderr).endswith("please contact your administrator.")
    assert lab.state(attacker) == "STOPPED"
    new = wait_for_new(syslog, before, "gpushell-helper[", f"user={attacker.name}", "symbolic link")
    assert len(new) >= 2, new
    assert lab.ssh(attacker, "status").returncode == 0  # restored


# --- 6. the container's root attacking the host ----------------------------------------------


def attach(lab: Lab, student: Student, script: str) -> None:
    result = sh(
        ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--clear-env", "--",
         "/bin/sh", "-c", script],
        check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.fixture
def host_canaries(lab: Lab, student: Student) -> Iterator[tuple[str, str]]:
    """A file and a directory on the host, outside every rootfs."""
    file_canary = f"{lab.root}/{student.name}-host-canary"
    dir_canary = f"{lab.root}/{student.name}-host-dir"
    with open(file_canary, "w", encoding="utf-8") as stream:
        stream.write("ORIGINAL\n")
    os.chmod(file_canary, 0o644)
    os.mkdir(dir_canary, 0o755)
    try:
        yield file_canary, dir_canary
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(file_canary)
        shutil.rmtree(dir_canary, ignore_errors=True)


def canaries_untouched(file_canary: str, dir_canary: str) -> None:
    with open(file_canary, encoding="utf-8") as stream:
        assert stream.read() == "ORIGINAL\n"
    info = os.stat(file_canary)
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, 0, 0o644)
    assert os.listdir(dir_canary) == []
    info = os.stat(dir_canary)
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, 0, 0o755)


KEYS = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRescuedKeyRescuedKeyRescuedKey rescue\n"


def test_container_root_link_at_authorized_keys_is_replaced_not_followed(
    lab: Lab, student: Student, host_canaries: tuple[str, str]
) -> None:
    file_canary, dir_canary = host_canaries
    assert lab.ssh(student, "start").returncode == 0
    name = student.name
    attach(lab, student, f"ln -sfn {file_canary} /home/{name}/.ssh/authorized_keys")
    attach(lab, student, f"ln -sfn {file_canary} /home/{name}/.ssh/.authorized_keys.gpushell-tmp")
    root = f"{lab.lxcpath}/{student.container}/rootfs"
    assert os.path.islink(f"{root}/home/{name}/.ssh/authorized_keys")
    provision.install_keys(root, f"home/{name}", KEYS, (provision.STUDENT_UID, provision.STUDENT_UID))
    canaries_untouched(file_canary, dir_canary)
    placed = f"{root}/home/{name}/.ssh/authorized_keys"
    assert not os.path.islink(placed)
    with open(placed, encoding="utf-8") as stream:
        assert stream.read() == KEYS
    assert not os.path.lexists(f"{root}/home/{name}/.ssh/.authorized_keys.gpushell-tmp")
    # and the container sees its student's key file, owned by the student
    check = sh(
        ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--clear-env", "--",
         "stat", "-c", "%U %a %F", f"/home/{name}/.ssh/authorized_keys"],
    )  # fmt: skip
    assert check.stdout.split() == [name, "600", "regular", "file"]


@pytest.mark.parametrize(
    ("linked", "call"),
    [
        ("home", "write_file"),
        ("home", "install_keys"),
        ("ssh_dir", "write_file"),
        ("ssh_dir", "install_keys"),
    ],
)
def test_container_root_link_above_the_key_file_is_refused(
    lab: Lab, student: Student, host_canaries: tuple[str, str], linked: str, call: str
) -> None:
    file_canary, dir_canary = host_canaries
    assert lab.ssh(student, "start").returncode == 0
    name = student.name
    # The canary directory stays empty: any write or chown through the link shows.
    if linked == "home":
        attach(lab, student, f"mv /home/{name} /home/{name}.orig && ln -s {dir_canary} /home/{name}")
    else:
        attach(lab, student, f"rm -rf /home/{name}/.ssh && ln -s {dir_canary} /home/{name}/.ssh")
    root = f"{lab.lxcpath}/{student.container}/rootfs"
    owner = (provision.STUDENT_UID, provision.STUDENT_UID)
    with pytest.raises(GpushellError) as caught:
        if call == "write_file":
            rootfs.write_file(root, f"home/{name}/.ssh/authorized_keys", KEYS, 0o600, owner)
        else:
            provision.install_keys(root, f"home/{name}", KEYS, owner)
    assert "link" in caught.value.user_message
    canaries_untouched(file_canary, dir_canary)


def test_container_root_cannot_reach_the_host_canary_itself(
    lab: Lab, student: Student, host_canaries: tuple[str, str]
) -> None:
    """Sanity for the two tests above: the canaries are outside what the container sees."""
    file_canary, _ = host_canaries
    assert lab.ssh(student, "start").returncode == 0
    result = sh(
        ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--clear-env", "--", "cat", file_canary],
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "ORIGINAL" not in result.stdout
