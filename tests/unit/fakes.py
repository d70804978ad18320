"""Stand-ins shared by the self-service unit tests (what cannot run here without a container)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gpushell import provision


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

    def unfreeze(self, name: str) -> None:
        self.calls.append("unfreeze")


def host_key_pairs(directory: Path) -> dict[str, tuple[bytes, bytes]]:
    """Real SSH host keys of every kind a container gets: kind -> (private, public)."""
    made = {}
    for kind in provision.HOST_KEY_KINDS:
        path = directory / kind
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "root@c-ann", "-f", path], check=True)
        made[kind] = (path.read_bytes(), Path(f"{path}.pub").read_bytes())
    return made
