"""Stand-ins shared by the self-service unit tests (what cannot run here without a container)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gpushell.containers import provision


class RecordingDriver:
    """One container's state, changed by start/stop like LXC would, every call recorded."""

    def __init__(self, state: str = "STOPPED") -> None:
        self.current = state
        self.calls: list[str] = []

    def state(self, name: str) -> str:
        return self.current

    def start(self, name: str) -> bool:
        self.calls.append("start")
        started, self.current = self.current != "RUNNING", "RUNNING"
        return started

    def stop(self, name: str) -> None:
        self.calls.append("stop")
        self.current = "STOPPED"

    def freeze(self, name: str) -> None:
        self.calls.append("freeze")
        if self.current == "RUNNING":
            self.current = "FROZEN"

    def unfreeze(self, name: str) -> None:
        self.calls.append("unfreeze")
        if self.current == "FROZEN":
            self.current = "RUNNING"

    # What hold.py asks: one init PID for as long as it runs, the freezer agreeing with the state.

    def info(self, name: str) -> tuple[str, int | None]:
        return self.current, INIT_PID if self.current in ("RUNNING", "FROZEN") else None

    def cgroup_frozen(self, pid: int) -> bool:
        return self.current == "FROZEN"

    def block_start(self, name: str) -> StartBlock:
        if self.current != "STOPPED":
            from gpushell.core.errors import GpushellError

            raise GpushellError("your container is starting or running; try again in a moment")
        self.calls.append("block-start")
        return StartBlock(self.calls)


INIT_PID = 4242


class StartBlock:
    """What a fake block_start returns: its close() recorded."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def close(self) -> None:
        self.calls.append("unblock-start")


def host_key_pairs(directory: Path) -> dict[str, tuple[bytes, bytes]]:
    """Real SSH host keys of every kind a container gets: kind -> (private, public)."""
    made = {}
    for kind in provision.HOST_KEY_KINDS:
        path = directory / kind
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "root@c-ann", "-f", path], check=True)
        made[kind] = (path.read_bytes(), Path(f"{path}.pub").read_bytes())
    return made
