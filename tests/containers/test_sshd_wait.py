"""How often a login probes a booting container's sshd: few probes, little lateness."""

from gpushell.containers.readiness import MAX_POLL, MIN_POLL, QUICK_BOOT, poll_interval


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
