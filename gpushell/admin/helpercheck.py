"""doctor's look at the resident helper (helper/server.py): is one answering, and with today's code?

A server started before gpushell was last installed goes on answering
students with the code it imported then, a fixed bug included: doctor
fails it until it is restarted (`make install` and the package restart
it themselves where systemd runs it).
"""

from __future__ import annotations

import dataclasses
import os
import socket

from ..helper.server import peer_credentials
from .findings import Finding

FIX = "systemctl enable --now gpushell-helper.service (without systemd: gpushell-helper(8))"
RESTART = "systemctl restart gpushell-helper.service"


@dataclasses.dataclass(frozen=True)
class ServerFacts:
    pid: int
    started: float  # epoch seconds
    code_changed: float  # epoch seconds: when the installed package's newest file was put there


def gather(path: str) -> ServerFacts | None:
    """The server listening at path, or None when none answers."""
    import psutil

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return None
        pid = peer_credentials(probe)[0]  # a client's peer is the process that listens, not a child
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return None
    return ServerFacts(pid, started, newest_code())


def newest_code() -> float:
    """When the installed package last changed: its newest .py file's ctime.

    Not the mtime: dpkg gives each file the time the package was built, and
    pip the source's; the ctime is when the file was put in place.
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    newest = 0.0
    for directory, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                newest = max(newest, os.stat(os.path.join(directory, name)).st_ctime)
    return newest


def check(path: str, server: ServerFacts | None) -> list[Finding]:
    if server is None:
        missing = f"no resident helper answers on {path}: students' logins use sudo (slower)"
        return [Finding(True, missing, FIX, warning=True)]
    if server.started < server.code_changed:
        return [
            Finding(
                False,
                f"the resident helper (PID {server.pid}) started before gpushell was last installed: "
                "it answers students with the old code",
                RESTART,
            )
        ]
    return [
        Finding(True, f"the resident helper (PID {server.pid}) answers on {path} with the installed code")
    ]
