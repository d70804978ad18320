"""The queued-signal pool lxc-start hands a container: raised in a child, read back from the kernel."""

from __future__ import annotations

import multiprocessing
import resource

import pytest

from gpushell.core import kernelpools
from gpushell.system import signalpool

SIGPENDING = resource.RLIMIT_SIGPENDING


def may_raise_hard_limits() -> bool:
    """CAP_SYS_RESOURCE in this process's effective set (bit 24): root on a stock host, not everywhere."""
    with open("/proc/self/status", encoding="ascii") as stream:
        effective = next(line for line in stream if line.startswith("CapEff:"))
    return bool(int(effective.split()[1], 16) >> 24 & 1)


def _widened(memory: int, soft: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    signalpool.host_memory = lambda: memory  # type: ignore[assignment]
    hard = resource.getrlimit(SIGPENDING)[1]
    resource.setrlimit(SIGPENDING, (soft, hard))  # lowering the soft limit takes no capability
    queue.put((signalpool.widen(), resource.getrlimit(SIGPENDING)))


def widened(memory: int, soft: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """widen()'s answer and the limits after it, in a child process (the test's own limits stay)."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_widened, args=(memory, soft, queue))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    answer: tuple[tuple[int, int], tuple[int, int]] = queue.get(timeout=5)
    return answer


HARD = resource.getrlimit(SIGPENDING)[1]
finite_hard = pytest.mark.skipif(HARD == resource.RLIM_INFINITY, reason="no finite hard limit to stay under")


@finite_hard
def test_a_pool_under_the_hard_limit_is_taken_without_a_capability() -> None:
    memory = (HARD // 2) * kernelpools.SIGNAL_BYTES
    wanted = kernelpools.signals_wanted(memory)
    assert wanted < HARD
    assert widened(memory, 100) == ((wanted, wanted), (wanted, HARD))  # the hard limit left as it was


def test_a_soft_limit_already_large_enough_is_left_alone() -> None:
    soft = min(HARD, 5000)
    memory = soft * kernelpools.SIGNAL_BYTES // 2
    assert widened(memory, soft) == ((soft, kernelpools.signals_wanted(memory)), (soft, HARD))


@finite_hard
def test_a_pool_over_the_hard_limit_takes_cap_sys_resource_or_stops_at_the_hard_limit() -> None:
    memory = 64 * 2**30
    wanted = kernelpools.signals_wanted(memory)
    assert wanted > HARD
    if may_raise_hard_limits():  # root on a stock host
        assert widened(memory, 100) == ((wanted, wanted), (wanted, wanted))
    else:  # root without CAP_SYS_RESOURCE (this sandbox), or another user
        assert widened(memory, 100) == ((HARD, wanted), (HARD, HARD))


def test_the_pool_wanted_is_more_than_memory_could_fill() -> None:
    assert kernelpools.signals_wanted(16 * 2**30) == 16 * 2**30 // 48  # ~90 bytes a signal: twice over
    assert kernelpools.signals_wanted(0) == 1
