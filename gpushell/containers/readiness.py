"""Whether a container's sshd is up yet: a TCP connect, polled while it boots."""

from __future__ import annotations

import time

# The C core of `socket`, for the login path (loginproc.py).
from _socket import AF_INET, SOCK_STREAM, socket

from ..core.errors import ExitStatus, GpushellError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def sshd_answers(ip: str, port: int = 22, timeout: float = 0.01) -> bool:
    """True when something accepts a TCP connection at ip:port (an IP literal: no DNS).

    A container on the local bridge answers in well under a millisecond; the
    short timeout only bounds the wait for an address that is not up yet
    (no ARP reply), so a poll never stalls for long.
    """
    probe = socket(AF_INET, SOCK_STREAM)
    try:
        probe.settimeout(timeout)
        probe.connect((ip, port))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def sshd_greets(ip: str, port: int, timeout: float = 1.0) -> bool:
    """True when an SSH server's greeting comes back from ip:port.

    For a port that accepts before sshd is up: an engine's proxy device
    listens on the member as soon as the container runs, and drops the
    connection while nothing inside listens yet.
    """
    probe = socket(AF_INET, SOCK_STREAM)
    try:
        probe.settimeout(timeout)
        probe.connect((ip, port))
        return probe.recv(4) == b"SSH-"
    except OSError:
        return False
    finally:
        probe.close()


MIN_POLL, MAX_POLL = 0.003, 0.05  # seconds between two probes of a booting sshd
LATE = 1 / 32  # the most a probe may notice an sshd late, as a share of the wait so far
LOOK_EVERY = 0.5  # seconds between two looks at whether a booting container still runs


def poll_interval(waited: float) -> float:
    """Seconds to sleep before the next probe, after waiting `waited` seconds.

    A fixed share of the wait so far, within 3 and 50 ms: a lone cold start
    (~0.3 s) is noticed within ~10 ms, and none more than about 3 % later
    than it could be.  Each probe costs the host ~40 us of CPU, which a boot
    on a busy host would otherwise get: twenty students logging in at once
    on two cores probe ~180 times each over a 4 s boot, where a fixed 3 ms
    for the first second alone was ~330 probes and half of the helper's
    CPU for their logins.
    """
    return min(MAX_POLL, max(MIN_POLL, waited * LATE))


def wait_for_sshd(
    ip: str,
    timeout: float,
    port: int = 22,
    greeting: bool = False,
    running: Callable[[], bool] | None = None,
    listens: Callable[[], bool | None] | None = None,
) -> float:
    """Wait until sshd accepts a TCP connection on ip:port; return the seconds it took.

    sshd listens only once its configuration and host keys are loaded, so an
    accepted connection means a client can log in now.  A connection that
    finds sshd up costs the container an sshd re-exec (~10 ms of CPU) and a
    journal line; with listens (the kernel's word that ip:port has a
    listener, system/listeners.py), ask that instead: the same answer, and
    no connection for sshd to serve.  Where it cannot tell (None), connect.
    With greeting, wait for sshd's greeting instead (sshd_greets).

    running (the backend's may_be_running) is asked every LOOK_EVERY s: a
    container whose init died while booting ends the wait at once, where
    probing it would wait out the whole timeout.
    """
    began = looked = time.monotonic()
    deadline = began + timeout

    def ready() -> bool:
        answer = None if listens is None else listens()
        if answer is not None:
            return answer
        return sshd_greets(ip, port) if greeting else sshd_answers(ip, port)

    while not ready():
        now = time.monotonic()
        if now >= deadline:
            raise GpushellError(
                f"your container did not answer on port {port} within {timeout:.0f} s",
                f"sshd at {ip}:{port} not ready after {timeout} s",
                ExitStatus.TIMEOUT,
            )
        if running is not None and now - looked >= LOOK_EVERY:
            looked = now
            if not running():
                raise GpushellError(
                    "your container stopped while it was starting",
                    f"the container of sshd at {ip}:{port} stopped {now - began:.1f} s into its start",
                )
        time.sleep(poll_interval(now - began))
    return time.monotonic() - began
