"""Network isolation between students, on real containers (gpushell/core/isolation.py).

Two students, both running: a victim and an attacker whose root changes
its own network (address, MAC, routes) as hostile root would.  Every test
puts back what it changed (the attacker's eth0, the victim's state, the
registry and the tables), even when it fails.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from gpushell.core.allocate import host_interface, mac_address
from gpushell.core.isolation import TRACKED_FLOWS

from .lab import Lab, Student, free_port, sh


@pytest.fixture(scope="module")
def pair(lab: Lab) -> Iterator[tuple[Student, Student]]:
    """(victim, attacker), both containers running; removed with their accounts afterwards."""
    made: list[Student] = []
    try:
        for suffix in ("iv", "ia"):
            made.append(lab.add_student(suffix))
            started = lab.ssh(made[-1], "start")
            assert started.returncode == 0, started.stderr
        yield made[0], made[1]
    finally:
        for student in made:
            lab.admin("remove", student.name, "--purge", check=False)


def attach(lab: Lab, student: Student, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """bash -c script as root in the student's container."""
    argv = ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--clear-env", "--"]
    return sh([*argv, "bash", "-c", script], check=False, timeout=timeout)


def connects(lab: Lab, student: Student, ip: str, port: int, seconds: int = 3) -> bool:
    """Whether a TCP handshake from inside the container to ip:port completes (a drop: timeout)."""
    return attach(lab, student, f"timeout {seconds} bash -c 'exec 3<>/dev/tcp/{ip}/{port}'").returncode == 0


def gateway(lab: Lab) -> str:
    from gpushell.core import registry

    return str(registry.parse(lab.read_registry(), lab.registry).gateway)


def prefixlen(lab: Lab) -> int:
    return lab.subnet.prefixlen


def tcp_segments_in(lab: Lab, student: Student) -> int:
    """TCP segments the container's network stack has received (its /proc/net/snmp InSegs)."""
    script = (
        'awk \'$1=="Tcp:" { if (!seen) { for (i = 1; i <= NF; i++) col[$i] = i; seen = 1 } '
        'else print $col["InSegs"] }\' /proc/net/snmp'
    )
    return int(attach(lab, student, script).stdout.strip())


def set_identity(lab: Lab, student: Student, ip: str, mac: str) -> None:
    """The container's eth0 with this address and MAC, routed by the gateway (root inside may do this)."""
    script = (
        f"ip link set eth0 down && ip link set eth0 address {mac} && ip addr flush dev eth0 && "
        f"ip addr add {ip}/{prefixlen(lab)} dev eth0 && ip link set eth0 up && "
        f"ip route replace default via {gateway(lab)}"
    )
    result = attach(lab, student, script)
    assert result.returncode == 0, result.stderr


@contextlib.contextmanager
def claiming(lab: Lab, attacker: Student, victim: Student, with_mac: bool) -> Iterator[None]:
    """The attacker takes the victim's IP (and MAC), and talks: its ARP now names the victim."""
    mac = mac_address(victim.ip) if with_mac else mac_address(attacker.ip)
    try:
        set_identity(lab, attacker, victim.ip, mac)
        # Each attempt sends ARP for the gateway with the victim's IP (and MAC) as sender.
        talk = f"timeout 1 bash -c 'exec 3<>/dev/tcp/{gateway(lab)}/22'"
        attach(lab, attacker, f"for i in 1 2 3; do {talk}; done")
        yield
    finally:
        set_identity(lab, attacker, attacker.ip, mac_address(attacker.ip))


def host_neighbour(lab: Lab, ip: str) -> str:
    return sh(["ip", "neigh", "show", "to", ip, "dev", lab.bridge]).stdout.strip()


def container_hostname(lab: Lab, student: Student) -> str:
    return attach(lab, student, "hostname").stdout.strip()


def landing(lab: Lab, victim: Student) -> subprocess.CompletedProcess[str]:
    """ssh to the victim's forward from the client namespace, with a fresh ARP look-up on the host."""
    sh(["ip", "neigh", "flush", "to", victim.ip, "dev", lab.bridge], check=False)
    return lab.ssh(victim, "hostname", port=victim.port, timeout=60)


@pytest.mark.parametrize("with_mac", [False, True], ids=["ip-only", "ip-and-mac"])
def test_a_neighbours_ip_gets_the_attacker_none_of_its_traffic_while_it_runs(
    lab: Lab, pair: tuple[Student, Student], with_mac: bool
) -> None:
    victim, attacker = pair
    own = container_hostname(lab, victim)
    with claiming(lab, attacker, victim, with_mac):
        before = tcp_segments_in(lab, attacker)
        for _ in range(3):
            result = landing(lab, victim)
            assert (result.returncode, result.stdout.strip()) == (0, own), result.stderr
            assert mac_address(attacker.ip) not in host_neighbour(lab, victim.ip)
        assert tcp_segments_in(lab, attacker) == before  # not one segment for the victim reached it


@pytest.mark.parametrize("with_mac", [False, True], ids=["ip-only", "ip-and-mac"])
def test_a_neighbours_ip_gets_the_attacker_none_of_its_traffic_while_it_is_stopped(
    lab: Lab, pair: tuple[Student, Student], with_mac: bool
) -> None:
    victim, attacker = pair
    assert lab.ssh(victim, "stop").returncode == 0
    try:
        with claiming(lab, attacker, victim, with_mac):
            before = tcp_segments_in(lab, attacker)
            result = lab.ssh(victim, "hostname", port=victim.port, timeout=60)
            assert result.returncode != 0 and container_hostname(lab, attacker) not in result.stdout
            assert mac_address(attacker.ip) not in host_neighbour(lab, victim.ip)
            assert tcp_segments_in(lab, attacker) == before
    finally:
        assert lab.ssh(victim, "start").returncode == 0


@contextlib.contextmanager
def routed_via_gateway(lab: Lab, student: Student, ip: str) -> Iterator[None]:
    attach(lab, student, f"ip route replace {ip}/32 via {gateway(lab)}")
    try:
        yield
    finally:
        attach(lab, student, f"ip route del {ip}/32")


@contextlib.contextmanager
def applied(lab: Lab, lines: str) -> Iterator[None]:
    """Registry lines in effect (apply), and out again after (apply), even on failure."""
    try:
        with lab.setting_added(lines):
            lab.admin("apply")
            yield
    finally:
        lab.admin("apply")


def test_containers_reach_each_other_only_when_the_lab_allows_it(
    lab: Lab, pair: tuple[Student, Student]
) -> None:
    victim, attacker = pair
    assert not connects(lab, attacker, victim.ip, 22)
    with routed_via_gateway(lab, attacker, victim.ip):
        assert not connects(lab, attacker, victim.ip, 22)
    with applied(lab, "allow_container_traffic: true\n"):
        assert connects(lab, attacker, victim.ip, 22)
        with routed_via_gateway(lab, attacker, victim.ip):
            assert connects(lab, attacker, victim.ip, 22)
    assert not connects(lab, attacker, victim.ip, 22)


class Listener:
    """A TCP listener in this process (the host), accepting and closing each connection."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(16)
        self.address, self.port = address, self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                conn.close()

    def close(self) -> None:
        self.sock.close()


def test_host_services_are_closed_to_containers_while_the_forwards_work(
    lab: Lab, pair: tuple[Student, Student]
) -> None:
    victim, attacker = pair
    listener = Listener(gateway(lab))
    try:
        with socket.create_connection((listener.address, listener.port), timeout=3):
            pass  # the listener answers the host itself
        assert not connects(lab, attacker, listener.address, listener.port)
        assert not connects(lab, attacker, lab.host_ip, lab.sshd_port)  # the lab's sshd
        assert not connects(lab, attacker, gateway(lab), lab.sshd_port)
    finally:
        listener.close()
    result = lab.ssh(victim, "hostname", port=victim.port)
    assert result.returncode == 0 and result.stdout.strip() == container_hostname(lab, victim), result.stderr


@contextlib.contextmanager
def client_listener(lab: Lab) -> Iterator[int]:
    """A TCP listener in the client namespace (outside the lab); its port."""
    port = free_port()
    code = (
        "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(({lab.client_ip!r}, {port}))\ns.listen(16)\n"
        "while True:\n    c, _ = s.accept()\n    c.close()\n"
    )
    proc = subprocess.Popen(["ip", "netns", "exec", lab.netns, "python3", "-c", code])
    try:
        deadline = time.monotonic() + 10
        while sh(["ip", "netns", "exec", lab.netns, "ss", "-Hltn", f"sport = :{port}"]).stdout.strip() == "":
            assert time.monotonic() < deadline, "client listener did not start"
            time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def test_egress_deny_keeps_containers_off_an_address_but_not_its_replies(
    lab: Lab, pair: tuple[Student, Student]
) -> None:
    victim, attacker = pair
    with client_listener(lab) as port:
        assert connects(lab, attacker, lab.client_ip, port)  # reachable before
        with applied(lab, f"egress_deny: [{lab.client_ip}/32]\n"):
            assert not connects(lab, attacker, lab.client_ip, port)
            # The client still reaches a container through its forward: replies pass.
            result = lab.ssh(victim, "hostname", port=victim.port)
            assert result.returncode == 0, result.stderr
        assert connects(lab, attacker, lab.client_ip, port)


def tracked_from(ip: str) -> int:
    """The entries of the host's connection tracking for flows that ip started (its first src=)."""
    with open("/proc/net/nf_conntrack", encoding="ascii") as stream:
        return sum(
            1 for line in stream if next(w for w in line.split() if w.startswith("src=")) == f"src={ip}"
        )


def test_a_container_cannot_fill_the_hosts_connection_tracking(
    lab: Lab, pair: tuple[Student, Student]
) -> None:
    victim, attacker = pair
    flows = TRACKED_FLOWS + 1000
    # One datagram to each of that many ports in the client namespace: nobody answers,
    # and each is a flow the host tracks for 30 s (nf_conntrack_udp_timeout).
    spray = (
        f"for p in $(seq 20000 {20000 + flows - 1}); do echo > /dev/udp/{lab.client_ip}/$p; done 2>/dev/null"
    )
    try:
        attach(lab, attacker, spray, timeout=120)
        held = tracked_from(attacker.ip)
        # At the bound, not under it (the spray was real), and not over (a few earlier
        # connections of this module may still be in TIME_WAIT, which the count skips).
        assert TRACKED_FLOWS - 100 <= held <= TRACKED_FLOWS + 50, held
        with client_listener(lab) as port:
            assert not connects(lab, attacker, lab.client_ip, port)  # its own next flow waits
            assert connects(lab, victim, lab.client_ip, port)  # a neighbour's goes through
        # The flows set now lists the attacker: the kernel's state, which is no difference to
        # doctor (else apply, and a login's check, would rebuild the tables and reset the count).
        name = lab.tables
        assert doctor_lines(lab) == [
            f"ok: nftables tables bridge {name} and inet {name} (isolation) match the registry"
        ]
    finally:
        deadline = time.monotonic() + 90  # the spray's entries time out; the next test needs its flows
        while tracked_from(attacker.ip) > 50 and time.monotonic() < deadline:
            time.sleep(1)


def host_reaches_sshd(ip: str) -> bool:
    """Whether the host gets the greeting of sshd at ip:22 within 2 s (a lost reply: no)."""
    try:
        with socket.create_connection((ip, 22), timeout=2) as conn:
            conn.settimeout(2)
            return conn.recv(4) == b"SSH-"
    except OSError:
        return False


def bridge_mac(lab: Lab) -> str:
    with open(f"/sys/class/net/{lab.bridge}/address", encoding="ascii") as stream:
        return stream.read().strip()


def test_a_neighbours_veth_leaving_the_bridge_leaves_running_containers_their_gateway(
    lab: Lab, pair: tuple[Student, Student]
) -> None:
    """A bridge with no MAC of its own takes the lowest of its ports'.  A container
    that learned the gateway's MAC while a neighbour's veth lent it kept that MAC
    in its ARP cache after the neighbour stopped: the host's packets reached it,
    its replies went to a MAC no port had any more, for ~30 s.  Here a port with
    a MAC lower than any joins, the victim learns the gateway's MAC, the port leaves."""
    victim, _ = pair
    assert bridge_mac(lab) == mac_address(gateway(lab))  # init gave the bridge one
    low, peer = f"{lab.prefix}lo", f"{lab.prefix}lp"
    try:
        sh(["ip", "link", "add", low, "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", peer])
        sh(["ip", "link", "set", low, "master", lab.bridge, "up"])
        assert bridge_mac(lab) == mac_address(gateway(lab))
        assert attach(lab, victim, "ip neigh flush dev eth0").returncode == 0
        assert host_reaches_sshd(victim.ip)  # the victim asks for the gateway's MAC and keeps it
    finally:
        sh(["ip", "link", "del", low], check=False)
    assert host_reaches_sshd(victim.ip)


APPLY = "gpushell-admin apply"


def nft(*args: str) -> subprocess.CompletedProcess[str]:
    return sh(["nft", *args], check=False)


def doctor_lines(lab: Lab) -> list[str]:
    return [line for line in lab.admin("doctor", check=False).stdout.splitlines() if "nftables" in line]


def test_apply_rebuilds_a_deleted_or_changed_table_and_doctor_tells(
    lab: Lab, pair: tuple[Student, Student]
) -> None:
    name = lab.tables
    ok = f"ok: nftables tables bridge {name} and inet {name} (isolation) match the registry"
    try:
        assert doctor_lines(lab) == [ok]
        assert nft("delete", "table", "inet", name).returncode == 0
        assert nft("flush", "chain", "bridge", name, "student").returncode == 0
        assert doctor_lines(lab) == [
            f"FAIL: nftables table bridge {name} differs from what the registry wants — fix: {APPLY}",
            f"FAIL: nftables table inet {name} is missing — fix: {APPLY}",
        ]
        out = lab.admin("apply").stdout
        assert "done: rebuild the nftables isolation tables" in out
        assert doctor_lines(lab) == [ok]
        assert "nftables" not in lab.admin("apply").stdout  # right tables are left alone
    finally:
        lab.admin("apply")


def test_add_and_remove_rebuild_the_tables(lab: Lab, pair: tuple[Student, Student]) -> None:
    port = host_interface(pair[0].ip)
    assert port in nft("list", "table", "bridge", lab.tables).stdout
    extra = lab.add_student("ix")
    try:
        assert host_interface(extra.ip) in nft("list", "table", "bridge", lab.tables).stdout
    finally:
        lab.admin("remove", extra.name, "--purge")
    listed = nft("list", "table", "bridge", lab.tables).stdout
    assert host_interface(extra.ip) not in listed and port in listed
