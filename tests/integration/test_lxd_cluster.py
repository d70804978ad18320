"""The LXD test cluster is what the LXD backend will meet: three members online, one
certificate for all, gpushell's certificate held to its project, unprivileged
containers with their limits, SSH through a proxy device; and nothing left after.

The cluster is this module's own (down() is tested last); other modules share
lxd_fixtures.cluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from .lab import free_port
from .lxd_fixtures import ENGINE_NAMES, IMAGE_ALIAS, running_cluster
from .lxdcluster import PORT, PROJECT, Cluster, cgroups, mounts_under, processes

TIMEOUT = 60  # every request: a frozen member must fail a test, not hang it
# What the backend asks for; security.idmap.size is left out: a restricted
# project refuses it (test_idmap_size_is_refused) and 65536 is its default.
UNPRIVILEGED = {
    "security.idmap.isolated": "true", "limits.memory": "256MB", "limits.processes": "200",
}  # fmt: skip


class Api:
    """gpushell's side: HTTPS with its restricted client certificate, the server
    known by the cluster certificate's fingerprint alone (members' certificates
    name no address we could check)."""

    def __init__(self, cluster: Cluster, member: str) -> None:
        self.cluster = cluster
        self.address = cluster.address(member)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.context.load_cert_chain(cluster.cert_path, cluster.key_path)

    def connect(self) -> http.client.HTTPSConnection:
        connection = http.client.HTTPSConnection(self.address, PORT, context=self.context, timeout=TIMEOUT)
        connection.connect()
        assert isinstance(connection.sock, ssl.SSLSocket)
        presented = connection.sock.getpeercert(binary_form=True)
        assert presented is not None
        if hashlib.sha256(presented).hexdigest() != self.cluster.cluster_fingerprint:
            connection.close()
            raise ssl.SSLError(f"{self.address} presented a certificate that is not the cluster's")
        return connection

    def request(self, method: str, path: str, body: object = None) -> tuple[int, dict[str, object]]:
        connection = self.connect()
        try:
            payload = None if body is None else json.dumps(body)
            connection.request(method, path, payload, {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def wait(self, answer: dict[str, object]) -> dict[str, object]:
        """The finished operation an async answer names."""
        operation = str(answer["operation"]).partition("?")[0]
        status, finished = self.request("GET", f"{operation}/wait?timeout={TIMEOUT - 5}&project={PROJECT}")
        assert status == 200, finished
        return metadata(finished)

    def create(self, name: str, config: dict[str, str], target: str | None) -> tuple[int, dict[str, object]]:
        query = f"?project={PROJECT}" + (f"&target={target}" if target else "")
        request = {"name": name, "source": {"type": "image", "alias": IMAGE_ALIAS}, "config": config}
        return self.request("POST", f"/1.0/instances{query}", request)


def metadata(answer: dict[str, object]) -> dict[str, object]:
    found = answer["metadata"]
    assert isinstance(found, dict), answer
    return found


@pytest.fixture(scope="module", params=ENGINE_NAMES)
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with running_cluster(engine=request.param) as running:
        yield running


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Api:
    return Api(cluster, "m1")


@pytest.fixture(scope="module")
def instance(cluster: Cluster, api: Api) -> str:
    """An unprivileged container of gpushell's, made by gpushell's certificate, placed on m2, running.

    Named with the prefix, as its cgroups are: another cluster on this machine may have a c1.
    """
    name = f"{cluster.prefix}-c1"
    started = time.monotonic()
    status, answer = api.create(name, UNPRIVILEGED, target="m2")
    assert status == 202, answer
    assert api.wait(answer)["status"] == "Success"
    created = time.monotonic()
    status, answer = api.request("PUT", f"/1.0/instances/{name}/state?project={PROJECT}",
                                 {"action": "start", "timeout": 30})  # fmt: skip
    assert status == 202, answer
    assert api.wait(answer)["status"] == "Success"
    cluster.timings["instance create"] = created - started
    cluster.timings["instance start"] = time.monotonic() - created
    return name


def admin_instances(cluster: Cluster) -> list[str]:
    listed = cluster.lxc("m1", "list", "--project", PROJECT, "--format", "csv", "-c", "n", timeout=TIMEOUT)
    return listed.stdout.split()


def init_pid(api: Api, name: str) -> int:
    status, answer = api.request("GET", f"/1.0/instances/{name}/state?project={PROJECT}")
    assert status == 200, answer
    return int(str(metadata(answer)["pid"]))


def cgroup_of(pid: int, controller: str) -> str:
    """The container's own cgroup: systemd inside moves its init one level down, to init.scope."""
    with open(f"/proc/{pid}/cgroup", encoding="utf-8") as stream:
        for line in stream:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return f"/sys/fs/cgroup/{controller}/{path.strip('/').split('/')[0]}"
    raise AssertionError(f"no {controller} cgroup for {pid}")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as stream:
        return stream.read().strip()


# --- the cluster ------------------------------------------------------------


def test_three_members_are_online(cluster: Cluster) -> None:
    answer = cluster.lxc("m1", "query", "/1.0/cluster/members?recursion=1", timeout=TIMEOUT).stdout
    members = {member["server_name"]: member for member in json.loads(answer)}
    assert sorted(members) == ["m1", "m2", "m3"]
    for name, address in cluster.members:
        assert members[name]["status"] == "Online", members[name]
        assert members[name]["url"] == cluster.api_url(name) == f"https://{address}:{PORT}"


@pytest.mark.parametrize("member", ["m1", "m2", "m3"])
def test_every_member_presents_the_cluster_certificate(cluster: Cluster, member: str) -> None:
    Api(cluster, member).connect().close()


def test_the_restricted_certificate_sees_its_project_only(cluster: Cluster) -> None:
    api = Api(cluster, "m3")
    status, answer = api.request("GET", f"/1.0/instances?project={PROJECT}")
    assert status == 200, answer
    for elsewhere in ("/1.0/instances?project=default", "/1.0/instances"):
        status, answer = api.request("GET", elsewhere)
        # LXD 5.0.2 answers 403 or 404; Incus 6.0 answers 500 "User does not have permissions".
        assert status >= 400 and not answer.get("metadata"), (elsewhere, status, answer.get("error"))


def test_a_privileged_instance_is_refused(cluster: Cluster, api: Api) -> None:
    name = f"{cluster.prefix}-privileged"
    status, answer = api.create(name, {"security.privileged": "true"}, target="m3")
    # LXD 5.0.2 answers 500 ("Failed checking if instance creation allowed: ... forbidden").
    assert status >= 400 and "Privileged containers are forbidden" in str(answer["error"]), answer
    assert name not in admin_instances(cluster)


def test_a_privileged_instance_is_refused_without_a_target(
    cluster: Cluster, api: Api, request: pytest.FixtureRequest
) -> None:
    if cluster.engine.name == "lxd":
        request.applymarker(pytest.mark.xfail(
            strict=True,
            reason="LXD 5.0.2 skips a restricted project's checks when the create names no target: "
            "the cluster places it and the member's own certificate passes every check (seen here; "
            "Incus 6.0 refuses it)",
        ))  # fmt: skip
    name = f"{cluster.prefix}-placed"
    status, answer = api.create(name, {"security.privileged": "true"}, target=None)
    try:
        assert status >= 400, answer
    finally:
        # One privileged instance in the project makes LXD refuse every later create.
        if status == 202:
            api.wait(answer)
            cluster.lxc("m1", "delete", "--force", name, "--project", PROJECT, timeout=TIMEOUT)


def test_idmap_size_is_refused(cluster: Cluster, api: Api) -> None:
    name = f"{cluster.prefix}-sized"
    status, answer = api.create(name, {**UNPRIVILEGED, "security.idmap.size": "65536"}, target="m3")
    assert status >= 400 and 'low-level config "security.idmap.size"' in str(answer["error"]), answer
    assert name not in admin_instances(cluster)


# --- an instance of gpushell's ---------------------------------------------


def test_host_paths_reach_an_instance_from_the_nas_alone(cluster: Cluster, api: Api, instance: str) -> None:
    """A stolen certificate cannot mount a member's /etc into a container: restricted.devices.disk.paths."""

    def patch(source: str) -> tuple[int, dict[str, object]]:
        device = {"type": "disk", "source": source, "path": "/mnt/host"}
        status, answer = api.request("PATCH", f"/1.0/instances/{instance}?project={PROJECT}",
                                     {"devices": {"host": device}})  # fmt: skip
        if status == 202:
            finished = api.wait(answer)
            return (200 if finished["status"] == "Success" else 500), finished
        return status, answer

    status, answer = patch("/etc")
    assert status >= 400 and "not allowed" in str(answer.get("error")), answer
    for sibling in (f"{cluster.nas}-other", f"{cluster.nas}/../m1"):  # a name that starts the same; a way out
        assert patch(sibling)[0] >= 400, sibling
    with open(f"{cluster.nas}/shared.txt", "w", encoding="utf-8") as stream:
        stream.write("from the NAS\n")
    try:
        status, answer = patch(cluster.nas)
        assert status == 200, answer
        assert read(f"/proc/{init_pid(api, instance)}/root/mnt/host/shared.txt") == "from the NAS"
    finally:
        status, answer = api.request("GET", f"/1.0/instances/{instance}?project={PROJECT}")
        devices = dict(metadata(answer)["devices"])  # type: ignore[call-overload]
        devices.pop("host", None)
        put = {key: metadata(answer)[key] for key in ("architecture", "config", "profiles", "ephemeral")}
        status, answer = api.request("PUT", f"/1.0/instances/{instance}?project={PROJECT}",
                                     {**put, "devices": devices})  # fmt: skip
        assert status in (200, 202), answer
        if status == 202:
            assert api.wait(answer)["status"] == "Success"


def test_the_instance_runs_on_its_target(cluster: Cluster, api: Api, instance: str) -> None:
    status, answer = api.request("GET", f"/1.0/instances/{instance}?project={PROJECT}")
    assert status == 200, answer
    assert (metadata(answer)["status"], metadata(answer)["location"]) == ("Running", "m2")


def test_the_instance_is_unprivileged_with_its_own_range(api: Api, instance: str) -> None:
    inside, outside, size = map(int, read(f"/proc/{init_pid(api, instance)}/uid_map").split())
    assert inside == 0 and outside >= 65536 and size == 65536


def test_the_instance_limits_are_in_its_cgroups(api: Api, instance: str) -> None:
    pid = init_pid(api, instance)
    assert read(f"{cgroup_of(pid, 'memory')}/memory.limit_in_bytes") == str(256 * 1000 * 1000)
    assert read(f"{cgroup_of(pid, 'pids')}/pids.max") == "200"


def test_a_proxy_device_reaches_the_instance_sshd(cluster: Cluster, api: Api, instance: str) -> None:
    port = free_port()  # free in the root namespace; m2's own namespace has nothing listening
    device = {"type": "proxy", "listen": f"tcp:0.0.0.0:{port}", "connect": "tcp:127.0.0.1:22", "bind": "host"}
    status, answer = api.request("PATCH", f"/1.0/instances/{instance}?project={PROJECT}",
                                 {"devices": {"ssh": device}})  # fmt: skip
    assert status == 200, answer
    # The image carries no host keys (each container needs its own), so at boot sshd failed
    # five times within a second: systemd refuses another start for 10 s unless reset.
    keys = "; ".join(
        f"ssh-keygen -q -t {kind} -N '' -f /etc/ssh/ssh_host_{kind}_key" for kind in ("ed25519", "ecdsa")
    )
    script = f"{keys}; systemctl reset-failed ssh; systemctl restart ssh"
    cluster.lxc("m1", "exec", instance, "--project", PROJECT, "--", "sh", "-ec", script, timeout=TIMEOUT)
    assert banner(cluster.address("m2"), port).startswith(b"SSH-2.0-")


def banner(address: str, port: int) -> bytes:
    """The first bytes the server sends, tried for a while: sshd may still be starting."""
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=5) as connection:
            received = connection.recv(64)
            if received:
                return received
        if time.monotonic() > deadline:
            return b""
        time.sleep(0.2)


# --- down -------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_down_after_a_member_froze_and_another_died(engine: str) -> None:
    """What a failover test may leave: m1 killed with its instance still running, m2 stopped."""
    with running_cluster(members=2, engine=engine) as small:
        name = f"{small.prefix}-orphan"
        small.lxc("m1", "launch", IMAGE_ALIAS, name, "--project", PROJECT, "--target", "m1",
                  "-c", "security.idmap.isolated=true", timeout=TIMEOUT)  # fmt: skip
        os.kill(small.daemons["m2"].pid, signal.SIGSTOP)
        os.kill(small.daemons["m1"].pid, signal.SIGKILL)
        started = time.monotonic()
        small.down()
        assert time.monotonic() - started < 150
        assert f"{PROJECT}_{name}" in small.lxc_names
        assert small.leftovers() == []


def test_down_leaves_nothing(cluster: Cluster, instance: str) -> None:
    """Last, as it takes the module's cluster away: after a running instance with a proxy,
    no process, mount, namespace, link, cgroup or directory stays."""
    pids = [process.pid for process in cluster.daemons.values()]
    cluster.down()
    print("\nLXD cluster timings (s):", {key: round(value, 2) for key, value in cluster.timings.items()})
    cluster.down()  # idempotent: the fixture calls it once more
    assert cluster.leftovers() == []
    assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
    assert not mounts_under(cluster.root) and not os.path.exists(cluster.root)
    namespaces = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert not [name for name in namespaces if name.startswith(cluster.prefix)]
    assert not [pid for pid, _, command, _ in processes() if cluster.root.encode() in command]
    assert not [name for name in os.listdir("/sys/class/net") if name.startswith(cluster.prefix)]
    assert f"{PROJECT}_{instance}" in cluster.lxc_names
    assert not cgroups([f"{PROJECT}_{instance}"])
