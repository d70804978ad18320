"""What an admin should write into a registry from an earlier release (pure; doctor's `upgrade:` lines).

A registry any earlier release wrote still loads: no key has been renamed or
dropped (every release only added keys), and keys it lacks take today's
defaults.  Some of those defaults are worth a decision, so `advice` reads the
registry's own text to tell a key the admin never wrote from one written with
the default's value.  Choices are not advice: a lab without `lending:` lends
no GPUs, and says so by leaving it out.  Dir storage without a quota and
drop-ins older than this version are doctor's own checks.
"""

from __future__ import annotations

import yaml

from .model import DEFAULT_LIMITS, Registry
from .registry import size_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader

SEP = " — "  # between what is so and what to do, as in doctor's warning lines


def _keys(node: yaml.Node | None) -> dict[str, yaml.Node]:
    """A mapping node's keys as written; nothing for anything else."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {key.value: value for key, value in node.value if isinstance(key, yaml.ScalarNode)}


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def advice(text: str, reg: Registry) -> list[str]:
    """One line per change the admin should make, each `what — what to do`; [] when none.

    `text` is the registry's text and `reg` what it parsed to.
    """
    top = _keys(yaml.compose(text, Loader=_Loader))
    users = _keys(top.get("users"))
    own_limits = {name: _keys(_keys(entry).get("limits")) for name, entry in users.items()}
    found = []
    if "limits" not in top:
        without = sorted(name for name in reg.users if "limits" not in _keys(users.get(name)))
        who = f"{len(without)} of {len(reg.users)} students get" if without else "every new student gets"
        built_in = (
            f"memory {size_text(DEFAULT_LIMITS.memory)}, cpus {DEFAULT_LIMITS.cpus:g}, "
            f"pids {DEFAULT_LIMITS.pids}, disk {size_text(DEFAULT_LIMITS.disk)}"
        )
        found.append(
            f"no top-level `limits:`: {who} the built-in {built_in}{SEP}write `limits:` sized for this "
            "host (`gpushell-admin init` puts half its memory and CPUs there, but only in a new registry)"
        )
    elif reg.storage == "btrfs" and "disk" not in _keys(top["limits"]):
        without = sorted(name for name, keys in own_limits.items() if "disk" not in keys)
        if without:
            found.append(
                f"`limits:` has no disk: students without their own ({_names(without)}) get the built-in "
                f"quota {size_text(DEFAULT_LIMITS.disk)}{SEP}add `disk: SIZE` to `limits:`"
            )
    disk_written = ["top-level"] if "disk" in _keys(top.get("limits")) else []
    disk_written += sorted(name for name, keys in own_limits.items() if "disk" in keys)
    if reg.storage == "dir" and disk_written:
        found.append(
            f"disk limits written ({_names(disk_written)}) are not enforced on dir storage{SEP}"
            f"a quota needs btrfs: put {reg.lxcpath} on btrfs, then `gpushell-admin storage migrate`"
        )
    if "allow_container_traffic" not in top:
        deny = "" if "egress_deny" in top else "; `egress_deny:` lists networks no container may reach"
        found.append(
            "no `allow_container_traffic:` (written before network isolation): containers can no longer "
            "connect to each other (only through the forwarded ports) nor to this host's services"
            f"{SEP}write `allow_container_traffic: true` if the lab needs it{deny}"
        )
    return found
