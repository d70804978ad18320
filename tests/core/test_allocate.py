"""allocate: lowest free port, IP and id range; explicit ports; exhaustion."""

from __future__ import annotations

import ipaddress

import pytest

from gpushell.core.allocate import Allocation, allocate
from gpushell.core.errors import GpushellError
from gpushell.core.registry import parse

IP = ipaddress.IPv4Address


def registry(*users: tuple[str, int, str, int], settings: str = ""):
    text = settings + "users:\n"
    for name, port, ip, idmap in users:
        text += f"  {name}:\n    port: {port}\n    ip: {ip}\n    idmap: {idmap}\n"
    return parse(text, "/etc/gpushell.yaml")


def test_first_user_gets_the_lowest_of_everything():
    assert allocate(registry()) == Allocation(22001, IP("10.0.3.2"), 1000000)


def test_fills_gaps():
    reg = registry(("alice", 22001, "10.0.3.2", 1000000), ("carol", 22003, "10.0.3.4", 1131072))
    assert allocate(reg) == Allocation(22002, IP("10.0.3.3"), 1065536)


def test_skips_used_values_in_order():
    reg = registry(("alice", 22001, "10.0.3.2", 1000000), ("bob", 22002, "10.0.3.3", 1065536))
    assert allocate(reg) == Allocation(22003, IP("10.0.3.4"), 1131072)


def test_independent_gaps():
    reg = registry(("alice", 22002, "10.0.3.3", 1065536), ("bob", 22001, "10.0.3.4", 1000000))
    assert allocate(reg) == Allocation(22003, IP("10.0.3.2"), 1131072)


def test_explicit_port():
    reg = registry(("alice", 22001, "10.0.3.2", 1000000))
    assert allocate(reg, 22500) == Allocation(22500, IP("10.0.3.3"), 1065536)
    assert allocate(reg, 22999).port == 22999
    assert allocate(reg, 22002).port == 22002


def test_explicit_port_taken():
    reg = registry(("alice", 22001, "10.0.3.2", 1000000), ("bob", 22007, "10.0.3.3", 1065536))
    with pytest.raises(GpushellError) as info:
        allocate(reg, 22007)
    assert info.value.user_message == "port 22007 is already used by bob"


@pytest.mark.parametrize("port", [22000, 23000, 22, 0, 65535])
def test_explicit_port_outside_range(port):
    with pytest.raises(GpushellError) as info:
        allocate(registry(), port)
    assert info.value.user_message == f"port {port} is outside the range 22001-22999"


def test_no_free_port():
    reg = registry(
        ("alice", 22001, "10.0.3.2", 1000000),
        ("bob", 22002, "10.0.3.3", 1065536),
        settings="ports: 22001-22002\n",
    )
    with pytest.raises(GpushellError) as info:
        allocate(reg)
    assert info.value.user_message == "no free port left in 22001-22002"


def test_no_free_address():
    reg = registry(("alice", 22001, "10.0.3.2", 1000000), settings="subnet: 10.0.3.0/30\n")
    with pytest.raises(GpushellError) as info:
        allocate(reg)
    assert info.value.user_message == "no free address left in 10.0.3.0/30"


def test_last_address_of_small_subnet():
    reg = registry(("alice", 22001, "10.0.3.2", 1000000), settings="subnet: 10.0.3.0/29\n")
    assert allocate(reg).ip == IP("10.0.3.3")
    reg = registry(
        *[(f"u{i}", 22000 + i, f"10.0.3.{i + 1}", 1000000 + 65536 * i) for i in range(1, 5)],
        settings="subnet: 10.0.3.0/29\n",
    )
    assert allocate(reg).ip == IP("10.0.3.6")


def test_gateway_is_never_allocated():
    reg = registry(settings="subnet: 192.168.50.0/24\n")
    assert allocate(reg).ip == IP("192.168.50.2")


def test_idmap_off_grid_below_first_slot_end():
    # alice sits at start+5: the first slot overlaps it, so the next free grid slot
    # must clear alice's end (1065541): that is start + 2 * size.
    reg = registry(("alice", 22001, "10.0.3.2", 1000005))
    assert allocate(reg).idmap == 1131072


def test_idmap_off_grid_leaves_first_slot_free():
    reg = registry(("alice", 22001, "10.0.3.2", 1065546))
    assert allocate(reg).idmap == 1000000


def test_idmap_off_grid_chain():
    # 1000000..1065535 and 1065636..1131171 are taken; 1131072 would overlap the second.
    reg = registry(("alice", 22001, "10.0.3.2", 1000000), ("bob", 22002, "10.0.3.3", 1065636))
    assert allocate(reg).idmap == 1196608


def test_idmap_gap_between_hand_placed_ranges():
    reg = registry(("alice", 22001, "10.0.3.2", 1000000), ("bob", 22002, "10.0.3.3", 1196608))
    assert allocate(reg).idmap == 1065536


def test_idmap_gap_too_small():
    # bob at 1131172 leaves room for exactly one slot after alice.
    reg = registry(("alice", 22001, "10.0.3.2", 1000000), ("bob", 22002, "10.0.3.3", 1131072 + 100))
    assert allocate(reg).idmap == 1065536
    # bob at 1131071 leaves a gap one id too small; bob ends at 1196606, so the next slot fits.
    reg = registry(("alice", 22001, "10.0.3.2", 1000000), ("bob", 22002, "10.0.3.3", 1131071))
    assert allocate(reg).idmap == 1196608


def test_result_never_overlaps_existing_ranges():
    users = [
        ("a", 22001, "10.0.3.2", 1000000),
        ("b", 22002, "10.0.3.3", 1070000),
        ("c", 22003, "10.0.3.4", 1200000),
        ("d", 22004, "10.0.3.5", 1300000),
    ]
    reg = registry(*users)
    got = allocate(reg).idmap
    assert (got - reg.idmap_start) % reg.idmap_size == 0
    assert all(abs(got - idmap) >= reg.idmap_size for *_, idmap in users)
    assert got == 1000000 + 65536 * 6


def test_no_free_id_range():
    settings = "idmap: {start: 2147483648, size: 2147483648}\n"
    reg = registry(("alice", 22001, "10.0.3.2", 2147483648), settings=settings)
    with pytest.raises(GpushellError) as info:
        allocate(reg)
    assert info.value.user_message == "no free id range left"


def test_last_id_range_fits():
    settings = "idmap: {start: 2147483648, size: 1073741824}\n"
    reg = registry(("alice", 22001, "10.0.3.2", 2147483648), settings=settings)
    assert allocate(reg).idmap == 3221225472
