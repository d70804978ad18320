"""Containers: the small interface the helper uses, and its LXC backend.

The helper and the menu know only `ContainerDriver`; a multi-host backend
(an Incus cluster, say) would implement the same few methods.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Protocol

from .errors import ExitStatus, GpushellError

RUNNING, STOPPED, MISSING = "RUNNING", "STOPPED", "MISSING"


class ContainerDriver(Protocol):
    def state(self, name: str) -> str: ...
    def start(self, name: str) -> None: ...
    def stop(self, name: str) -> None: ...


class LxcDriver:
    """Root-owned LXC containers under one lxcpath, through python-lxc."""

    def __init__(self, lxcpath: str) -> None:
        self.lxcpath = lxcpath

    def _container(self, name: str) -> Any:
        import lxc  # imported here: 2 ms, and only the helper needs it

        return lxc.Container(name, self.lxcpath)

    def state(self, name: str) -> str:
        container = self._container(name)
        return str(container.state) if container.defined else MISSING

    def start(self, name: str) -> None:
        container = self._container(name)
        if not container.defined:
            raise GpushellError("your container does not exist", f"container {name} is not defined")
        if container.running:
            return
        # close_fds: the monitor must not inherit the ssh session's pipes,
        # or the student's session would stay open until the container stops.
        if not container.start(close_fds=True) or not container.wait("RUNNING", 10):
            raise GpushellError(
                "your container failed to start",
                f"lxc start of {name} failed; see {self.lxcpath}/{name}/lxc.log",
            )

    def stop(self, name: str, timeout: int = 10) -> None:
        container = self._container(name)
        if not container.defined or not container.running:
            return
        # A clean shutdown first (its init flushes the journal), then a kill.
        if not container.shutdown(timeout) and not container.stop():
            raise GpushellError("your container failed to stop", f"lxc stop of {name} failed")


def wait_for_sshd(ip: str, timeout: float, port: int = 22) -> float:
    """Wait until an SSH server greets on ip:port; return the seconds it took.

    A TCP accept alone can come from a half-started sshd; the greeting line
    means a client can log in now, so only then is the container "ready".
    """
    began = time.monotonic()
    deadline = began + timeout
    while True:
        try:
            with socket.create_connection((ip, port), timeout=1.0) as conn:
                if conn.recv(4).startswith(b"SSH-"):
                    return time.monotonic() - began
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise GpushellError(
                f"your container did not answer on port {port} within {timeout:.0f} s",
                f"sshd at {ip}:{port} not ready after {timeout} s",
                ExitStatus.TIMEOUT,
            )
        time.sleep(0.05)
