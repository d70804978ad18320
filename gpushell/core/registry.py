"""The registry, /etc/gpushell.yaml: parse and validate, nothing else.

Pure: text in, `Registry` out, or a `RegistryError` whose lines each name the
file, the line and the field (``/etc/gpushell.yaml:14: users.bob.port: 22001
is already used by alice``).  Reading and writing the file lives in registry_store.
"""

from __future__ import annotations

import bisect
import ipaddress
import re

import yaml

from .durations import duration_text, parse_duration
from .errors import ExitStatus, GpushellError
from .expiry import DEFAULT_CONTACT, parse_day
from .menu import DISABLEABLE
from .model import (
    DEFAULT_LIMITS,
    DEFAULT_STATUS_PAGE,
    Cluster,
    GpuSpec,
    Lending,
    Limits,
    LoanLimits,
    Member,
    Mount,
    Registry,
    StatusPage,
    User,
)

TYPE_CHECKING = False  # `typing` (~3 ms) for mypy only
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "GpuSpec",
    "Lending",
    "Limits",
    "LoanLimits",
    "Mount",
    "Registry",
    "RegistryError",
    "User",
    "parse",
]

try:  # the C loader is several times faster, and this runs on every login
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader

USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
BRIDGE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
CHAIN_NAME = re.compile(r"[A-Z][A-Z0-9_-]{0,27}")
HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
PORT_RANGE = re.compile(r"(\d{1,5})-(\d{1,5})")
RESERVED_USERS = frozenset({"root", "daemon", "bin", "sys", "sync", "nobody", "sshd"})
DRIVER_MODE = re.compile(r"host|container")
MIN_IDMAP_SIZE = 65536  # a Debian userland needs uid 65534 (nobody)


class RegistryError(GpushellError):
    """One or more problems, each a `file:line: field: message` line."""

    def __init__(self, problems: list[str]) -> None:
        text = "\n".join(problems)
        super().__init__(text, text, ExitStatus.CONFIG)
        self.problems = problems


SETTINGS_DEFAULTS: dict[str, Any] = {
    "hostname": "localhost",
    "bridge": "lxcbr0",
    "subnet": "10.0.3.0/24",
    "ports": "22001-22999",
    "template": "gpushell-bookworm",
    "lxcpath": "/var/lib/lxc",
    "chain": "GPUSHELL",
    "idmap": {"start": 1000000, "size": MIN_IDMAP_SIZE},
    "gpus": "none",
    "gpu_devices": "/dev",
    "driver": "host",
    "driver_root": "/",
    "driver_installer": "",
    "mounts": [],
    "start_timeout": 60,
    "idle_timeout": 3600,
    "masquerade": True,
    "snapshot_limit": 3,
    "disabled_actions": [],
    "limits": {},
    "allow_container_traffic": False,
    "egress_deny": [],
    "storage": "dir",
    "pool_file": "",
    "lending": None,  # no lending: this lab lends no GPUs
    "expire_grace": "30d",
    "contact": DEFAULT_CONTACT,
    "status_page": {},  # written, naming nobody (model.StatusPage)
    "backend": "lxc",
    "lxd": None,  # the cluster's members and project, with `backend: lxd` only (model.Cluster)
    "users": {},
}
USER_KEYS = frozenset(
    {
        "port", "ip", "idmap", "container", "gpus", "mounts", "autostart", "snapshot_limit", "limits",
        "lending", "expires", "member",
    }
)  # fmt: skip
MAX_SNAPSHOTS = 100
MOUNT_KEYS = frozenset({"source", "target", "mode"})
LIMIT_KEYS = frozenset({"memory", "cpus", "pids", "disk"})
SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
MIN_MEMORY = 64 * 2**20  # below this a Debian userland with sshd does not start
MAX_MEMORY = 2**50
MIN_CPUS, MAX_CPUS = 0.01, 1024.0
MIN_PIDS, MAX_PIDS = 32, 4194304
MIN_DISK = 256 * 2**20  # a quota below the first boot's own writes only locks the student out
STORAGE_KINDS = ("dir", "btrfs")
STATUS_PAGE_KEYS = frozenset({"enabled", "names"})
LENDING_KEYS = frozenset({"gpus", "max_per_student", "max_duration", "idle_return", "notify_command"})
USER_LENDING_KEYS = frozenset({"max_per_student", "max_duration"})
BACKENDS = ("lxc", "lxd")
LXD_KEYS = frozenset({"project", "port", "members", "credentials", "pool"})
MEMBER_KEYS = frozenset({"address", "gpus", "memory"})
LXD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")  # a cluster member's or project's name
MAX_GPUS = 1024  # GPU numbers are below it (_gpus)
MIN_LOAN, MAX_LOAN = 60, 365 * 86400  # seconds: a loan's shortest and longest maximum
MAX_NOTIFY_ARGS, MAX_NOTIFY_ARG = 32, 1024
MAX_GRACE = 3650 * 86400  # ten years: longer is keeping the account, not a grace period
MAX_CONTACT = 200  # characters: one line of a refusal


class _Parser:
    """Walks the YAML node tree so every value keeps its line number."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.problems: list[str] = []
        self.loader = _Loader(text)

    def problem(self, node: yaml.Node | None, field: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        where = f"{field}: " if field else ""
        self.problems.append(f"{self.path}:{line}: {where}{message}")

    def value(self, node: yaml.Node) -> Any:
        return self.loader.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, field: str, allowed: frozenset[str]) -> dict[str, yaml.Node]:
        """The keys of a mapping node, rejecting duplicates and unknown keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, field, "must be a mapping")
            return {}
        items: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            # The key as written: a user named `no` or `null` stays that name
            # instead of becoming YAML 1.1's False or None.
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(self.value(key_node))
            where = f"{field}.{key}" if field else key
            if key in items:
                self.problem(key_node, where, "appears twice")
            elif allowed and key not in allowed:
                self.problem(key_node, where, "unknown key")
            else:
                items[key] = value_node
        return items

    def typed(
        self,
        node: yaml.Node,
        field: str,
        convert: Callable[[Any], Any],
        default: Any,
    ) -> Any:
        try:
            return convert(self.value(node))
        except (ValueError, TypeError) as exc:
            self.problem(node, field, str(exc))
            return default


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not a whole number")
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

    return convert


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return convert


def _absolute_path(value: Any) -> str:
    # No blanks: paths end up in fstab-style lxc.mount.entry lines.
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not an absolute path without blanks")
    if any(part == ".." for part in value.split("/")):
        raise ValueError(f"{value!r} must not contain '..'")
    return value


def _optional_path(value: Any) -> str:
    return "" if value in ("", None) else _absolute_path(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 86400:
        raise ValueError(f"{value!r} is not a number of seconds between 0 and 86400")
    return float(value)


def _actions(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(word, str) for word in value):
        raise ValueError("must be a list of action words")
    unknown = [word for word in value if word not in DISABLEABLE]
    if unknown:
        raise ValueError(f"{', '.join(map(repr, unknown))}: can turn off only {', '.join(DISABLEABLE)}")
    return tuple(dict.fromkeys(value))


def _port_range(value: Any) -> tuple[int, int]:
    match = PORT_RANGE.fullmatch(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a range like 22001-22999")
    first, last = int(match[1]), int(match[2])
    if not 1024 <= first <= last <= 65535:
        raise ValueError(f"{value!r} must lie within 1024-65535, low end first")
    return first, last


def _subnet(value: Any) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IPv4 subnet ({exc})") from None
    if net.num_addresses < 4:
        raise ValueError(f"{value} is too small for a bridge and containers")
    return net


def _ipv4(value: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address") from None


def size_in_bytes(value: Any) -> int:
    """`16G`, `512M`, `1.5T` or a plain number of bytes; units are powers of 1024."""
    match = SIZE.fullmatch(str(value).strip()) if not isinstance(value, bool) else None
    if match is None:
        raise ValueError(f"{value!r} is not a size like 16G or 512M")
    return int(float(match[1]) * SIZE_UNITS[match[2].upper()])


def size_text(size: int) -> str:
    """A size as the registry writes it: `16G`, `512M`, `1.5G` (pure)."""
    for unit in ("T", "G", "M", "K"):
        scaled = size / SIZE_UNITS[unit]
        if scaled >= 1:
            return f"{scaled:.0f}{unit}" if scaled.is_integer() else f"{scaled:.3g}{unit}"
    return str(size)


def _memory(value: Any) -> int:
    size = size_in_bytes(value)
    if not MIN_MEMORY <= size <= MAX_MEMORY:
        raise ValueError(f"{value!r} must be between 64M and 1024T")
    return size


def _cpus(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_CPUS <= value <= MAX_CPUS:
        raise ValueError(f"{value!r} is not a number of CPUs between {MIN_CPUS} and {MAX_CPUS:.0f}")
    return float(value)


def _disk(value: Any) -> int:
    size = size_in_bytes(value)
    if not MIN_DISK <= size <= MAX_MEMORY:
        raise ValueError(f"{value!r} must be between 256M and 1024T")
    return size


def _storage(value: Any) -> str:
    if value not in STORAGE_KINDS:
        raise ValueError(f"{value!r} is not a storage kind ({' or '.join(STORAGE_KINDS)})")
    return str(value)


LIMIT_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "memory": _memory,
    "cpus": _cpus,
    "pids": _integer(MIN_PIDS, MAX_PIDS),
    "disk": _disk,
}


def _backend(value: Any) -> str:
    if value not in BACKENDS:
        raise ValueError(f"{value!r} must be one of {', '.join(BACKENDS)}")
    return str(value)


def _gpu_numbers(value: Any) -> tuple[int, ...]:
    """A member's GPUs: a list of numbers, or how many (numbered from 0)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_GPUS:
        return tuple(range(value))
    spec = _gpus(value)
    if isinstance(spec, tuple):
        return spec
    if spec == "all":
        raise ValueError("must list the member's GPU numbers, or say how many")
    return ()


def _cidrs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of IPv4 networks like 192.168.10.0/24")
    networks = []
    for item in value:
        try:
            networks.append(str(ipaddress.IPv4Network(str(item), strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IPv4 network like 192.168.10.0/24") from None
    return tuple(dict.fromkeys(networks))


def _gpus(value: Any) -> GpuSpec:
    if value in ("all", "none"):
        return str(value)
    if isinstance(value, list) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1024 for i in value
    ):
        if len(set(value)) != len(value):
            raise ValueError("lists a GPU twice")
        return tuple(sorted(value))
    raise ValueError(f"{value!r} must be all, none or a list of GPU numbers")


def _lendable_gpus(value: Any) -> GpuSpec:
    if value == "none" or value == []:
        raise ValueError("lends no GPU: leave lending out to lend none")
    return _gpus(value)


def _loan_duration(low: int) -> Callable[[Any], int]:
    """A duration from MIN_LOAN to MAX_LOAN; also 0 (never) when low is 0."""

    def convert(value: Any) -> int:
        seconds = parse_duration(value, never=low == 0)
        if (seconds or low) and not MIN_LOAN <= seconds <= MAX_LOAN:
            never = " (or 0: never)" if low == 0 else ""
            span = f"{duration_text(MIN_LOAN)} and {duration_text(MAX_LOAN)}"
            raise ValueError(f"{value!r} must be between {span}{never}")
        return seconds

    return convert


def _notify_command(value: Any) -> tuple[str, ...]:
    """An argv (a list, or a string split at blanks, no quoting): an absolute program, never a shell line."""
    argv = value.split() if isinstance(value, str) else value
    if not isinstance(argv, list) or not argv or not all(isinstance(arg, str) for arg in argv):
        raise ValueError("must be a command: a list of words, or one line of words, starting with a program")
    _absolute_path(argv[0])
    if len(argv) > MAX_NOTIFY_ARGS or any(len(arg) > MAX_NOTIFY_ARG for arg in argv):
        raise ValueError(f"is longer than {MAX_NOTIFY_ARGS} words of at most {MAX_NOTIFY_ARG} characters")
    if any(not arg or not arg.isprintable() for arg in argv):
        raise ValueError("has an empty word or one with a control character")
    return tuple(argv)


def _expires(value: Any) -> tuple[int, int, int]:
    """A day, YYYY-MM-DD, as written (unquoted or quoted): never YAML's own reading of a timestamp."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a date like 2025-06-30")
    return parse_day(value)


def _grace(value: Any) -> int:
    """A duration like 30d or 12h (0: removable on the expiry day itself)."""
    seconds = parse_duration(value, never=True)
    if seconds > MAX_GRACE:
        raise ValueError(f"{value!r} is longer than {duration_text(MAX_GRACE)}")
    return seconds


def _contact(value: Any) -> str:
    """Whom expired students ask: one printable line, bounded, naming no host path."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be one line of text, like 'Dr. Rossi, room 3.14, rossi@lab.example'")
    if not value.isprintable() or len(value) > MAX_CONTACT:
        raise ValueError(f"must be one line of at most {MAX_CONTACT} printable characters")
    if any(word.strip("'\"`([{<:,;").startswith("/") for word in value.split()):
        # The helper replaces any student message with a host path in it (verbs.without_host_paths).
        raise ValueError("must not contain a word starting with / (students are never shown a path)")
    return value.strip()


def parse(text: str, path: str) -> Registry:
    """Parse and validate registry text; raise RegistryError listing every problem."""
    try:
        parser = _Parser(path, text)
        root = parser.loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        reason = getattr(exc, "problem", None) or str(exc)
        raise RegistryError([f"{path}:{line}: not valid YAML: {reason}"]) from None
    if root is None:
        raise RegistryError([f"{path}:1: the registry is empty"])
    try:
        registry = _Validator(parser).registry(root)
    except yaml.YAMLError as exc:  # e.g. an unknown !tag, found while constructing a value
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise RegistryError([f"{path}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if parser.problems or registry is None:
        raise RegistryError(parser.problems)
    return registry


class _Validator:
    def __init__(self, parser: _Parser) -> None:
        self.p = parser

    def registry(self, root: yaml.Node) -> Registry | None:
        p = self.p
        nodes = p.mapping(root, "", frozenset(SETTINGS_DEFAULTS))
        if p.problems:
            return None

        def setting(key: str, convert: Callable[[Any], Any]) -> Any:
            default = SETTINGS_DEFAULTS[key]
            if key not in nodes:
                return convert(default)
            return p.typed(nodes[key], key, convert, convert(default))

        idmap_start, idmap_size = self.idmap_settings(nodes.get("idmap"))
        settings = {
            "hostname": setting("hostname", _matching(HOST_NAME, "host name")),
            "bridge": setting("bridge", _matching(BRIDGE_NAME, "bridge name")),
            "subnet": setting("subnet", _subnet),
            "ports": setting("ports", _port_range),
            "template": setting("template", _matching(CONTAINER_NAME, "container name")),
            "lxcpath": setting("lxcpath", _absolute_path),
            "chain": setting("chain", _matching(CHAIN_NAME, "iptables chain name")),
            "gpus": setting("gpus", _gpus),
            "gpu_devices": setting("gpu_devices", _absolute_path),
            "driver": setting("driver", _matching(DRIVER_MODE, "driver mode (host or container)")),
            "driver_root": setting("driver_root", _absolute_path),
            "driver_installer": setting("driver_installer", _optional_path),
            "start_timeout": setting("start_timeout", _positive_number),
            "idle_timeout": setting("idle_timeout", _integer(0, 7 * 86400)),
            "masquerade": setting("masquerade", _boolean),
            "snapshot_limit": setting("snapshot_limit", _integer(0, MAX_SNAPSHOTS)),
            "disabled_actions": setting("disabled_actions", _actions),
            "allow_container_traffic": setting("allow_container_traffic", _boolean),
            "egress_deny": setting("egress_deny", _cidrs),
            "storage": setting("storage", _storage),
            "pool_file": setting("pool_file", _optional_path),
            "expire_grace": setting("expire_grace", _grace),
            "contact": setting("contact", _contact),
            "backend": setting("backend", _backend),
        }
        limits = (
            self.limits(nodes["limits"], "limits", DEFAULT_LIMITS) if "limits" in nodes else DEFAULT_LIMITS
        )
        mounts = self.mounts(nodes["mounts"], "mounts") if "mounts" in nodes else ()
        lending = self.lending(nodes["lending"]) if "lending" in nodes else None
        status_page = (
            self.status_page(nodes["status_page"]) if "status_page" in nodes else DEFAULT_STATUS_PAGE
        )
        cluster = self.cluster(nodes.get("lxd"), settings["backend"], root)
        if settings["backend"] == "lxd" and settings["egress_deny"]:
            p.problem(
                nodes["egress_deny"], "egress_deny",
                "with backend: lxd, deny those networks with a network ACL on the cluster's bridge (README)",
            )  # fmt: skip
        if settings["backend"] == "lxd" and settings["storage"] != "dir":
            p.problem(nodes["storage"], "storage", "with backend: lxd the cluster's storage pool keeps trees")
        defaults = Registry(
            path=p.path,
            cluster=cluster,
            idmap_start=idmap_start,
            idmap_size=idmap_size,
            mounts=mounts,
            limits=limits,
            lending=lending,
            status_page=status_page,
            users={},
            **settings,
        )
        users = self.users(nodes.get("users"), defaults)
        return defaults.with_users(users)

    def cluster(self, node: yaml.Node | None, backend: str, root: yaml.Node) -> Cluster | None:
        """The `lxd:` mapping: wanted with `backend: lxd` (and at least one member), refused without."""
        p = self.p
        if backend != "lxd":
            if node is not None:
                p.problem(node, "lxd", "only with backend: lxd")
            return None
        if node is None:
            p.problem(root, "lxd", "backend: lxd needs an lxd: mapping with the cluster's members")
            return None
        keys = p.mapping(node, "lxd", LXD_KEYS)
        project = "gpushell"
        if "project" in keys:
            project = p.typed(keys["project"], "lxd.project", _matching(LXD_NAME, "project name"), project)
        port = p.typed(keys["port"], "lxd.port", _integer(1, 65535), 8443) if "port" in keys else 8443
        credentials = "/etc/gpushell/lxd"
        if "credentials" in keys:
            credentials = p.typed(keys["credentials"], "lxd.credentials", _absolute_path, credentials)
        pool = (
            p.typed(keys["pool"], "lxd.pool", _matching(LXD_NAME, "pool name"), "default")
            if "pool" in keys
            else "default"
        )
        members: dict[str, Member] = {}
        listed = p.mapping(keys["members"], "lxd.members", frozenset()) if "members" in keys else {}
        for name, entry in listed.items():
            field = f"lxd.members.{name}"
            if not LXD_NAME.fullmatch(name):
                p.problem(entry, field, f"{name!r} is not a cluster member's name")
                continue
            items = p.mapping(entry, field, MEMBER_KEYS)
            if "address" not in items:
                p.problem(entry, field, "needs address")
                continue
            address = p.typed(items["address"], f"{field}.address", _ipv4, None)
            gpus = p.typed(items["gpus"], f"{field}.gpus", _gpu_numbers, ()) if "gpus" in items else ()
            memory = p.typed(items["memory"], f"{field}.memory", _memory, 0) if "memory" in items else 0
            if address is not None:
                members[name] = Member(name, str(address), gpus, memory)
        if not members and not p.problems:
            p.problem(node, "lxd.members", "needs at least one member")
        return Cluster(members, project, port, credentials, pool)

    def idmap_settings(self, node: yaml.Node | None) -> tuple[int, int]:
        default = SETTINGS_DEFAULTS["idmap"]
        if node is None:
            return default["start"], default["size"]
        items = self.p.mapping(node, "idmap", frozenset({"start", "size"}))
        start = default["start"]
        size = default["size"]
        if "start" in items:
            start = self.p.typed(items["start"], "idmap.start", _integer(1, 2**31), start)
        if "size" in items:
            size = self.p.typed(items["size"], "idmap.size", _integer(MIN_IDMAP_SIZE, 2**31), size)
        return start, size

    def limits(self, node: yaml.Node | None, field: str, defaults: Limits) -> Limits:
        """A `limits:` mapping; keys it leaves out (or no mapping) keep the defaults' values."""
        if node is None:
            return defaults
        keys = self.p.mapping(node, field, LIMIT_KEYS)
        given = {
            key: self.p.typed(keys[key], f"{field}.{key}", LIMIT_CONVERTERS[key], getattr(defaults, key))
            for key in sorted(keys)
        }
        return defaults.replace(**given)

    def lending(self, node: yaml.Node) -> Lending:
        """The lab's `lending:` mapping; keys it leaves out keep Lending's defaults."""
        keys = self.p.mapping(node, "lending", LENDING_KEYS)
        default = Lending()
        converters: dict[str, Callable[[Any], Any]] = {
            "gpus": _lendable_gpus,
            "max_per_student": _integer(1, MAX_GPUS),
            "max_duration": _loan_duration(MIN_LOAN),
            "idle_return": _loan_duration(0),
            "notify_command": _notify_command,
        }
        given = {
            key: self.p.typed(keys[key], f"lending.{key}", converters[key], getattr(default, key))
            for key in sorted(keys)
        }
        return default.replace(**given)

    def status_page(self, node: yaml.Node) -> StatusPage:
        """The lab's `status_page:` mapping (enabled, names: true or false); keys left out keep defaults."""
        if not isinstance(node, yaml.MappingNode):
            self.p.problem(node, "status_page", "must be a mapping like {enabled: false} or {names: true}")
            return DEFAULT_STATUS_PAGE
        keys = self.p.mapping(node, "status_page", STATUS_PAGE_KEYS)
        given = {
            key: self.p.typed(keys[key], f"status_page.{key}", _boolean, getattr(DEFAULT_STATUS_PAGE, key))
            for key in sorted(keys)
        }
        return DEFAULT_STATUS_PAGE.replace(**given)

    def user_lending(self, node: yaml.Node, field: str, lab: Lending | None) -> LoanLimits | None:
        """A student's own `lending:` (max_per_student, max_duration); what it leaves out is the lab's."""
        keys = self.p.mapping(node, field, USER_LENDING_KEYS)
        if lab is None:
            self.p.problem(node, field, "this registry has no top-level lending: (no GPU is lent)")
            return None
        converters: dict[str, Callable[[Any], Any]] = {
            "max_per_student": _integer(0, MAX_GPUS),  # 0: this student borrows none
            "max_duration": _loan_duration(MIN_LOAN),
        }
        given = {
            key: self.p.typed(keys[key], f"{field}.{key}", converters[key], getattr(lab, key))
            for key in sorted(keys)
        }
        return LoanLimits(**{key: getattr(lab, key) for key in USER_LENDING_KEYS} | given)

    def mounts(self, node: yaml.Node, field: str) -> tuple[Mount, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self.p.problem(node, field, "must be a list of mounts")
            return ()
        result = []
        for index, item in enumerate(node.value):
            where = f"{field}[{index}]"
            keys = self.p.mapping(item, where, MOUNT_KEYS)
            missing = {"source", "target"} - set(keys)
            if missing:
                self.p.problem(item, where, f"needs {' and '.join(sorted(missing))}")
                continue
            source = self.p.typed(keys["source"], f"{where}.source", _absolute_path, "/")
            target = self.p.typed(keys["target"], f"{where}.target", _absolute_path, "/")
            mode = self.p.value(keys["mode"]) if "mode" in keys else "ro"
            if mode not in ("ro", "rw"):
                self.p.problem(keys["mode"], f"{where}.mode", f"{mode!r} must be ro or rw")
            result.append(Mount(source, target, readonly=mode != "rw"))
        return tuple(result)

    def users(self, node: yaml.Node | None, reg: Registry) -> dict[str, User]:
        p = self.p
        if node is None or (isinstance(node, yaml.ScalarNode) and p.value(node) is None):
            return {}
        entries = p.mapping(node, "users", frozenset())
        users: dict[str, User] = {}
        # One owner table per unique field; keys are ports, IPs or names.
        owner_of_port: dict[Any, str] = {}
        owner_of_ip: dict[Any, str] = {}
        owner_of_container: dict[Any, str] = {}
        idmaps: list[tuple[int, int, str]] = []  # (start, file order, name), sorted by start
        for name, entry in entries.items():
            field = f"users.{name}"
            if not USER_NAME.fullmatch(name) or name in RESERVED_USERS:
                p.problem(entry, field, f"{name!r} is not an allowed user name")
                continue
            before = len(p.problems)
            keys = p.mapping(entry, field, USER_KEYS)
            user = None if len(p.problems) > before else self.user(name, entry, keys, reg)
            if user is None:
                continue
            for value, owners, key in (
                (user.port, owner_of_port, "port"),
                (user.address, owner_of_ip, "ip"),
                (user.container, owner_of_container, "container"),
            ):
                other = owners.setdefault(value, name)
                if other != name:
                    at = keys.get(key, entry)
                    p.problem(at, f"{field}.{key}", f"{value} is already used by {other}")
            # Only starts closer than one range can overlap: a window of the
            # sorted starts, not every earlier user (1000 users: 2 ms, not 150).
            low = bisect.bisect_right(idmaps, (user.idmap - reg.idmap_size, len(idmaps)))
            high = bisect.bisect_left(idmaps, (user.idmap + reg.idmap_size, -1))
            for _start, _order, other in sorted(idmaps[low:high], key=lambda item: item[1]):
                at = keys.get("idmap", entry)
                p.problem(at, f"{field}.idmap", f"{user.idmap} overlaps the range of {other}")
            bisect.insort(idmaps, (user.idmap, len(idmaps), name))
            users[name] = user
        return users

    def user(self, name: str, entry: yaml.Node, keys: dict[str, yaml.Node], reg: Registry) -> User | None:
        p = self.p
        field = f"users.{name}"
        before = len(p.problems)
        missing = sorted({"port", "ip", "idmap"} - set(keys))
        if missing:
            p.problem(entry, field, f"needs {', '.join(missing)}")
            return None
        first, last = reg.ports
        port = p.typed(keys["port"], f"{field}.port", _integer(first, last), None)
        ip = p.typed(keys["ip"], f"{field}.ip", _ipv4, None)
        if ip is not None and (ip not in reg.subnet or ip in _reserved_addresses(reg)):
            p.problem(keys["ip"], f"{field}.ip", f"{ip} is not a free host address of {reg.subnet}")
        idmap = p.typed(
            keys["idmap"], f"{field}.idmap", _integer(reg.idmap_start, 2**32 - reg.idmap_size), None
        )
        container = name
        if "container" in keys:
            container = p.typed(
                keys["container"], f"{field}.container", _matching(CONTAINER_NAME, "container name"), name
            )
        if container == reg.template:
            p.problem(keys.get("container", entry), f"{field}.container", "is the template's name")
        gpus = p.typed(keys["gpus"], f"{field}.gpus", _gpus, reg.gpus) if "gpus" in keys else reg.gpus
        mounts = reg.mounts + (self.mounts(keys["mounts"], f"{field}.mounts") if "mounts" in keys else ())
        autostart = (
            p.typed(keys["autostart"], f"{field}.autostart", _boolean, False)
            if "autostart" in keys
            else False
        )
        snapshot_limit = reg.snapshot_limit
        if "snapshot_limit" in keys:
            limit = _integer(0, MAX_SNAPSHOTS)
            snapshot_limit = p.typed(keys["snapshot_limit"], f"{field}.snapshot_limit", limit, snapshot_limit)
        limits = (
            self.limits(keys["limits"], f"{field}.limits", reg.limits) if "limits" in keys else reg.limits
        )
        lending = (
            self.user_lending(keys["lending"], f"{field}.lending", reg.lending) if "lending" in keys else None
        )
        expires = None
        if "expires" in keys:  # the text as written: YAML would make `2025-06-31` an error of its own
            node = keys["expires"]
            written = node.value if isinstance(node, yaml.ScalarNode) else p.value(node)
            try:
                expires = _expires(written)
            except ValueError as exc:
                p.problem(node, f"{field}.expires", str(exc))
        member = self.member(keys.get("member"), entry, field, reg)
        if len(p.problems) > before or port is None or ip is None or idmap is None:
            return None
        user = User(
            name, port, ip, idmap, container, gpus, mounts, autostart, snapshot_limit, limits, lending,
            expires, member,
        )  # fmt: skip
        return user

    def member(self, node: yaml.Node | None, entry: yaml.Node, field: str, reg: Registry) -> str:
        """The cluster member a student's container is on: needed with backend lxd, refused on one host."""
        if reg.cluster is None:
            if node is not None:
                self.p.problem(node, f"{field}.member", "only with backend: lxd")
            return ""
        if node is None:
            self.p.problem(entry, f"{field}.member", "needs member: the cluster member holding the container")
            return ""
        name = self.p.value(node)
        if name not in reg.cluster.members:
            known = ", ".join(sorted(reg.cluster.members)) or "none"
            self.p.problem(node, f"{field}.member", f"{name!r} is not in lxd.members ({known})")
            return ""
        return str(name)


def _reserved_addresses(reg: Registry) -> set[ipaddress.IPv4Address]:
    return {reg.subnet.network_address, reg.subnet.broadcast_address, reg.gateway}
