"""How often a login probes a booting container's sshd, and when it stops waiting."""

import socket

import pytest

from gpushell.containers.readiness import MAX_POLL, MIN_POLL, QUICK_BOOT, poll_interval, wait_for_sshd
from gpushell.core.errors import ExitStatus, GpushellError


def probes_until(ready_at: float) -> tuple[int, float]:
    """Probes a wait makes for an sshd that listens from `ready_at` s on, and how late it notices."""
    now, probes = 0.0, 1
    while now < ready_at:
        now += poll_interval(now)
        probes += 1
    return probes, now - ready_at


def test_a_lone_cold_start_is_noticed_within_a_few_milliseconds() -> None:
    _, late = probes_until(0.35)  # a container's sshd on an idle host
    assert late <= MIN_POLL


def test_a_crowded_boot_costs_a_few_hundred_probes_not_thousands() -> None:
    probes, late = probes_until(10.0)  # twenty boots sharing two cores
    assert probes < 600  # at a fixed 3 ms: over 3000
    assert late <= MAX_POLL


def test_the_interval_stays_between_its_bounds() -> None:
    assert poll_interval(0.0) == MIN_POLL
    assert MIN_POLL < poll_interval(QUICK_BOOT) <= MAX_POLL
    assert poll_interval(3600.0) == MAX_POLL


def closed_port() -> tuple[socket.socket, int]:
    """A loopback port that refuses connections (bound, never listening), held while the test runs."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    return held, held.getsockname()[1]


def test_a_container_that_stopped_while_booting_ends_the_wait() -> None:
    held, port = closed_port()
    asked: list[bool] = []

    def running() -> bool:
        asked.append(False)
        return False

    with held, pytest.raises(GpushellError) as caught:
        wait_for_sshd("127.0.0.1", 30.0, port, running=running)
    assert caught.value.user_message == "your container stopped while it was starting"
    assert caught.value.status == ExitStatus.ERROR
    assert asked == [False]  # asked once, when it was first due


def test_a_container_still_running_waits_out_the_timeout() -> None:
    held, port = closed_port()
    with held, pytest.raises(GpushellError) as caught:
        wait_for_sshd("127.0.0.1", 1.0, port, running=lambda: True)
    assert caught.value.status == ExitStatus.TIMEOUT
    assert caught.value.user_message == f"your container did not answer on port {port} within 1 s"
