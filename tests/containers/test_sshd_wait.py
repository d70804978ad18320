"""How often a login probes a booting container's sshd: few probes, little lateness."""

import os
from pathlib import Path

import pytest

from gpushell.containers.readiness import MAX_POLL, MIN_POLL, QUICK_BOOT, crowding, poll_interval


def probes_until(ready_at: float, crowded: float = 1.0) -> tuple[int, float]:
    """Probes a wait makes for an sshd that listens from `ready_at` s on, and how late it notices."""
    now, probes = 0.0, 1
    while now < ready_at:
        now += poll_interval(now, crowded)
        probes += 1
    return probes, now - ready_at


def test_a_lone_cold_start_is_noticed_within_a_few_milliseconds() -> None:
    _, late = probes_until(0.35)  # a container's sshd on an idle host
    assert late <= MIN_POLL
    _, late = probes_until(0.35, crowded=0.5)  # a CPU to spare
    assert late <= MIN_POLL


def test_a_crowded_boot_costs_a_few_hundred_probes_not_thousands() -> None:
    probes, late = probes_until(10.0)  # twenty boots sharing two cores
    assert probes < 600  # at a fixed 3 ms: over 3000
    assert late <= MAX_POLL


def test_a_host_whose_cpus_all_have_work_waiting_is_probed_less_often() -> None:
    alone, _ = probes_until(5.0)
    crowded, late = probes_until(5.0, crowded=8.0)  # twenty boots on two cores: ~16 tasks ready
    assert crowded < alone / 2
    assert late <= MAX_POLL
    assert poll_interval(0.0, 8.0) == pytest.approx(8 * MIN_POLL)


def test_the_interval_stays_between_its_bounds() -> None:
    assert poll_interval(0.0) == MIN_POLL
    assert MIN_POLL < poll_interval(QUICK_BOOT) <= MAX_POLL
    assert poll_interval(3600.0) == MAX_POLL
    assert poll_interval(0.0, 1000.0) == MAX_POLL


def loadavg_file(tmp_path: Path, text: str) -> int:
    path = tmp_path / "loadavg"
    path.write_text(text)
    return os.open(path, os.O_RDONLY)


def test_crowding_is_the_tasks_ready_to_run_per_cpu(tmp_path: Path) -> None:
    fd = loadavg_file(tmp_path, "3.10 2.02 1.00 12/345 6789\n")
    try:
        assert crowding(fd) == 12 / (os.cpu_count() or 1)
        assert crowding(fd) == 12 / (os.cpu_count() or 1)  # read again from the start
    finally:
        os.close(fd)


def test_crowding_that_cannot_be_read_counts_as_none(tmp_path: Path) -> None:
    fd = loadavg_file(tmp_path, "garbage\n")
    try:
        assert crowding(fd) == 1.0
    finally:
        os.close(fd)


def test_the_real_loadavg_reads() -> None:
    fd = os.open("/proc/loadavg", os.O_RDONLY)
    try:
        assert 0 < crowding(fd) * (os.cpu_count() or 1) < 100_000  # this test itself runs
    finally:
        os.close(fd)
