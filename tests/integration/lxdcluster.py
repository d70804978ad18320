"""A real LXD or Incus cluster on this one machine, for the `lxd` backend's integration tests.

Each member is an engine daemon in a network namespace of its own, with a veth
into one bridge in the root namespace (the "front door" gpushell talks
through) and a state directory of its own: how LXD's own test suite runs
several members on one machine.  Everything carries the test prefix, and
`down` removes all of it and nothing else, even after a partial `up`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence

import yaml

from gpushell.containers import lxdimage, template

from .lab import ENV, sh
from .standin_gpus import StandinGpu, script

STATE_ROOT = "/var/lib/gpushell-test-lxd"  # short: unix socket paths must stay under 108 bytes
TEMPLATE_CACHE = "/var/cache/gpushell/templates"
IMAGE_CACHE = "/var/cache/gpushell/lxd-images"
PROJECT = "gpushell"
PORT = 8443
# The project restrictions gpushell relies on, all of which LXD 5.0.2 knows
# (it refuses unknown keys).  restricted=true blocks privileged containers.
RESTRICTIONS = (
    "restricted=true", "restricted.cluster.target=allow", "restricted.devices.proxy=allow",
    "restricted.devices.gpu=allow", "restricted.devices.disk=allow", "restricted.snapshots=allow",
)  # fmt: skip
# Backups only where the engine checks an import against the project (Incus): README, Several servers.
BACKUPS = {"incus": ("restricted.backups=allow",), "lxd": ()}
# ... and host paths from the NAS alone (Cluster.nas, each cluster's own): restricted.devices.disk.paths.
ROOT_DISK = {"type": "disk", "path": "/", "pool": "default"}
DELETE_SECONDS = 60
SHUTDOWN_SECONDS = 30
# In the daemon's own mount namespace: keep the host's cgroup mounts aside,
# mount a sysfs of the member's network namespace, put the cgroups back;
# then the member's stand-in GPUs (standin_gpus.py), before the daemon starts.
SYSFS_SWAP = (
    'set -e; keep=$(mktemp -d); mount --rbind /sys/fs/cgroup "$keep"; mount -t sysfs sysfs /sys; '
    'mount --move "$keep" /sys/fs/cgroup; rmdir "$keep" 2>/dev/null || true; {gpus}exec "$@"'
)
# m1's GPUs have DRM nodes (nvidia-drm loaded), m2's has none, like the real H200 recorded.
STANDIN_GPUS = {
    "m1": (StandinGpu(0, "0000:00:06.0", drm=1), StandinGpu(1, "0000:00:07.0", drm=2)),
    "m2": (StandinGpu(0, "0000:00:06.0", drm=None),),
}


@dataclasses.dataclass(frozen=True)
class Engine:
    """One engine's programs and names: LXD (Debian 12's, in main) or Incus (Debian 13's,
    and Debian 12's backports).  The two speak the same REST API; their tools differ."""

    name: str
    daemon: str  # the daemon's program
    admin: tuple[str, ...]  # init, waitready, shutdown
    client: str  # the command-line client
    trust_add: str  # `config trust` subcommand that adds a client certificate
    env_prefix: str  # DIR (state directory, unix socket) and CONF (client configuration)


ENGINES = {
    "lxd": Engine("lxd", "lxd", ("lxd",), "lxc", "add", "LXD"),
    "incus": Engine(
        "incus", "/usr/libexec/incus/incusd", ("incus", "admin"), "incus", "add-certificate", "INCUS"
    ),
}


def template_tarball() -> str:
    """The cached Debian rootfs tarball (built once by debootstrap, reused after)."""
    return template.ensure_cached(TEMPLATE_CACHE)


class Cluster:
    """LXD members m1..mN (N = members) at subnet hosts .11, .12, ..., the bridge at host 1.

    up() builds it, down() takes it away; call down() even when up() failed.
    """

    def __init__(
        self,
        prefix: str,
        subnet: ipaddress.IPv4Network,
        container_subnet: ipaddress.IPv4Network,
        members: int = 3,
        engine: Engine = ENGINES["lxd"],
    ) -> None:
        self.engine = engine
        self.prefix = prefix
        self.subnet = subnet
        self.container_subnet = container_subnet
        self.bridge = f"{prefix}lx"
        self.network = f"{prefix}n"  # the managed bridge inside each member (ifnames <= 15 characters)
        self.project = PROJECT
        self.gateway = str(subnet.network_address + 1)
        self.members = [(f"m{n}", str(subnet.network_address + 10 + n)) for n in range(1, members + 1)]
        self.root = f"{STATE_ROOT}/{prefix}"
        self.cert_path = f"{self.root}/gpushell.crt"
        self.key_path = f"{self.root}/gpushell.key"
        self.nas = f"{self.root}/nas"  # the one host directory the project lets containers mount
        self.cluster_cert_path = f"{self.state_dir('m1')}/cluster.crt"
        self.cluster_fingerprint = ""
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}
        self.lxc_names: set[str] = set()  # liblxc's names of this cluster's instances, for their cgroups
        self.timings: dict[str, float] = {}

    # --- names ------------------------------------------------------------

    def state_dir(self, member: str) -> str:
        return f"{self.root}/{member}"

    def netns(self, member: str) -> str:
        return f"{self.prefix}{member}"

    def veth(self, member: str) -> str:
        return f"{self.prefix}v{member}"

    def address(self, member: str) -> str:
        return dict(self.members)[member]

    def api_url(self, member: str) -> str:
        return f"https://{self.address(member)}:{PORT}"

    # --- running LXD ------------------------------------------------------

    def env(self, member: str) -> dict[str, str]:
        """..._DIR picks the member's daemon (its unix socket); ..._CONF keeps the client off ~/.config."""
        prefix = self.engine.env_prefix
        return {**ENV, f"{prefix}_DIR": self.state_dir(member), f"{prefix}_CONF": f"{self.root}/client"}

    def lxc(
        self, member: str, *args: str, timeout: float = 120, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The engine's client against a member's unix socket: the admin's side, for set-up and assertions."""
        return self._run([self.engine.client, *args], member, timeout, check, stdin)

    def _lxd(
        self, member: str, *args: str, timeout: float = 120, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self._run([*self.engine.admin, *args], member, timeout, check, stdin)

    def _run(
        self, argv: list[str], member: str, timeout: float, check: bool, stdin: str | None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, env=self.env(member), capture_output=True, text=True, timeout=timeout, input=stdin
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{member}: {' '.join(argv)} failed: {result.stderr.strip()}")
        return result

    # --- up -------------------------------------------------------------

    def up(self) -> None:
        started = time.monotonic()
        os.makedirs(self.root, mode=0o711)
        os.makedirs(self.nas, mode=0o755)
        self._make_front_door()
        for name, _ in self.members:
            self._start_daemon(name)
        self._bootstrap()
        for name, _ in self.members[1:]:
            self._join(name)
        self._make_container_network()
        self._make_project()
        self._trust_gpushell()
        self.cluster_fingerprint = fingerprint(self.cluster_cert_path)
        self.timings["cluster up"] = time.monotonic() - started

    def _make_front_door(self) -> None:
        sh(["ip", "link", "add", self.bridge, "type", "bridge"], timeout=10)
        sh(["ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge], timeout=10)
        sh(["ip", "link", "set", self.bridge, "up"], timeout=10)
        for name, address in self.members:
            netns, veth = self.netns(name), self.veth(name)
            sh(["ip", "netns", "add", netns], timeout=10)
            sh(
                ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns],
                timeout=10,
            )
            sh(["ip", "link", "set", veth, "master", self.bridge, "up"], timeout=10)
            inside = ["ip", "-n", netns]
            sh([*inside, "link", "set", "lo", "up"], timeout=10)
            sh([*inside, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0"], timeout=10)
            sh([*inside, "link", "set", "eth0", "up"], timeout=10)
            sh([*inside, "route", "add", "default", "via", self.gateway], timeout=10)

    def _start_daemon(self, member: str) -> None:
        """In the member's network namespace, with a /sys of that namespace (LXD looks for its
        bridge in /sys/class/net) that still holds the host's cgroups (`ip netns exec`'s fresh
        /sys hides them, and unprivileged containers then cannot start), and the member's stand-in
        GPUs: SYSFS_SWAP below."""
        state = self.state_dir(member)
        os.makedirs(state, mode=0o711)
        log = f"{state}/daemon.log"
        gpus = script(STANDIN_GPUS.get(member, ()), f"{state}/gpus")
        with open(f"{state}/daemon.out", "wb") as output:
            self.daemons[member] = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns(member)}",
                 "unshare", "--mount", "--propagation", "slave",
                 "sh", "-c", SYSFS_SWAP.format(gpus=gpus), "sh",
                 self.engine.daemon, "--group", "root", "--logfile", log],
                env=self.env(member), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # only down() stops it, never a ^C meant for pytest
            )  # fmt: skip
        ready = self._lxd(member, "waitready", "--timeout", "60", timeout=70, check=False)
        if ready.returncode != 0:
            raise RuntimeError(f"{self.engine.name} {member} not ready: {ready.stderr.strip()}\n{tail(log)}")

    def _bootstrap(self) -> None:
        address = f"{self.address('m1')}:{PORT}"
        preseed = {
            "config": {"core.https_address": address, "images.auto_update_interval": "0"},
            "storage_pools": [{"name": "default", "driver": "dir"}],
            "profiles": [{"name": "default", "devices": {"root": ROOT_DISK}}],
            "cluster": {"server_name": "m1", "enabled": True},
        }
        self._lxd("m1", "init", "--preseed", stdin=yaml.safe_dump(preseed), timeout=120)

    def _join(self, member: str) -> None:
        """With the engine's own join token, as an admin adds a server."""
        token = self.lxc("m1", "cluster", "add", member, timeout=30).stdout.split()[-1]
        address = f"{self.address(member)}:{PORT}"
        # The dir pool's source is per member; empty means under the member's LXD_DIR.
        source = {"entity": "storage-pool", "name": "default", "key": "source", "value": ""}
        preseed = {
            "cluster": {
                "enabled": True, "server_name": member, "server_address": address, "cluster_token": token,
                "member_config": [source],
            },
        }  # fmt: skip
        self._lxd(member, "init", "--preseed", stdin=yaml.safe_dump(preseed), timeout=180)

    def _make_container_network(self) -> None:
        """Each member's bridge lives in that member's namespace: the same subnet on all is fine."""
        for name, _ in self.members:
            self.lxc("m1", "network", "create", self.network, "--target", name, timeout=30)
        gateway = f"{self.container_subnet.network_address + 1}/{self.container_subnet.prefixlen}"
        self.lxc(
            "m1", "network", "create", self.network,
            f"ipv4.address={gateway}", "ipv6.address=none", "ipv4.nat=true", timeout=60,
        )  # fmt: skip

    def _make_project(self) -> None:
        self.lxc(
            "m1", "project", "create", PROJECT, "-c", "features.images=true", "-c", "features.profiles=true"
        )
        self.lxc("m1", "profile", "device", "add", "default", "root", "disk", "path=/", "pool=default",
                 "--project", PROJECT)  # fmt: skip
        restrictions = (*RESTRICTIONS, *BACKUPS[self.engine.name])
        self.lxc("m1", "project", "set", PROJECT, *restrictions, f"restricted.devices.disk.paths={self.nas}")

    def _trust_gpushell(self) -> None:
        """gpushell's client certificate, trusted for its project alone."""
        sh(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1", "-nodes",
             "-days", "3650", "-subj", "/CN=gpushell", "-keyout", self.key_path, "-out", self.cert_path],
            timeout=30,
        )  # fmt: skip
        self.lxc("m1", "config", "trust", self.engine.trust_add, self.cert_path,
                 "--name", "gpushell", "--restricted", "--projects", PROJECT)  # fmt: skip

    # --- images -----------------------------------------------------------

    def import_image(self, alias: str, tarball: str) -> None:
        """The rootfs tarball as an image of project gpushell, named `alias`.

        The unified image is packed once and cached beside the templates,
        keyed by the tarball's name (itself a hash of its recipe) and ours.
        """
        image = self._cached_image(tarball)
        started = time.monotonic()
        self.lxc("m1", "image", "import", image, "--alias", alias, "--project", PROJECT, timeout=600)
        self.timings["image import"] = time.monotonic() - started

    def _cached_image(self, tarball: str) -> str:
        stem = os.path.basename(tarball).removesuffix(".tar")
        image = f"{IMAGE_CACHE}/{stem}-lxd{lxdimage.RECIPE}.tar"
        if not os.path.exists(image):
            started = time.monotonic()
            os.makedirs(IMAGE_CACHE, mode=0o755, exist_ok=True)
            # Our own name first: another run may be packing the same image meanwhile.
            ours = f"{image}.{os.getpid()}"
            lxdimage.pack(tarball, ours, f"gpushell test image from {os.path.basename(tarball)}")
            os.rename(ours, image)
            self.timings["image pack"] = time.monotonic() - started
        return image

    # --- down -------------------------------------------------------------

    def down(self) -> None:
        """Take everything away, whatever up() got to; raise if anything stays."""
        started = time.monotonic()
        for process in self.daemons.values():
            # A test may have frozen a daemon (SIGSTOP) and failed before thawing it.
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
        self.lxc_names.update(self._lxc_names())
        self._delete_instances()
        self._shut_down_daemons()
        self._kill_ours()
        self._unmount()
        remove_cgroups(sorted(self.lxc_names))
        self._remove_network()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(f"/run/lxc/lock{self.root}", ignore_errors=True)  # liblxc's lock files
        for shared in (STATE_ROOT, f"/run/lxc/lock{STATE_ROOT}"):
            with contextlib.suppress(OSError):
                os.rmdir(shared)  # only when no other cluster uses it
        self.timings["down"] = time.monotonic() - started
        found = self.leftovers()
        if found:
            raise RuntimeError("LXD cluster clean-up left things behind:\n" + "\n".join(found))

    def _alive(self) -> list[str]:
        return [name for name, process in self.daemons.items() if process.poll() is None]

    def _lxc_names(self) -> list[str]:
        """Names liblxc gave this cluster's instances (`project_name`), from the members' own state."""
        names: list[str] = []
        for name, _ in self.members:
            with contextlib.suppress(OSError):
                names += os.listdir(f"{self.state_dir(name)}/containers")
        return names

    def _delete_instances(self) -> None:
        """Every project's, through the first member that answers, within DELETE_SECONDS
        in all: a frozen member makes calls through it hang."""
        deadline = time.monotonic() + DELETE_SECONDS
        for member in self._alive():
            with contextlib.suppress(subprocess.TimeoutExpired):
                listed = self.lxc(member, "list", "--all-projects", "--format", "csv", "-c", "en",
                                  timeout=min(15, remaining(deadline)), check=False)  # fmt: skip
                if listed.returncode != 0:
                    continue
                projects: dict[str, list[str]] = {}
                for line in listed.stdout.splitlines():
                    project, _, name = line.partition(",")
                    projects.setdefault(project, []).append(name)
                for project, names in projects.items():
                    self.lxc(member, "delete", "--force", *names, "--project", project,
                             timeout=remaining(deadline), check=False)  # fmt: skip
                return

    def _shut_down_daemons(self) -> None:
        """`lxd shutdown` on all members at once (one by one, each would wait for the database
        leader that just went); then SIGTERM, then SIGKILL, to the daemons we started only."""
        command = [*self.engine.admin, "shutdown", "--timeout", str(SHUTDOWN_SECONDS)]
        quiet = subprocess.DEVNULL
        asking = [
            subprocess.Popen(command, env=self.env(member), stdout=quiet, stderr=quiet)
            for member in self._alive()
        ]
        for request in wait_all(asking, SHUTDOWN_SECONDS + 10):
            request.kill()
            request.wait()
        for signalling in (signal.SIGTERM, signal.SIGKILL):
            running = [process for process in self.daemons.values() if process.poll() is None]
            for process in running:
                process.send_signal(signalling)
            wait_all(running, 10)

    def _our_processes(self) -> list[int]:
        """What the daemons started and left: LXC monitors (named after the state dir),
        dnsmasq and forkdns/forkproxy (in a member's namespace), and their descendants."""
        namespaces = set()
        for name, _ in self.members:
            with contextlib.suppress(OSError):
                namespaces.add(os.stat(f"/run/netns/{self.netns(name)}").st_ino)
        parents: dict[int, int] = {}
        ours = {process.pid for process in self.daemons.values() if process.poll() is None}
        for pid, parent, command, namespace in processes():
            parents[pid] = parent
            if self.root.encode() in command or namespace in namespaces:
                ours.add(pid)
        return sorted(descendants(ours, parents))

    def _kill_ours(self) -> None:
        """SIGKILL to ours until none is left, looked for again each round while the members'
        namespaces still name them: one spawned as the last round was taken (a proxy device's
        forkproxy) would, once the namespaces are gone, belong to no one we can tell."""
        for _ in range(5):
            pids = self._our_processes()
            if not pids:
                return
            self._kill(pids)

    def _kill(self, pids: Sequence[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(running(pid) for pid in pids):
            time.sleep(0.1)

    def _unmount(self) -> None:
        """Whatever reached the host's mount namespace under the state dirs, deepest first.

        LXD's own mounts (devlxd, shmounts) stay in its mount namespace (SYSFS_SWAP's, slave
        to the host's); this is for the ones that still appear here, if any."""
        for _ in range(3):
            mounts = mounts_under(self.root)
            if not mounts:
                return
            for point in mounts:
                if sh(["umount", point], check=False, timeout=15).returncode != 0:
                    sh(["umount", "--lazy", point], check=False, timeout=15)

    def _remove_network(self) -> None:
        for name, _ in self.members:
            if os.path.exists(f"/run/netns/{self.netns(name)}"):
                sh(["ip", "netns", "del", self.netns(name)], check=False, timeout=10)
            if os.path.exists(f"/sys/class/net/{self.veth(name)}"):
                sh(["ip", "link", "del", self.veth(name)], check=False, timeout=10)
        if os.path.exists(f"/sys/class/net/{self.bridge}"):
            sh(["ip", "link", "del", self.bridge], check=False, timeout=10)

    def leftovers(self) -> list[str]:
        """Anything of this cluster still here: processes, mounts, namespaces, links, files."""
        found = [f"process {pid}" for pid in self._our_processes() if running(pid)]
        found += [f"mount {point}" for point in mounts_under(self.root)]
        namespaces = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
        found += [f"netns {name}" for name in namespaces if name.startswith(self.prefix)]
        found += [f"cgroup {path}" for path in cgroups(sorted(self.lxc_names))]
        found += [f"link {name}" for name in os.listdir("/sys/class/net") if name.startswith(self.prefix)]
        found += [
            f"directory {path}" for path in (self.root, f"/run/lxc/lock{self.root}") if os.path.exists(path)
        ]
        return found


def remaining(deadline: float) -> float:
    """Seconds to a deadline, at least one: a last call still gets its chance."""
    return max(1.0, deadline - time.monotonic())


def wait_all(children: Sequence[subprocess.Popen[bytes]], seconds: float) -> list[subprocess.Popen[bytes]]:
    """Those still running after `seconds` in all."""
    deadline = time.monotonic() + seconds
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(max(0.0, deadline - time.monotonic()))
    return [child for child in children if child.poll() is None]


def fingerprint(pem_path: str) -> str:
    """SHA-256 of a certificate's DER form: what LXD calls its fingerprint."""
    with open(pem_path, encoding="ascii") as stream:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(stream.read())).hexdigest()


def tail(path: str, lines: int = 20) -> str:
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as stream:
        return "".join(stream.readlines()[-lines:])
    return ""


def processes() -> Iterator[tuple[int, int, bytes, int]]:
    """(pid, parent pid, command line, network namespace inode) of every live process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat", "rb") as stream:
                fields = stream.read().rpartition(b")")[2].split()
            if fields[0] == b"Z":
                continue  # a zombie is gone but for its parent's wait
            with open(f"/proc/{entry}/cmdline", "rb") as stream:
                command = stream.read()
            yield int(entry), int(fields[1]), command, os.stat(f"/proc/{entry}/ns/net").st_ino


def descendants(roots: set[int], parents: dict[int, int]) -> set[int]:
    found = set(roots)
    growing = True
    while growing:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        growing = bool(children)
    return found


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            return stream.read().rpartition(b")")[2].split()[0] != b"Z"
    except OSError:
        return False


def mounts_under(root: str) -> list[str]:
    """Mount points at or below root, deepest (and latest) first."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as stream:
        for line in stream:
            point = re.sub(r"\\([0-7]{3})", lambda code: chr(int(code.group(1), 8)), line.split()[4])
            if point == root or point.startswith(root + "/"):
                points.append(point)
    return sorted(reversed(points), key=lambda point: point.count("/"), reverse=True)


def cgroups(lxc_names: Sequence[str]) -> list[str]:
    """The top cgroups liblxc makes for these instances (payload and monitor), where they exist."""
    root = "/sys/fs/cgroup"
    return [
        path
        for hierarchy in sorted(os.listdir(root))
        for name in lxc_names
        for path in (f"{root}/{hierarchy}/lxc.payload.{name}", f"{root}/{hierarchy}/lxc.monitor.{name}")
        if os.path.isdir(path)
    ]


def remove_cgroups(lxc_names: Sequence[str]) -> None:
    """Those a kill left behind: innermost first; one still holding a process stays."""
    for top in cgroups(lxc_names):
        for folder, _, _ in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
