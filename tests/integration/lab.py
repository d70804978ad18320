"""A throw-away gpushell installation on this machine, for the integration tests.

Everything it makes carries one random prefix (gptXXXX): the bridge, the
nat chain, the group, the students, the lxcpath, the client network
namespace, the sudoers drop-in.  Entry points are root-owned wrapper
scripts, like the installed ones, that pass the test's `Paths` to the
installed gpushell package: the registry path stays out of the environment.
`Lab.destroy` removes all of it and nothing else, even after a failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import ipaddress
import os
import pwd
import random
import secrets
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Self


def installed_script(module: str, paths_arguments: str, site_dir: str | None = None) -> str:
    """The entry point an installation writes, with the lab's paths, from that installation's package.

    `make install`'s by default, importing from Python's site directories; with
    site_dir, the Debian package's, importing from that directory alone.
    """
    site_dirs = None if site_dir is None else [site_dir]
    code = (
        f"import sys; sys.path.extend({site_dirs or []!r}); from gpushell.system import entrypoints; "
        f"sys.stdout.write(entrypoints.script({module!r}, {paths_arguments!r}, {site_dirs!r}))"
    )
    return sh(["/usr/bin/python3", "-I" if site_dir is None else "-IS", "-c", code]).stdout


ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
SSH_OPTIONS = (
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes",
)  # fmt: skip
SAVED_FILES = ("/etc/subuid", "/etc/subgid", "/etc/shells")


def sh(argv: Sequence[str], check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        list(argv), check=check, capture_output=True, text=True, env=ENV, **kwargs
    )


def remove_session_cgroups(prefix: str) -> None:
    """The lab's users' login cgroups: pam_cgfs (Debian's common-session) makes
    /sys/fs/cgroup/HIERARCHY/user/NAME/N at each ssh login and never removes them.

    Innermost first, as cgroupfs wants; one still holding a process stays.
    """
    root = "/sys/fs/cgroup"
    for hierarchy in os.listdir(root):
        top = os.path.join(root, hierarchy, "user")
        with contextlib.suppress(OSError):
            for name in os.listdir(top):
                if not name.startswith(prefix) or not os.path.isdir(os.path.join(top, name)):
                    continue
                for folder, _, _ in os.walk(os.path.join(top, name), topdown=False):
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)


def free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    """/24s in 10.200-249.x.0 that no interface here uses."""
    used = sh(["ip", "-4", "-o", "addr"]).stdout + sh(["ip", "-4", "route"]).stdout
    chosen: list[ipaddress.IPv4Network] = []
    while len(chosen) < count:
        net = ipaddress.IPv4Network(f"10.{random.randint(200, 249)}.{random.randint(0, 255)}.0/24")
        prefix = ".".join(str(net.network_address).split(".")[:3]) + "."
        if prefix not in used and net not in chosen:
            chosen.append(net)
    return chosen


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


@dataclasses.dataclass
class Student:
    name: str
    key: str
    port: int
    ip: str
    container: str


class Lab:
    def __init__(self, site_dir: str | None = None) -> None:
        self.site_dir = site_dir  # whose gpushell the entry points import (installed_script)
        self.prefix = "gpt" + secrets.token_hex(2)
        self.root = f"/run/gpushell-test-{self.prefix}"
        self.lxcpath = f"/var/lib/gpushell-test-{self.prefix}"
        self.bridge = f"{self.prefix}br"
        self.chain = self.prefix.upper()
        self.tables = self.chain.lower()  # the nftables isolation tables, bridge and inet
        self.group = self.prefix
        self.template = f"{self.prefix}-tpl"
        self.netns = f"{self.prefix}-cli"
        self.subnet, self.client_net = free_subnets(2)
        hosts = list(self.client_net.hosts())
        self.host_ip, self.client_ip = str(hosts[0]), str(hosts[1])
        self.sshd_port = free_port()
        # Each lab its own port range: labs running side by side (the bench
        # beside the tests) must not catch each other's forwards.
        base = random.randrange(30000, 60000, 1000)
        self.ports = (base + 1, base + 999)
        self.sshd: subprocess.Popen[bytes] | None = None
        self.helper_server: subprocess.Popen[bytes] | None = None
        self.students: list[str] = []
        self.saved: dict[str, str | None] = {}
        self.saved_pools: dict[str, int] = {}  # the kernel pools before init raised them
        self.paths = {
            "registry": f"{self.root}/gpushell.yaml",
            "helper": f"{self.root}/bin/gpushell-helper",
            "helper_socket": f"{self.root}/helper.sock",
            "shell": f"{self.root}/bin/gpushell",
            "run_dir": f"{self.root}/run",
            "state_dir": f"{self.root}/state",
            "group": self.group,
            "sudoers_dropin": f"/etc/sudoers.d/{self.prefix}",
            "sysctl_dropin": f"{self.root}/sysctl-gpushell.conf",
            "sshd_dropin": f"{self.root}/sshd-gpushell.conf",
            "sshd_config": f"{self.root}/sshd_config",
        }
        self.registry = self.paths["registry"]
        self.admin_path = f"{self.root}/bin/gpushell-admin"

    # --- set-up ---------------------------------------------------------

    @contextlib.contextmanager
    def made(self) -> Iterator[Self]:
        """The lab created, and destroyed after, also when creating it failed half way."""
        try:
            self.create()
            yield self
        finally:
            self.destroy()

    def create(self) -> None:
        from gpushell.core import kernelpools
        from gpushell.system import sysctl

        self.saved_pools = sysctl.read(kernelpools.BYTES_PER)
        for path in SAVED_FILES:
            try:
                with open(path, encoding="utf-8") as stream:
                    self.saved[path] = stream.read()
            except FileNotFoundError:
                self.saved[path] = None
        os.makedirs(f"{self.root}/bin", mode=0o755)
        os.chmod(self.root, 0o755)
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.paths.items())
        for module, name in (
            ("student.shell", "gpushell"),
            ("helper.verbs", "gpushell-helper"),
            ("admin.commands", "gpushell-admin"),
        ):
            with open(f"{self.root}/bin/{name}", "w", encoding="utf-8") as script:
                script.write(installed_script(module, arguments, self.site_dir))
            os.chmod(f"{self.root}/bin/{name}", 0o755)
        self.write_registry(self.registry_text())
        self.admin("init")
        self.start_helper_server()
        self.create_template()
        self.start_client_namespace()
        self.start_sshd()

    def create_template(self) -> None:
        self.admin("template", "build")

    def registry_text(self, idle_timeout: int = 600) -> str:
        return (
            f"# test registry for {self.prefix}\n"
            f"hostname: {self.host_ip}\n"
            f"bridge: {self.bridge}\n"
            f"subnet: {self.subnet}\n"
            f"ports: {self.ports[0]}-{self.ports[1]}\n"
            f"template: {self.template}\n"
            f"lxcpath: {self.lxcpath}\n"
            f"chain: {self.chain}\n"
            "idmap:\n  start: 2000000000\n  size: 65536\n"
            "masquerade: false\n"
            "start_timeout: 60\n"
            f"idle_timeout: {idle_timeout}\n"
            "users:\n"
        )

    def write_registry(self, text: str, mode: int = 0o644) -> None:
        temporary = self.registry + ".new"
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, mode)
        os.rename(temporary, self.registry)

    def read_registry(self) -> str:
        with open(self.registry, encoding="utf-8") as stream:
            return stream.read()

    def start_client_namespace(self) -> None:
        host_if, ns_if = f"{self.prefix}h", f"{self.prefix}c"
        sh(["ip", "netns", "add", self.netns])
        sh(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", self.netns])
        sh(["ip", "addr", "add", f"{self.host_ip}/24", "dev", host_if])
        sh(["ip", "link", "set", host_if, "up"])
        inside = ["ip", "netns", "exec", self.netns]
        sh([*inside, "ip", "link", "set", "lo", "up"])
        sh([*inside, "ip", "addr", "add", f"{self.client_ip}/24", "dev", ns_if])
        sh([*inside, "ip", "link", "set", ns_if, "up"])
        sh([*inside, "ip", "route", "add", "default", "via", self.host_ip])

    def start_sshd(self) -> None:
        """A real sshd on its own port, with the shipped drop-in, for the students."""
        key = f"{self.root}/ssh_host_ed25519_key"
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
        config = f"{self.root}/sshd_config"
        with open(config, "w", encoding="utf-8") as stream:
            stream.write(
                f"Include {self.paths['sshd_dropin']}\n"
                f"Port {self.sshd_port}\nListenAddress {self.host_ip}\nHostKey {key}\n"
                f"PidFile {self.root}/sshd.pid\nUsePAM yes\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nAcceptEnv LANG LC_*\n"
                "Subsystem sftp /usr/lib/openssh/sftp-server\n"
            )
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.sshd = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", config],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(f"{self.root}/sshd.log", "wb"),  # noqa: SIM115 - lives as long as sshd
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.host_ip, self.sshd_port), 1):
                return
            time.sleep(0.05)
        raise RuntimeError("test sshd did not start; see " + f"{self.root}/sshd.log")

    def start_helper_server(self, prefix: Sequence[str] = ()) -> None:
        """The resident helper, as gpushell-helper.service runs it on a host (the group exists: init);
        prefix: a command it runs under (`prlimit ...`)."""
        self.helper_server = subprocess.Popen(
            [*prefix, self.paths["helper"], "--serve"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=ENV,
            stderr=open(f"{self.root}/helper-server.log", "ab"),  # noqa: SIM115 - lives as long as it
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(self.paths["helper_socket"])
                return
            time.sleep(0.02)
        raise RuntimeError("the resident helper did not start; see " + f"{self.root}/helper-server.log")

    def stop_helper_server(self) -> None:
        """SIGTERM, as systemd stops it: requests being answered finish on their own."""
        if self.helper_server is not None:
            self.helper_server.terminate()
            try:
                self.helper_server.wait(10)
            except subprocess.TimeoutExpired:
                self.helper_server.kill()
                self.helper_server.wait()
            self.helper_server = None

    # --- acting -----------------------------------------------------------

    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = sh([self.admin_path, *args], check=False, timeout=900)
        if check and result.returncode != 0:
            raise AssertionError(f"gpushell-admin {' '.join(args)} failed: {result.stderr}")
        return result

    def add_student(self, suffix: str, *extra: str) -> Student:
        name = f"{self.prefix}{suffix}"
        key = f"{self.root}/{name}_key"
        if not os.path.exists(key):
            sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key])
        self.students.append(name)
        self.admin("add", name, "--key", key + ".pub", *extra)
        from gpushell.core import registry

        user = registry.parse(self.read_registry(), self.registry).users[name]
        return Student(name, key, user.port, str(user.ip), user.container)

    def ssh(
        self, student: Student, *command: str, port: int | None = None, options: Sequence[str] = (),
        timeout: float = 120, command_input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run the OpenSSH client from the client namespace, as the student (stdin: command_input)."""
        argv = [
            "ip", "netns", "exec", self.netns, "ssh", *SSH_OPTIONS, *options, "-i", student.key,
            "-p", str(port or self.sshd_port), f"{student.name}@{self.host_ip}", *command,
        ]  # fmt: skip
        if command_input is None:
            return sh(argv, check=False, timeout=timeout)
        return sh(argv, check=False, timeout=timeout, input=command_input)

    def ssh_argv(self, student: Student, *options: str) -> list[str]:
        return [
            "ip", "netns", "exec", self.netns, "ssh", *SSH_OPTIONS, *options, "-i", student.key,
            "-p", str(self.sshd_port), f"{student.name}@{self.host_ip}",
        ]  # fmt: skip

    def state(self, student: Student) -> str:
        out = sh(["lxc-info", "-P", self.lxcpath, "-n", student.container, "-sH"], check=False).stdout
        return out.strip() or "MISSING"

    def init_pid(self, student: Student) -> int:
        return int(sh(["lxc-info", "-P", self.lxcpath, "-n", student.container, "-pH"]).stdout)

    def bump_ruleset(self) -> None:
        """Move nf_tables' ruleset generation, as another program's rule change does (a fail2ban ban)."""
        table = f"{self.prefix}bump"
        sh(["nft", "add", "table", "inet", table])
        sh(["nft", "delete", "table", "inet", table])

    def rules_for(self, name: str) -> list[str]:
        save = sh(["iptables-save", "-t", "nat"]).stdout
        return [line for line in save.splitlines() if f'"gpushell:{name}"' in line]

    @contextlib.contextmanager
    def setting_added(self, lines: str) -> Iterator[None]:
        """Top-level registry lines (newline-ended) put before `users:` meanwhile, taken out after."""
        self.write_registry(self.read_registry().replace("users:\n", lines + "users:\n", 1))
        try:
            yield
        finally:
            self.write_registry(self.read_registry().replace(lines, ""))

    @contextlib.contextmanager
    def registry_replaced(self, text: str, mode: int = 0o644) -> Iterator[None]:
        original = self.read_registry()
        self.write_registry(text, mode)
        try:
            yield
        finally:
            self.write_registry(original)

    # --- tear-down: only what this lab made ------------------------------

    def destroy(self) -> None:
        errors: list[str] = []

        def attempt(argv: Sequence[str]) -> None:
            result = sh(argv, check=False)
            if result.returncode != 0 and "does not exist" not in result.stderr:
                errors.append(f"{' '.join(argv)}: {result.stderr.strip()}")

        self.stop_helper_server()
        if self.sshd is not None:
            self.sshd.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sshd.wait(5)
            if self.sshd.poll() is None:
                self.sshd.kill()
        if os.path.isdir(self.lxcpath):
            for name in sh(["lxc-ls", "-P", self.lxcpath, "-1"], check=False).stdout.split():
                sh(["lxc-stop", "-P", self.lxcpath, "-n", name, "-k"], check=False)
            shutil.rmtree(self.lxcpath, ignore_errors=True)
        for name in self.students_on_host():
            attempt(["userdel", "--remove", name])
        remove_session_cgroups(self.prefix)
        with contextlib.suppress(KeyError):
            grp.getgrnam(self.group)
            attempt(["groupdel", self.group])
        save = sh(["iptables-save", "-t", "nat"]).stdout
        for line in save.splitlines():
            jump = f"-j {self.chain}" in line and not line.startswith(f"-A {self.chain} ")
            # A cluster front door's MASQUERADE per member carries the chain in its comment.
            member_rule = line.startswith("-A POSTROUTING ") and f'"gpushell:{self.chain}:' in line
            if line.startswith("-A ") and (jump or member_rule):
                attempt(["iptables", "-t", "nat", "-D", *shlex.split(line)[1:]])
        if f":{self.chain} " in save:
            attempt(["iptables", "-t", "nat", "-F", self.chain])
            attempt(["iptables", "-t", "nat", "-X", self.chain])
        # The lab's isolation tables (named after its chain), and no other; `table` first
        # makes each exist, so the delete cannot fail on one init never made.
        tables = "".join(f"table {family} {self.tables}\ndelete table {family} {self.tables}\n"
                         for family in ("bridge", "inet"))  # fmt: skip
        result = sh(["nft", "-f", "-"], check=False, input=tables)
        if result.returncode != 0:
            errors.append(f"nft delete table {self.tables}: {result.stderr.strip()}")
        if os.path.exists(f"/sys/class/net/{self.bridge}"):
            attempt(["ip", "link", "del", self.bridge])
        if os.path.exists(f"/run/netns/{self.netns}"):
            attempt(["ip", "netns", "del", self.netns])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.paths["sudoers_dropin"])
        self.restore_shared_files()
        shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise RuntimeError("lab clean-up left things behind:\n" + "\n".join(errors))

    def restore_shared_files(self) -> None:
        """Take out the lines this lab's init added, and only those.

        Another lab running beside this one may rely on the same root: line
        in /etc/subuid; it stays until the last lab goes.
        """
        others = [
            d
            for d in os.listdir("/run")
            if d.startswith("gpushell-test-") and d != os.path.basename(self.root)
        ]
        if not others:  # the host's kernel pools as the first lab found them
            from gpushell.system import sysctl

            for key, size in self.saved_pools.items():
                sysctl.write(key, size)
        for path, text in self.saved.items():
            before = set((text or "").splitlines())
            with open(path, encoding="utf-8") as stream:
                lines = stream.read().splitlines()
            ours = {line for line in lines if line not in before}
            if path != "/etc/shells" and others:
                continue
            kept = [
                line
                for line in lines
                if line not in ours or (path == "/etc/shells" and self.root not in line)
            ]
            with open(path, "w", encoding="utf-8") as stream:
                stream.write("".join(f"{line}\n" for line in kept))

    def students_on_host(self) -> list[str]:
        return [entry.pw_name for entry in pwd.getpwall() if entry.pw_name.startswith(self.prefix)]
