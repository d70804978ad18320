"""Advisory file locks (flock) that serialize work on one user or the registry."""

from __future__ import annotations

import fcntl
import os


class locked:  # lower case: used like a function, `with locked(path):`
    """Hold an exclusive flock on path (created 0600 if missing) for the block.

    The kernel drops the lock when the process dies, so a killed command
    never leaves a stale lock behind.  A class, not contextlib's decorator:
    contextlib costs the root helper's every login ~3 ms to import.
    """

    def __init__(self, path: str) -> None:
        self.path, self.fd = path, -1

    def __enter__(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise

    def __exit__(self, *_exc: object) -> None:
        os.close(self.fd)
