"""The login shell's side of the resident helper's socket (helper/server.py).

One connection per request: the request (protocol.request) goes out, the
write side is shut, and the answer is read to its end, a tick at a time
for the shell's spinner.  No server there for the caller (no socket,
nobody listening on it, a socket the caller may not use) is None: the
shell then runs the helper through sudo, as it did before the server
existed, and sudo's rule decides.  Anything after the connect is the server's
answer, whole or not: a request is never sent twice, since the first may
have done its work.

`_socket` rather than `socket`: the module's Python layer imports `enum`
and `selectors`, which every login would pay for (loginproc.py).
"""

from __future__ import annotations

import _socket
import select
import time

from .spawn import Capped

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

MAX_ANSWER = 64 * 1024  # bytes of an answer kept: a few `key=value` lines, a table of snapshots


def ask(path: str, request: bytes, tick: Callable[[float], None], interval: float = 0.1) -> str | None:
    """The server's answer to request, or None when no server listens at path.

    Raises OSError when the connection breaks after the connect.
    """
    connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            connection.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, PermissionError):
            return None
        connection.sendall(request)
        connection.shutdown(_socket.SHUT_WR)
        answer, began = Capped(MAX_ANSWER), time.monotonic()  # more is read and dropped
        while True:
            ready, _, _ = select.select([connection], [], [], interval)
            if not ready:
                tick(time.monotonic() - began)
                continue
            data = connection.recv(65536)
            if not data:
                return answer.text()
            answer.add(data)
    finally:
        connection.close()
