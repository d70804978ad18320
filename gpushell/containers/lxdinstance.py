"""A student's container as the LXD/Incus engine describes it: config keys and devices (pure).

The lab's policy is carried by the engine's own controls, never by files
written behind its back: the kernel limits as `limits.*`, the isolated id
range as `security.idmap.*`, the address and anti-spoofing filters on the
NIC, the student's port as a proxy device on the member, the GPUs as
`gpu` devices and the NAS as disk devices.

A GPU is numbered by its /dev/nvidiaN on its member, as on one host, and
given by its PCI address (`pci`), which the member's /1.0/resources lists
beside it.  Never by `id`: that is the DRM card number, which is not the
/dev/nvidiaN (a server's on-board graphics is often card 0) and which a
compute GPU without the nvidia-drm module does not have at all (seen on a
real H200: tests/data/real_gpu); LXD 5.0.2 and Incus give such a card by
`pci` all the same.
"""

from __future__ import annotations

import re

from ..core.errors import GpushellError
from ..core.model import Cluster, Registry, User
from ..core.placement import gpu_numbers
from ..core.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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


class GpuCard(Value):
    """A member's NVIDIA GPU as its engine lists it: its PCI address, and what it is for a person."""

    __slots__ = ("pci", "what")

    def __init__(self, pci: str, what: str) -> None:
        self.pci, self.what = pci, what


Cards = dict[int, GpuCard]  # a member's GPUs by /dev/nvidiaN number
NVIDIA_NODE = re.compile(r"nvidia([0-9]+)")  # the card's node, /dev/nvidiaN


def gpu_cards(resources: object) -> Cards:
    """The NVIDIA GPUs a member's /1.0/resources lists, by their /dev/nvidiaN number.

    The engine reads the number from the driver (its `nvidia.card_name`);
    a card without it (another vendor's, or no NVIDIA driver bound) is no
    GPU gpushell can give.
    """
    gpu = resources.get("gpu") if isinstance(resources, dict) else None
    listed = gpu.get("cards") if isinstance(gpu, dict) else None
    found: Cards = {}
    for card in listed if isinstance(listed, list) else []:
        nvidia = card.get("nvidia") if isinstance(card, dict) else None
        if not isinstance(nvidia, dict):
            continue
        node = NVIDIA_NODE.fullmatch(str(nvidia.get("card_name") or ""))
        pci = card.get("pci_address")
        if node is None or not isinstance(pci, str):
            continue
        model = nvidia.get("model") or f"{card.get('vendor', '?')} {card.get('product', '?')}"
        found[int(node[1])] = GpuCard(pci, f"{model} at {pci}")
    return found


def gpu_devices(user: User, cluster: Cluster, cards: Cards) -> dict[str, dict[str, str]]:
    """One `gpu` device per GPU of the student's, by the PCI address its member lists for it."""
    return {
        f"gpu{number}": gpu_device(user, number, cards)
        for number in gpu_numbers(user.gpus, cluster.members[user.member])
    }


LOAN_DEVICE = "loan-gpu"  # a lent GPU's device: gpushell's lending adds and removes it, apply leaves it


def loan_devices(user: User, gpus: tuple[int, ...], cards: Cards) -> dict[str, dict[str, str]]:
    """The devices of GPUs lent to the student, on their member."""
    return {f"{LOAN_DEVICE}{number}": gpu_device(user, number, cards) for number in gpus}


def gpu_device(user: User, number: int, cards: Cards) -> dict[str, str]:
    """GPU number (its /dev/nvidiaN) of the student's member, by the PCI address the member lists."""
    card = cards.get(number)
    if card is None:
        listed = ", ".join(f"{n}: {c.what}" for n, c in sorted(cards.items())) or "none"
        raise GpushellError(
            "your container's GPU is missing on its server; ask your administrator",
            f"member {user.member} lists no GPU {number} (/dev/nvidia{number}) for {user.name}; "
            f"its GPUs: {listed}",
        )
    return {"type": "gpu", "gputype": "physical", "pci": card.pci}


def devices(reg: Registry, user: User, cluster: Cluster, cards: Cards) -> dict[str, dict[str, str]]:
    """The instance's devices: root disk with its quota, NIC, the student's port, GPUs, mounts.

    cards: the GPUs of the student's member (gpu_cards), when the student has any.
    """
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
        **gpu_devices(user, cluster, cards),
    }
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


def body(reg: Registry, user: User, cards: Cards) -> dict[str, object]:
    """The POST /1.0/instances body making the student's container from the registry's image."""
    assert reg.cluster is not None
    return {
        "name": user.container,
        "type": "container",
        "source": {"type": "image", "alias": reg.template},
        "profiles": list(PROFILES),
        "config": config(reg, user),
        "devices": devices(reg, user, reg.cluster, cards),
    }


ENGINE_KEYS = ("volatile.", "image.")  # config the engine keeps for itself; never the registry's


def managed(config_: dict[str, str], devices_: dict[str, dict[str, str]]) -> str:
    """The part of an instance the registry decides, as canonical text (apply compares these).

    The engine's own keys (volatile.*, image.*) are left out: it sets them;
    so are lent GPUs' devices, which the loans decide, and the root disk's
    pool, which only `storage migrate` changes (the engine moves the disk).
    """
    import json

    ours = {key: value for key, value in config_.items() if not key.startswith(ENGINE_KEYS)}
    kept = {name: device for name, device in devices_.items() if not name.startswith(LOAN_DEVICE)}
    if "root" in kept:
        kept["root"] = {key: value for key, value in kept["root"].items() if key != "pool"}
    return json.dumps({"config": ours, "devices": kept}, sort_keys=True)


def root_pool(instance: dict[str, Any]) -> str:
    """The storage pool the instance's root disk is on ("" when the engine's answer names none)."""
    devices_ = instance.get("expanded_devices") or instance.get("devices") or {}
    return str((devices_.get("root") or {}).get("pool") or "")


def wanted(reg: Registry, user: User, cards: Cards) -> str:
    """managed() of what the registry asks for the user's container (cards: its member's GPUs)."""
    assert reg.cluster is not None
    return managed(config(reg, user), devices(reg, user, reg.cluster, cards))


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


def host_uids(instance: dict[str, object]) -> tuple[int, int] | None:
    """The host uid range (first, count) the engine maps a running instance's uids to, or None.

    `volatile.idmap.current` is the engine's own record (a JSON list of
    maps); the container's root cannot write it.
    """
    import json

    config = instance.get("config")
    text = config.get("volatile.idmap.current") if isinstance(config, dict) else None
    try:
        maps = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    for entry in maps if isinstance(maps, list) else []:
        if isinstance(entry, dict) and entry.get("Isuid") is True:
            first, count = entry.get("Hostid"), entry.get("Maprange")
            if isinstance(first, int) and isinstance(count, int) and first > 0 and count > 0:
                return first, count
    return None
