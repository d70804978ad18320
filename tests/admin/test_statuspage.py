"""The status page's files: written where a web server reads them, the history kept private, off when asked.

Figures are the recorded day of data/status_day.json (tests/statusday.py;
no GPU here); the host's own figures are read for real where a test goes
through publish.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gpushell.admin import statuspage
from gpushell.containers.backend import RUNNING, STOPPED
from gpushell.core import gpuhistory
from gpushell.core.errors import GpushellError
from gpushell.core.lending import EMPTY, Loan, LoanBook
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from tests import statusday
from tests.fakes import FakeBackend

REGISTRY = (
    "hostname: gpu1\nlending: {gpus: [1, 2]}\nusers:\n"
    "  ann: {port: 22001, ip: 10.0.3.2, idmap: 1000000}\n"
    "  ben: {port: 22002, ip: 10.0.3.3, idmap: 1065536, gpus: [0]}\n"
)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    os.chmod(tmp_path, 0o755)
    return Paths(run_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "state"))


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def write_day(paths: Paths, warned: list[str], book: LoanBook = EMPTY, text: str = REGISTRY) -> None:
    readings, host = statusday.last_minute()
    reg = parse(text, "/etc/gpushell.yaml")
    statuspage.write(
        paths, reg, book, {"": readings}, host, {"": statusday.GPUS}, statusday.LAST, warned.append
    )


def test_the_default_status_directory_lies_beside_the_state_directory() -> None:
    assert Paths().status_dir == "/var/lib/gpushell-status"
    assert Paths(state_dir="/srv/state").status_dir == "/srv/state-status"
    assert Paths(status_dir="/srv/www/gpus").status_dir == "/srv/www/gpus"


def test_the_page_is_readable_by_all_and_the_history_by_root_alone(paths: Paths) -> None:
    warned: list[str] = []
    write_day(paths, warned, LoanBook([Loan("ann", 1, statusday.LAST - 60, statusday.LAST + 60)]))
    assert warned == []
    assert mode(paths.status_dir) == 0o755
    for name in ("index.html", "status.json"):
        assert mode(f"{paths.status_dir}/{name}") == 0o644
        assert os.lstat(f"{paths.status_dir}/{name}").st_uid == 0
    assert mode(paths.state_dir) == 0o700 and mode(statuspage.history_path(paths)) == 0o600
    document = json.loads(Path(paths.status_dir, "status.json").read_text())
    assert [gpu["gpu"] for gpu in document["gpus"]] == statusday.GPUS
    assert (
        document["gpus"][1]["state"] == "lent"
        and "ann" not in Path(paths.status_dir, "index.html").read_text()
    )


def test_each_minute_adds_to_the_history(paths: Paths) -> None:
    write_day(paths, [])
    first = statuspage.read_history(paths, print)
    readings, host = statusday.last_minute()
    reg = parse(REGISTRY, "/r")
    statuspage.write(paths, reg, EMPTY, {"": readings}, host, {"": [0]}, statusday.LAST + 60, print)
    later = statuspage.read_history(paths, print)
    track = later.tracks["gpu0.util"]
    assert track.start == first.tracks["gpu0.util"].start and len(track.values) == 2


def test_a_damaged_history_is_warned_about_and_started_afresh(paths: Paths) -> None:
    os.makedirs(paths.state_dir, 0o700)
    Path(statuspage.history_path(paths)).write_text('{"format": 1, "tracks": {"gpu0.util": [1, [900]]}}')
    warned: list[str] = []
    write_day(paths, warned)
    assert len(warned) == 1 and "damaged" in warned[0] and "start afresh" in warned[0]
    history = statuspage.read_history(paths, print)
    assert history.tracks["gpu0.util"] == gpuhistory.Track(statusday.LAST // 60, (0,))


def test_a_status_directory_others_may_change_is_refused(paths: Paths) -> None:
    os.makedirs(paths.status_dir)
    os.chmod(paths.status_dir, 0o777)
    with pytest.raises(GpushellError, match=r"is unsafe: .* writable by a user other than root"):
        write_day(paths, [])
    assert not os.path.exists(f"{paths.status_dir}/index.html")


def test_a_page_turned_off_removes_the_last_one_and_keeps_no_history(paths: Paths) -> None:
    write_day(paths, [])
    os.unlink(statuspage.history_path(paths))
    reg = parse(REGISTRY + "status_page: {enabled: false}\n", "/r")
    statuspage.publish(paths, reg, EMPTY, FakeBackend(), {}, {"": [0]}, statusday.LAST, print)
    assert os.listdir(paths.status_dir) == [] and os.listdir(paths.state_dir) == []


def test_publish_reads_the_hosts_own_figures(paths: Paths) -> None:
    reg = parse(REGISTRY, "/r")
    driver = FakeBackend({"ann": RUNNING, "ben": STOPPED})
    statuspage.publish(paths, reg, EMPTY, driver, {}, {"": [0]}, statusday.LAST, print)
    host = json.loads(Path(paths.status_dir, "status.json").read_text())["host_figures"]
    assert host["containers_running"] == 1 and host["students"] == 2
    assert host["memory_total"] > 0 and host["cpus"] == os.cpu_count()
    assert host["cpu_percent"] is None  # a first look: no earlier CPU seconds to compare with


def test_no_login_loads_the_status_page_or_what_it_needs() -> None:
    from tests.student.test_login_imports import LOGIN_MODULES, loaded_after

    page = {"gpuhistory", "statusmodel", "statushtml", "statuspage", "gpufigures", "hostfigures"}
    for modules in LOGIN_MODULES.values():
        loaded = loaded_after(modules)
        assert set(modules) <= loaded
        assert sorted(name for name in loaded if name.rpartition(".")[2] in page | {"html", "psutil"}) == []
