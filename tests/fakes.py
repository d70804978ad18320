"""Stand-ins shared by the unit tests: the fake container backend, real host keys."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from gpushell.containers import provision
from gpushell.containers.backend import FROZEN, MISSING, RUNNING, STOPPED, ContainerDriver
from gpushell.core.errors import GpushellError
from gpushell.core.model import User
from gpushell.gpu.gpudevices import Node

# A cluster registry with one member and one student holding its one (stand-in) GPU:
# the unit tests of the cluster backend's verbs build their stand-in engines on it.
ONE_MEMBER_CLUSTER = """\
backend: lxd
bridge: labnet
subnet: 10.9.0.0/24
template: lab-image
lxd:
  members:
    m1: {address: 192.168.5.11, gpus: 1, memory: 64G}
users:
  alice: {port: 22001, ip: 10.9.0.2, idmap: 1000000, member: m1, gpus: [0]}
"""


class FakeBackend(ContainerDriver):
    """The unit tests' container backend: states in a dict, files under lxcpath, every change recorded.

    The contract suite (tests/contract) holds it to what LXC does.  A name
    not in `states` is in state `default`: a test about one container
    needs no set-up.  `calls` reads like `["stop c-ann", "start c-ann"]`.
    """

    def __init__(
        self,
        states: dict[str, str] | None = None,
        default: str = STOPPED,
        lxcpath: str = "/nonexistent",
        maybe_running: bool | None = None,
    ) -> None:
        self.states, self.default, self.lxcpath = dict(states or {}), default, lxcpath
        self.maybe_running = maybe_running  # None: whatever the state says
        self.calls: list[str] = []
        self.blocked: set[str] = set()
        self.devices: dict[str, set[str]] = {}  # container -> node names added live
        self.holding: dict[tuple[str, str], list[int]] = {}  # (container, node name) -> PIDs a test started

    def define(self, name: str) -> None:
        """A stopped container with a config and an empty rootfs, as provision leaves one."""
        os.makedirs(self.rootfs(name))
        Path(self.config_path(name)).write_text(f"# {name}\n")
        self.states[name] = STOPPED

    def directory(self, name: str) -> str:
        return os.path.join(self.lxcpath, name)

    def create(self, reg: object, user: User, keys: str) -> str:
        self.calls.append(f"create {user.container}")
        self.define(user.container)
        return self.directory(user.container)

    def destroy(self, reg: object, name: str) -> bool:
        self.calls.append(f"destroy {name}")
        existed = self.exists(name)
        shutil.rmtree(self.directory(name), ignore_errors=True)
        self.states[name] = MISSING
        return existed

    def exists(self, name: str) -> bool:
        return self.state(name) != MISSING

    def names(self) -> list[str]:
        return sorted(name for name, state in self.states.items() if state != MISSING)

    def state(self, name: str) -> str:
        return self.states.get(name, self.default)

    def may_be_running(self, name: str) -> bool:
        return self.state(name) != STOPPED if self.maybe_running is None else self.maybe_running

    def running(self) -> set[str]:
        self.calls.append("running")
        return {name for name, state in self.states.items() if state in (RUNNING, FROZEN)}

    def _set(self, verb: str, name: str, state: str) -> None:
        self.calls.append(f"{verb} {name}")
        self.states[name] = state

    def start(self, name: str) -> bool:
        if not self.exists(name):
            raise GpushellError("your container does not exist", f"container {name} is not defined")
        if name in self.blocked:
            raise GpushellError("your container failed to start", f"{name}: starts are blocked")
        started = self.state(name) == STOPPED
        self._set("start", name, self.state(name) if not started else RUNNING)
        return started

    def stop(self, name: str) -> None:
        self._set("stop", name, STOPPED if self.exists(name) else MISSING)
        self.devices.pop(name, None)  # what was added live goes with the running container

    def freeze(self, name: str) -> None:
        self._set("freeze", name, FROZEN if self.state(name) == RUNNING else self.state(name))

    def unfreeze(self, name: str) -> None:
        self._set("unfreeze", name, RUNNING if self.state(name) == FROZEN else self.state(name))

    def info(self, name: str) -> tuple[str, int | None]:
        state = self.state(name)
        return state, INIT_PID if state in (RUNNING, FROZEN) else None

    def cgroup_frozen(self, pid: int) -> bool:
        return pid == INIT_PID and FROZEN in self.states.values()

    def block_start(self, name: str) -> StartBlock:
        if self.state(name) != STOPPED:
            raise GpushellError("your container is starting or running; try again in a moment")
        self.calls.append(f"block-start {name}")
        self.blocked.add(name)
        return StartBlock(self, name)

    def attach(self, name: str, command: list[str]) -> list[str]:
        return ["env", "-i", *command]  # no container here: the command, environment cleared

    def _live(self, name: str) -> bool:
        return self.state(name) in (RUNNING, FROZEN)

    def add_device(self, name: str, source: str, node: Node) -> None:
        self.calls.append(f"add-device {name} {node.name}")
        if self._live(name):  # stopped: its config gives it the node at its next start
            self.devices.setdefault(name, set()).add(node.name)

    def remove_device(self, name: str, node: Node) -> None:
        self.calls.append(f"remove-device {name} {node.name}")
        self.devices.get(name, set()).discard(node.name)

    def device_holders(self, name: str, node: Node) -> list[int]:
        """The PIDs a test put in `holding` for this node, those still alive (real processes)."""
        if not self._live(name):
            return []
        return sorted(pid for pid in self.holding.get((name, node.name), []) if alive(pid))


def alive(pid: int) -> bool:
    """Whether pid is a process that has not ended (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            state = stream.read().rpartition(")")[2].split()[:1]
    except OSError:
        return False
    return state not in (["Z"], ["X"], [])


INIT_PID = 4242


class StartBlock:
    """What the fake's block_start returns: starts refused until close()."""

    def __init__(self, backend: FakeBackend, name: str) -> None:
        self.backend, self.name = backend, name

    def close(self) -> None:
        self.backend.calls.append(f"unblock-start {self.name}")
        self.backend.blocked.discard(self.name)


def host_key_pairs(directory: Path) -> dict[str, tuple[bytes, bytes]]:
    """Real SSH host keys of every kind a container gets: kind -> (private, public)."""
    made = {}
    for kind in provision.HOST_KEY_KINDS:
        path = directory / kind
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "root@c-ann", "-f", path], check=True)
        made[kind] = (path.read_bytes(), Path(f"{path}.pub").read_bytes())
    return made
