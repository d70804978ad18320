"""`make demo`: the whole thing on this host, ending in a real ssh login to the menu.

Prepares the host, builds the template, registers a student `demo` with a
fresh key, makes sure an sshd answers (its own on a free port if port 22
is taken by something else), then logs in as `demo` over ssh.
`--clean` removes what the demo made.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import time

from ..core.paths import DEFAULT
from ..system import registry_store
from ..system.environment import SAFE_ENV
from ..system.runner import run
from . import commands, hostinit

STUDENT = "demo"
KEY = "/root/.ssh/gpushell-demo"
SSHD_CONFIG = "/run/gpushell-demo-sshd.conf"
SSHD_PID = "/run/gpushell-demo-sshd.pid"
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes"]  # fmt: skip


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def admin_command(*args: str) -> None:
    status = commands.main(DEFAULT, list(args))
    if status != 0:
        raise SystemExit(f"demo: gpushell-admin {' '.join(args)} failed ({status})")


def ssh_greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.settimeout(2)
            return conn.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def ensure_sshd() -> int:
    """The port of an sshd that applies gpushell's drop-in."""
    if os.path.exists(SSHD_PID) and ssh_greets(_demo_port()):
        return _demo_port()
    port = 22 if port_is_free(22) else next(p for p in range(2222, 2300) if port_is_free(p))
    os.makedirs(hostinit.PRIVSEP_DIR, mode=0o755, exist_ok=True)
    if not os.path.exists("/etc/ssh/ssh_host_ed25519_key"):
        run(["ssh-keygen", "-A"])
    # The host's own sshd_config (which includes sshd_config.d/, and so the
    # gpushell drop-in), on the chosen port.
    with open(SSHD_CONFIG, "w", encoding="utf-8") as stream:
        stream.write(f"Port {port}\nPidFile {SSHD_PID}\nInclude /etc/ssh/sshd_config\n")
    run(["/usr/sbin/sshd", "-f", SSHD_CONFIG])
    deadline = time.monotonic() + 10
    while not ssh_greets(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: sshd did not answer on port {port}")
        time.sleep(0.1)
    print(f"started sshd on port {port} (pid file {SSHD_PID})")
    return port


def _demo_port() -> int:
    with open(SSHD_CONFIG, encoding="utf-8") as stream:
        for line in stream:
            if line.startswith("Port "):
                return int(line.split()[1])
    return 22


def demo() -> int:
    step("gpushell-admin init")
    admin_command("init")
    step("gpushell-admin template build (about a minute the first time, seconds after)")
    admin_command("template", "build")
    step(f"registering the student '{STUDENT}' with a fresh key")
    if not os.path.exists(KEY):
        os.makedirs(os.path.dirname(KEY), mode=0o700, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpushell-demo", "-f", KEY])
    if STUDENT in registry_store.load(DEFAULT).users:
        print(f"{STUDENT} is already registered")
    else:
        admin_command("add", STUDENT, "--key", KEY + ".pub")
    step("making sure an sshd answers")
    port = 22 if ssh_greets(22) and not os.path.exists(SSHD_PID) else ensure_sshd()
    login = ["ssh", *SSH_OPTIONS, "-i", KEY, "-p", str(port), f"{STUDENT}@localhost"]
    if sys.stdin.isatty():
        step(f"logging in: {' '.join(login)}   (choose quit or press Ctrl-D to leave)")
        environment = {**SAFE_ENV, "TERM": os.environ.get("TERM", "xterm")}
        os.execvpe("ssh", [login[0], "-t", *login[1:]], environment)
    step("no terminal here: driving the same login in tmux and showing its screen")
    status = show_in_tmux(login)
    reg = registry_store.load(DEFAULT)
    port = reg.users[STUDENT].port
    step(f"the forwarded port {port} lands in the container (here via the bridge address {reg.gateway})")
    inside = [*login[:-3], "-p", str(port), f"{STUDENT}@{reg.gateway}", "hostname; id"]
    print(" ".join(inside))
    result = subprocess.run(inside, env=SAFE_ENV, text=True, capture_output=True, check=False)
    print(result.stdout + result.stderr, end="")
    return status or result.returncode


def show_in_tmux(login: list[str]) -> int:
    session = f"gpushell-demo-{os.getpid()}"
    command = " ".join([login[0], "-t", *login[1:]])
    run(["tmux", "new-session", "-d", "-s", session, "-x", "110", "-y", "45", command])
    try:
        screen = ""
        deadline = time.monotonic() + 120
        while "gpushell>" not in screen and time.monotonic() < deadline:
            time.sleep(0.2)
            screen = run(["tmux", "capture-pane", "-p", "-t", session], check=False).stdout
        if "gpushell>" not in screen:
            print(screen)
            return 1
        run(["tmux", "send-keys", "-t", session, "1", "Enter"])
        time.sleep(1.0)
        print(run(["tmux", "capture-pane", "-p", "-t", session]).stdout.rstrip())
        run(["tmux", "send-keys", "-t", session, "quit", "Enter"])
    finally:
        run(["tmux", "kill-session", "-t", session], check=False)
    print(f"\nFor the menu yourself, from a terminal: {' '.join(login)}")
    return 0


def clean() -> int:
    step("removing the demo student, its container, forward and account")
    with contextlib.suppress(KeyError):
        pwd.getpwnam(STUDENT)
        if STUDENT in registry_store.load(DEFAULT).users:
            admin_command("remove", STUDENT, "--purge")
        else:
            run(["userdel", "--remove", STUDENT], check=False)
    for path in (KEY, KEY + ".pub"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if os.path.exists(SSHD_PID):
        with open(SSHD_PID, encoding="ascii") as stream:
            pid = int(stream.read().strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        print(f"stopped the demo sshd (pid {pid})")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SSHD_CONFIG)
    print("done; the registry, template and host set-up stay (see gpushell-admin(8))")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if os.geteuid() != 0:
        raise SystemExit("demo: run as root (make demo)")
    return clean() if args == ["--clean"] else demo()


if __name__ == "__main__":
    sys.exit(main())
