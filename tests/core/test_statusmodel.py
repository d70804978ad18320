"""statusmodel: which GPUs the page lists, in which state, held by how many (and whom), over which day.

The day's figures are the recorded readings of data/status_day.json
(tests/statusday.py replays them through a stand-in NVML: no GPU here).
"""

from __future__ import annotations

import json

from gpushell.core import gpuhistory, lending, statushtml, statusmodel
from gpushell.core.lending import EMPTY, Loan, LoanBook, Waiter
from gpushell.core.model import StatusPage
from gpushell.core.registry import parse
from gpushell.core.statusmodel import GpuReading, HostFigures
from tests import statusday

NOW = statusday.LAST
POINTS = gpuhistory.WINDOW // statusmodel.STEP


def registry(extra: str = "", ben_gpus: str = "[0]") -> object:
    return parse(
        "hostname: gpu1\nlending: {gpus: [1, 2], max_duration: 8h}\n"
        + extra
        + "users:\n"
        + "  ann: {port: 22001, ip: 10.0.3.2, idmap: 1000000}\n"
        + f"  ben: {{port: 22002, ip: 10.0.3.3, idmap: 1065536, gpus: {ben_gpus}}}\n"
        + "  cal: {port: 22003, ip: 10.0.3.4, idmap: 1131072}\n",
        "/etc/gpushell.yaml",
    )


BOOK = LoanBook([Loan("ann", 1, NOW - 3600, NOW + 7200)], [Waiter("cal", 1, 3600, NOW - 60)])


def gpu(document: dict[str, object], number: int) -> dict[str, object]:
    return next(item for item in document["gpus"] if item["gpu"] == number)  # type: ignore[attr-defined, index]


def test_the_recorded_day_lists_every_gpu_in_its_state_with_a_day_of_plots() -> None:
    _, document = statusday.replay(registry(), BOOK)
    assert [item["gpu"] for item in document["gpus"]] == [0, 1, 2, 3]  # type: ignore[attr-defined]
    states = [(item["state"], item["students"]) for item in document["gpus"]]  # type: ignore[attr-defined]
    assert states == [("assigned", 1), ("lent", 1), ("free", 0), ("unassigned", 0)]
    assert gpu(document, 1)["until"] == NOW + 7200
    assert document["lending"] == {"on": True, "waiting": 1}
    for item in document["gpus"]:  # type: ignore[attr-defined]
        assert len(item["util_plot"]) == len(item["memory_plot"]) == POINTS
    json.dumps(document)  # status.json's text


def test_the_plots_follow_the_recorded_day() -> None:
    _, document = statusday.replay(registry(), BOOK)
    training = gpu(document, 0)["util_plot"]  # GPU 0 trained from 02:00 to 17:00
    assert all(value is not None and value > 80 for value in training[30:100] if value is not None)  # type: ignore[union-attr]
    assert max(training[:20]) <= 1 and max(training[-60:]) <= 1  # type: ignore[index]
    gaps = [index for index, value in enumerate(gpu(document, 2)["util_plot"]) if value is None]  # type: ignore[arg-type]
    assert gaps and min(gaps) >= 20 * 12 and max(gaps) < 21 * 12  # NVML gave nothing for 40 minutes at 20:00
    lost = gpu(document, 3)
    assert (lost["reading"], lost["name"], lost["util"], set(lost["util_plot"])) == (
        False,
        None,
        None,
        {None},
    )  # type: ignore[arg-type]
    host = document["host_figures"]
    assert host["cpu_percent"] == statusday.DAY["host"]["cpu"][-1]  # type: ignore[index]
    assert None not in host["cpu_plot"][1:]  # type: ignore[index]
    assert (host["students"], host["containers_running"], host["logged_in"]) == (3, 2, 1)  # type: ignore[index]


def test_names_are_hidden_unless_the_registry_shows_them() -> None:
    _, hidden = statusday.replay(registry(), BOOK)
    assert hidden["names_shown"] is False
    assert all("names" not in item for item in hidden["gpus"])  # type: ignore[attr-defined]
    assert "ann" not in json.dumps(hidden) and "ben" not in json.dumps(hidden)
    _, shown = statusday.replay(registry("status_page: {names: true}\n"), BOOK)
    assert [gpu(shown, n)["names"] for n in (0, 1, 2, 3)] == [["ben"], ["ann"], [], []]


def test_at_most_names_shown_are_listed_the_count_is_whole() -> None:
    users = "".join(
        f"  s{n}: {{port: {22001 + n}, ip: 10.0.3.{2 + n}, idmap: {1000000 + n * 65536}, gpus: all}}\n"
        for n in range(30)
    )
    reg = parse("status_page: {names: true}\nusers:\n" + users, "/r")
    _, document = statusmodel.page(reg, EMPTY, gpuhistory.EMPTY, {}, HostFigures(), {"": [0]}, NOW)
    only = gpu(document, 0)
    assert only["students"] == 30 and len(only["names"]) == statusmodel.NAMES_SHOWN  # type: ignore[arg-type]


def test_gpus_come_from_the_devices_the_registry_the_loans_and_the_history_even_without_nvml() -> None:
    reg = registry(ben_gpus="[5]")
    history = gpuhistory.record(gpuhistory.EMPTY, NOW // 60 - 30, {"gpu7.util": 50}, None)
    book = LoanBook([Loan("ann", 9, NOW - 60, NOW + 60)])
    _, document = statusmodel.page(reg, book, history, {}, HostFigures(), {"": [0]}, NOW)
    assert [item["gpu"] for item in document["gpus"]] == [0, 1, 2, 5, 7, 9]  # type: ignore[attr-defined]
    assert all(item["reading"] is False for item in document["gpus"])  # type: ignore[attr-defined]
    # NOW's minute M closes the last bucket; M-30 lies in the 7th from the end (M-34 .. M-30).
    assert gpu(document, 7)["util_plot"][-7] == 50  # type: ignore[index]


def test_the_history_comes_back_with_this_minute_added() -> None:
    reading = GpuReading(0, "A100", 40, 10 * 2**30, 40 * 2**30)
    host = HostFigures(cpu_times=(150.0, 400.0), memory_used=1, memory_total=4)
    before = gpuhistory.History({}, (100.0, 300.0))
    history, document = statusmodel.page(registry(), EMPTY, before, {"": [reading]}, host, {"": [0]}, NOW)
    minute = int(NOW // 60)
    assert history.cpu == (150.0, 400.0)
    assert gpuhistory.latest(history.tracks["gpu0.util"], minute) == 40
    assert gpuhistory.latest(history.tracks["gpu0.memory"], minute) == 25
    assert gpuhistory.latest(history.tracks["host.cpu"], minute) == 50
    assert gpuhistory.latest(history.tracks["host.memory"], minute) == 25
    assert document["host_figures"]["cpu_percent"] == 50  # type: ignore[index]


def test_cpu_use_needs_two_looks_in_order() -> None:
    assert statusmodel.cpu_use((10.0, 100.0), (35.0, 200.0)) == 25
    assert statusmodel.cpu_use(None, (35.0, 200.0)) is None
    assert statusmodel.cpu_use((10.0, 100.0), (5.0, 50.0)) is None  # a reboot in between
    assert statusmodel.percent(3, 0) is None and statusmodel.percent(5, 4) == 100


def test_a_page_turned_off_is_a_registry_setting() -> None:
    assert registry("status_page: {enabled: false}\n").status_page == StatusPage(enabled=False)  # type: ignore[attr-defined]


CLUSTER = """\
backend: lxd
hostname: gpu.lab
bridge: labnet
subnet: 10.9.0.0/24
template: lab-image
lending: {gpus: all, max_duration: 8h}
lxd:
  members:
    m1: {address: 192.168.5.11, gpus: 2, memory: 64G}
    m2: {address: 192.168.5.12, gpus: 1, memory: 64G}
users:
  ann: {port: 22001, ip: 10.9.0.2, idmap: 1000000, member: m1, gpus: [0]}
  ben: {port: 22002, ip: 10.9.0.3, idmap: 1065536, member: m2}
"""


def test_on_a_cluster_each_members_gpus_are_their_own_cards_with_their_own_plots() -> None:
    reg = parse(CLUSTER, "/etc/gpushell.yaml")
    book = LoanBook([Loan("ben", 0, NOW - 60, NOW + 600)])  # m2's GPU 0, not m1's
    readings = {"m1": [GpuReading(0, "H200", 90, 1, 4)], "m2": [GpuReading(0, "H200", 10, 3, 4)]}
    servers = lending.server_gpus(reg, ())  # as the tick numbers them: the registry's count per member
    history, document = statusmodel.page(reg, book, gpuhistory.EMPTY, readings, HostFigures(), servers, NOW)
    cards = [(item["member"], item["gpu"], item["state"], item["util"]) for item in document["gpus"]]  # type: ignore[attr-defined]
    assert cards == [("m1", 0, "assigned", 90), ("m1", 1, "free", None), ("m2", 0, "lent", 10)]
    minute = int(NOW // 60)
    assert gpuhistory.latest(history.tracks["m1:gpu0.util"], minute) == 90
    assert gpuhistory.latest(history.tracks["m2:gpu0.memory"], minute) == 75
    assert "gpu0.util" not in history.tracks  # no GPU of the front door's own
    # A GPU with figures earlier in the day stays listed under its member alone (m2's GPU 0 here).
    _, later = statusmodel.page(reg, EMPTY, history, {}, HostFigures(), {"m1": [0]}, NOW + 60)
    assert [(item["member"], item["gpu"], item["reading"]) for item in later["gpus"]] == [  # type: ignore[attr-defined]
        ("m1", 0, False), ("m2", 0, False)
    ]  # fmt: skip
    page = statushtml.render(document)
    assert "<h3>GPU 0 on m2 <small>H200</small></h3>" in page and 'id="gpu-m1-1"' in page
    # The host's card is the front door's: its CPU and memory; the containers' disks are the members'.
    assert "<h3>The front door</h3>" in page and "Containers' disk" not in page
