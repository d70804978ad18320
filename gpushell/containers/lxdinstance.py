"""A student's container as the LXD/Incus engine describes it: config keys and devices (pure).

The lab's policy is carried by the engine's own controls, never by files
written behind its back: the kernel limits as `limits.*`, the isolated id
range as `security.idmap.*`, the address and anti-spoofing filters on the
NIC, the student's port as a proxy device on the member, the GPUs as
`gpu` devices and the NAS as disk devices.
"""

from __future__ import annotations

from ..core.model import Cluster, Registry, User
from ..core.placement import gpu_numbers

OWNER_KEY = "user.gpushell.owner"  # the registry user a container belongs to, for strays and listings
SSH_DEVICE = "gpushell-ssh"
PROFILES = ("default",)  # the project's own default profile: its root disk on the lab's pool


def config(reg: Registry, user: User) -> dict[str, str]:
    """The instance's config keys."""
    limits = user.limits
    return {
        "limits.memory": str(limits.memory),
        # limits.memory.swap is left to the engine's default, which is the strictest:
        # memory and swap together within limits.memory (v1: memsw = the limit; v2:
        # swap.max = 0).  "false" would leave memsw unlimited at swappiness 0 on v1,
        # and Incus forbids the key in a restricted project ("low-level").
        "limits.cpu.allowance": f"{round(limits.cpus * 100)}ms/100ms",
        "limits.processes": str(limits.pids),
        # Each container its own id range (65536 ids), which the engine picks and
        # records: container root is nobody on the member, and nobody else's
        # files.  The size is the engine's own: a restricted project forbids
        # setting it (a "low-level" key).
        "security.idmap.isolated": "true",
        "security.privileged": "false",
        "security.nesting": "false",
        "boot.autostart": "true" if user.autostart else "false",
        OWNER_KEY: user.name,
    }


def devices(reg: Registry, user: User, cluster: Cluster) -> dict[str, dict[str, str]]:
    """The instance's devices: root disk with its quota, NIC, the student's port, GPUs, mounts."""
    found: dict[str, dict[str, str]] = {
        "root": {"type": "disk", "path": "/", "pool": cluster.pool, "size": str(user.limits.disk)},
        "eth0": {
            "type": "nic",
            "network": reg.bridge,
            "name": "eth0",
            "ipv4.address": user.address,
            # Its own MAC and address only: no neighbour's address, no neighbour's forward.
            "security.mac_filtering": "true",
            "security.ipv4_filtering": "true",
            "security.ipv6_filtering": "true",
            # An isolated bridge port talks to the member (gateway, NAT) only,
            # never to another container's port, unless the lab allows it.
            "security.port_isolation": "false" if reg.allow_container_traffic else "true",
        },
        SSH_DEVICE: ssh_proxy(user),
    }
    for number in gpu_numbers(user.gpus, cluster.members[user.member]):
        found[f"gpu{number}"] = {"type": "gpu", "gputype": "physical", "id": str(number)}
    for index, mount in enumerate(user.mounts):
        found[f"mount{index}"] = {
            "type": "disk",
            "source": mount.source,
            "path": mount.target,
            "readonly": "true" if mount.readonly else "false",
        }
    return found


HOME_VOLUME_SUFFIX = "-home"


def home_volume(container: str) -> str:
    """The custom volume a rebuild keeps the student's home on meanwhile (lxdrebuild.py)."""
    return container + HOME_VOLUME_SUFFIX


def ssh_proxy(user: User) -> dict[str, str]:
    """The member listens on the student's port and carries each connection to the container's sshd."""
    return {
        "type": "proxy",
        "listen": f"tcp:0.0.0.0:{user.port}",
        "connect": "tcp:127.0.0.1:22",
        "bind": "host",
    }


def body(reg: Registry, user: User) -> dict[str, object]:
    """The POST /1.0/instances body making the student's container from the registry's image."""
    assert reg.cluster is not None
    return {
        "name": user.container,
        "type": "container",
        "source": {"type": "image", "alias": reg.template},
        "profiles": list(PROFILES),
        "config": config(reg, user),
        "devices": devices(reg, user, reg.cluster),
    }


ENGINE_KEYS = ("volatile.", "image.")  # config the engine keeps for itself; never the registry's


def managed(config_: dict[str, str], devices_: dict[str, dict[str, str]]) -> str:
    """The part of an instance the registry decides, as canonical text (apply compares these).

    The engine's own keys (volatile.*, image.*) are left out: it sets them.
    """
    import json

    ours = {key: value for key, value in config_.items() if not key.startswith(ENGINE_KEYS)}
    return json.dumps({"config": ours, "devices": devices_}, sort_keys=True)


def wanted(reg: Registry, user: User) -> str:
    """managed() of what the registry asks for the user's container."""
    assert reg.cluster is not None
    return managed(config(reg, user), devices(reg, user, reg.cluster))


def interfaces(reg: Registry, user: User) -> str:
    """/etc/network/interfaces inside: the registry's address, the member's bridge as the gateway.

    The engine's filters drop anything from another address, so the
    container gains nothing by changing it.
    """
    return (
        "auto lo\niface lo inet loopback\n\n"
        f"auto eth0\niface eth0 inet static\n    address {user.address}/{reg.subnet.prefixlen}\n"
        f"    gateway {reg.gateway}\n"
    )


def account_lines(name: str, uid: int, days: int) -> dict[str, str]:
    """The student's lines in passwd, group, shadow and gshadow (key login only, no password)."""
    return {
        "/etc/passwd": f"{name}:x:{uid}:{uid}::/home/{name}:/bin/bash\n",
        "/etc/group": f"{name}:x:{uid}:\n",
        "/etc/shadow": f"{name}:*:{days}:0:99999:7:::\n",
        "/etc/gshadow": f"{name}:!::\n",
    }


def with_line(text: str, line: str) -> str:
    """text with line appended, or text unchanged if an entry of the same name is there."""
    name = line.split(":", 1)[0] + ":"
    if any(existing.startswith(name) for existing in text.splitlines()):
        return text
    return text + ("" if text.endswith("\n") or not text else "\n") + line
