"""How often a login probes a booting container's sshd, and when it stops waiting."""

import socket

import pytest

from gpushell.containers.readiness import LATE, MAX_POLL, MIN_POLL, poll_interval, wait_for_sshd
from gpushell.core.errors import ExitStatus, GpushellError


def probes_until(ready_at: float) -> tuple[int, float]:
    """Probes a wait makes for an sshd that listens from `ready_at` s on, and how late it notices."""
    now, probes = 0.0, 1
    while now < ready_at:
        now += poll_interval(now)
        probes += 1
    return probes, now - ready_at


def test_a_lone_cold_start_is_noticed_within_a_few_milliseconds() -> None:
    _, late = probes_until(0.30)  # a container's sshd on an idle host
    assert late <= 0.30 * LATE + 1e-9  # ~9 ms


def test_a_crowded_boot_costs_a_couple_of_hundred_probes() -> None:
    probes, late = probes_until(4.0)  # twenty boots sharing two cores
    assert probes < 200  # every 3 ms for the first second alone: over 300
    assert late <= MAX_POLL
    first_second, _ = probes_until(1.0)
    assert first_second < 130


def test_no_sshd_is_noticed_more_than_a_share_of_the_wait_late() -> None:
    for ready_at in (0.001, 0.05, 0.2, 0.5, 1.0, 1.6, 3.0, 10.0):
        _, late = probes_until(ready_at)
        assert late <= max(MIN_POLL, min(MAX_POLL, ready_at * LATE)) + 1e-9, ready_at


def test_the_interval_stays_between_its_bounds() -> None:
    assert poll_interval(0.0) == MIN_POLL
    assert MIN_POLL < poll_interval(1.0) < MAX_POLL
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


def test_the_kernels_word_is_taken_without_a_connection() -> None:
    held, port = closed_port()  # a connect would say no: only the kernel's yes can end the wait
    answers = iter([False, False, True])
    with held:
        assert wait_for_sshd("127.0.0.1", 5.0, port, listens=lambda: next(answers)) < 1.0


def test_where_the_kernel_cannot_tell_the_wait_connects() -> None:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    asked: list[None] = []

    def cannot_tell() -> None:
        asked.append(None)

    with listening:
        wait_for_sshd("127.0.0.1", 5.0, listening.getsockname()[1], listens=cannot_tell)
    assert asked == [None]  # the connect that followed found the listener
