"""kernelpools: how large the kernel pools every container shares must be, from the host's memory."""

from __future__ import annotations

from gpushell.core import kernelpools
from gpushell.core.kernelpools import AIO, FILES, INSTANCES, PTYS, WATCHES

GIB = 2**30
# What one costs the kernel, measured on Linux 6.18 (20 000 instances, 5 000 watches,
# 2 000 ptys, 16 384 aio events and 18 000 open files made in a memory cgroup of its own,
# the cgroup's use before and after).
MEASURED = {INSTANCES: 988, WATCHES: 88, PTYS: 3111, AIO: 64, FILES: 262}
# FILES: a tenth of memory in KiB, for a 16 GiB host.
KERNEL_DEFAULTS = {INSTANCES: 128, WATCHES: 1048576, PTYS: 4096, AIO: 65536, FILES: 1677721}


def test_a_16_gib_host_gets_pools_its_memory_could_not_fill() -> None:
    sizes = kernelpools.wanted(16 * GIB)
    assert sizes == {INSTANCES: 33554432, WATCHES: 536870912, PTYS: 2**20, AIO: 536870912, FILES: 134217728}
    for key in (INSTANCES, WATCHES, AIO, FILES):
        assert sizes[key] * MEASURED[key] > 16 * GIB  # filling it would take more than the whole host
    for key, size in sizes.items():
        assert size > KERNEL_DEFAULTS[key]  # far beyond the kernel's defaults


def test_the_pty_pool_is_as_large_as_the_kernel_allows_and_costs_gibibytes_to_fill() -> None:
    assert kernelpools.wanted(16 * GIB)[PTYS] == 2**20  # NR_UNIX98_PTY_MAX: the kernel refuses more
    assert 2**20 * MEASURED[PTYS] > 3 * GIB  # of one container's memory limit, where 3072 cost ~9 MB
    assert kernelpools.wanted(1 * GIB)[PTYS] == GIB // 1536  # a small host: what its memory could fill


def test_a_huge_host_stays_within_what_every_kernel_holds() -> None:
    assert kernelpools.wanted(4096 * GIB) == {
        INSTANCES: 2**31 - 1,
        WATCHES: 2**31 - 1,
        PTYS: 2**20,
        AIO: 4096 * GIB // 32,
        FILES: 4096 * GIB // 128,
    }


def test_only_a_pool_smaller_than_wanted_is_short() -> None:
    memory = 16 * GIB
    wanted = kernelpools.wanted(memory)
    current = {INSTANCES: 128, WATCHES: wanted[WATCHES] * 2}  # the admin's larger watches pool stays
    assert kernelpools.shortfalls(current, memory) == {INSTANCES: (128, wanted[INSTANCES])}
    assert kernelpools.shortfalls(wanted, memory) == {}
    assert kernelpools.shortfalls({}, memory) == {}  # a kernel without inotify has nothing to raise


def test_the_dropin_sets_every_pool_in_sysctl_syntax() -> None:
    text = kernelpools.dropin_text(16 * GIB)
    settings = [line for line in text.splitlines() if not line.startswith("#")]
    assert settings == [
        f"{INSTANCES} = 33554432",
        f"{WATCHES} = 536870912",
        f"{PTYS} = 1048576",
        f"{AIO} = 536870912",
        f"{FILES} = 134217728",
    ]
    assert kernelpools.shortfall_text(INSTANCES, 128, 33554432) == f"{INSTANCES} is 128, below 33554432"
