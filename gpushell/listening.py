"""Whether a container's sshd listens, read from its network namespace's socket table.

A TCP connect would tell as well, but sshd forks a child for every
connection, and one that closes before the key exchange it logs as an
error ("kex_exchange_identification: Connection closed by remote host"):
a line in the student's journal at every login, and right after a start
a child process competing with the student's own first connection.  The
kernel's table of the container's sockets, /proc/PID/net/tcp of its init,
says the same without touching sshd.
"""

from __future__ import annotations

import os

SSH_PORT = 22
LISTEN = "0A"  # TCP_LISTEN in the tables' `st` column
MAX_TABLE = 1 << 16  # the kernel lists listening sockets first: this is plenty


def listening(table: str, port: int) -> bool:
    """Whether /proc/net/tcp or tcp6 text shows a socket listening on port (pure)."""
    suffix = f":{port:04X}"
    for line in table.splitlines()[1:]:  # after the header
        fields = line.split(None, 4)
        if len(fields) > 3 and fields[3] == LISTEN and fields[1].endswith(suffix):
            return True
    return False


def _namespace(pid: int | str) -> tuple[int, int]:
    info = os.stat(f"/proc/{pid}/ns/net")
    return info.st_dev, info.st_ino


def listens(pid: int, port: int = SSH_PORT) -> bool:
    """Whether something listens on port in the network namespace of process pid.

    False when the process is gone, and when it shares this process's
    namespace: a wrong PID must never find the host's own sshd.
    """
    try:
        if _namespace(pid) == _namespace("self"):
            return False
    except OSError:
        return False
    for table in ("tcp", "tcp6"):  # sshd listens on both by default; either will do
        try:
            with open(f"/proc/{pid}/net/{table}", "rb") as stream:
                text = stream.read(MAX_TABLE).decode("ascii", "replace")
        except OSError:
            continue
        if listening(text, port):
            return True
    return False


def start_time(pid: int) -> str | None:
    """When process pid started (clock ticks since boot, /proc/PID/stat), or None if it is gone.

    With the PID it names one process for the whole boot: a PID used again
    by a later process has a later start.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            text = stream.read(4096).decode("ascii", "replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None
