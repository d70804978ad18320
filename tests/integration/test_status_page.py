"""The status page in a real headless browser (Debian's chromium, driven by selenium).

The page is written by admin/statuspage.py from stored data: the made-up day
of readings in data/status_day.json (a four-GPU host, replayed through a
stand-in NVML by tests/statusday.py; there is no GPU here).  A web server
on the loopback serves the directory, as the host's own nginx or Apache
would; the browser loads the page and the test checks what it shows: no
console errors, a card with two drawn plots for every GPU, the host's
figures, names hidden unless the registry shows them, and a screenshot
that is a real picture of the page.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpushell.admin import statuspage
from gpushell.core import gpuhistory
from gpushell.core.lending import Loan, LoanBook
from gpushell.core.paths import Paths
from gpushell.core.registry import parse
from tests import statusday

CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1400, 1100)
REGISTRY = (
    "hostname: gpu1.lab.example\nlending: {gpus: [1, 2], max_duration: 8h}\nusers:\n"
    "  ann: {port: 22001, ip: 10.0.3.2, idmap: 1000000}\n"
    "  ben: {port: 22002, ip: 10.0.3.3, idmap: 1065536, gpus: [0]}\n"
    "  cal: {port: 22003, ip: 10.0.3.4, idmap: 1131072}\n"
)
NAMES = "status_page: {names: true}\n"
BOOK = LoanBook([Loan("ann", 1, statusday.LAST - 3600, statusday.LAST + 7200)])
PLOT_BLUE = (31, 95, 168)  # the plots' stroke, statushtml.STYLE


# --- the page, served ------------------------------------------------------------------


def write_page(paths: Paths, names: bool) -> None:
    """The day's last minute as a tick writes it, after a day of ticks (the history from the stored day)."""
    os.makedirs(paths.state_dir, 0o700, exist_ok=True)
    Path(statuspage.history_path(paths)).write_text(gpuhistory.to_json(statusday.day_history()))
    os.chmod(statuspage.history_path(paths), 0o600)
    reg = parse((NAMES if names else "") + REGISTRY, "/etc/gpushell.yaml")
    readings, host = statusday.last_minute()
    warned: list[str] = []
    statuspage.write(
        paths, reg, BOOK, {"": readings}, host, {"": statusday.GPUS}, statusday.LAST, warned.append
    )
    assert warned == []


class Quiet(http.server.SimpleHTTPRequestHandler):
    """Files as they are now: no log lines, and no answer from a cache (a page rewritten within
    the second would otherwise be "not modified")."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_head(self) -> Any:
        if "If-Modified-Since" in self.headers:
            del self.headers["If-Modified-Since"]
        return super().send_head()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@contextlib.contextmanager
def served(directory: str) -> Iterator[str]:
    """The directory on a loopback web server of this process, for as long as the block runs."""
    handler = functools.partial(Quiet, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Missing parts fail, as in conftest: `make test` installs chromium, its driver and selenium.
    if not os.access(CHROMEDRIVER, os.X_OK) or shutil.which("chromium") is None:
        pytest.fail("chromium and chromium-driver are missing; run `make venv` (or `make test`)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing from the test virtualenv; run `make venv`")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    os.chmod(tmp_path, 0o755)
    return Paths(run_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "state"))


def load(browser: Any, base: str) -> str:
    """The page's text once loaded; the console's severe entries fail the test."""
    browser.get(f"{base}/index.html")
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    text: str = browser.find_element("tag name", "body").text
    return text


# --- PNG, read with zlib and struct ----------------------------------------------------


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Width, height and every pixel of an 8-bit RGB or RGBA PNG (its filters undone)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, header, compressed = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        header = body if kind == b"IHDR" else header
        compressed += body if kind == b"IDAT" else b""
        offset += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    size = 3 if colour == 2 else 4
    raw = zlib.decompress(compressed)
    stride = width * size
    assert len(raw) == height * (stride + 1)
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - size] if x >= size else 0
            up = previous[x]
            corner = previous[x - size] if x >= size else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                near = min(
                    (abs(guess - left), 0, left), (abs(guess - up), 1, up), (abs(guess - corner), 2, corner)
                )
                line[x] = (line[x] + near[2]) & 0xFF
        rows.append(line)
        previous = line
    pixels = [tuple(row[x : x + 3]) for row in rows for x in range(0, stride, size)]
    return width, height, pixels


# --- the tests -------------------------------------------------------------------------


def test_every_gpu_shows_its_card_and_plots_with_no_console_error(browser: Any, paths: Paths) -> None:
    write_page(paths, names=False)
    with served(paths.status_dir) as base:
        text = load(browser, base)
        assert browser.title == "GPUs on gpu1.lab.example"
        cards = browser.find_elements("css selector", "article.gpu")
        assert [card.get_attribute("id") for card in cards] == [f"gpu-{n}" for n in statusday.GPUS]
        for card in cards:
            assert card.is_displayed()
            plots = card.find_elements("css selector", "svg.plot")
            assert len(plots) == 2
            for plot in plots:
                assert plot.size["width"] > 100 and plot.size["height"] > 20
        for number in (0, 1, 2):  # the GPUs with readings: their lines are drawn
            for line in browser.find_elements("css selector", f"#gpu-{number} svg.plot path"):
                assert line.size["width"] > 100, number
        lost = browser.find_element("id", "gpu-3")
        assert "no reading" in lost.text and not lost.find_elements("css selector", "path")
        assert "GPU 1 NVIDIA A100-SXM4-40GB\nlent to 1 student until" in text
        assert "GPU 0 NVIDIA A100-SXM4-40GB\nassigned to 1 student" in text
        assert "GPU 2 NVIDIA A100-SXM4-40GB\nfree to borrow" in text


def test_the_host_figures_are_shown(browser: Any, paths: Paths) -> None:
    write_page(paths, names=False)
    host = statusday.DAY["host"]
    with served(paths.status_dir) as base:
        load(browser, base)
        figures = {
            name: browser.find_element("id", f"host-{name}") for name in ("cpu", "memory", "disk", "students")
        }
        assert all(figure.is_displayed() for figure in figures.values())
        assert figures["cpu"].text.startswith(f"CPU: {host['cpu'][-1]}% (load 21.4 on 64 CPUs)")
        assert figures["memory"].text.startswith("Memory: ") and "of 512.0 GiB" in figures["memory"].text
        assert "of 3576.3 GiB" in figures["disk"].text
        assert figures["students"].text == "Students: 1 logged in, 2 of 3 containers running"
        for name in ("cpu", "memory"):
            assert figures[name].find_element("css selector", "svg.plot path").size["width"] > 100


def test_names_are_hidden_by_default_and_shown_with_the_switch(browser: Any, paths: Paths) -> None:
    write_page(paths, names=False)
    with served(paths.status_dir) as base:
        hidden = load(browser, base)
        assert not {"ann", "ben", "cal"} & set(hidden.replace("\n", " ").split())
        write_page(paths, names=True)
        shown = load(browser, base)
        assert "lent to ann until" in shown and "assigned to ben" in shown


def test_a_screenshot_is_a_real_picture_of_the_page(browser: Any, paths: Paths, tmp_path: Path) -> None:
    write_page(paths, names=False)
    with served(paths.status_dir) as base:
        load(browser, base)
        page = browser.get_screenshot_as_png()
        card = browser.find_element("id", "gpu-0")
        card_png = card.screenshot_as_png
        card_size = card.size
        ratio = browser.execute_script("return window.devicePixelRatio")
    (tmp_path / "status-page.png").write_bytes(page)  # kept with the test's files, to look at
    (tmp_path / "status-page-gpu0.png").write_bytes(card_png)
    width, height, pixels = png_pixels(card_png)
    assert abs(width - card_size["width"] * ratio) <= 2 and abs(height - card_size["height"] * ratio) <= 2
    colours = set(pixels)
    assert len(colours) > 20  # text, frame and plots: not one uniform colour
    assert (255, 255, 255) in colours  # the card's own background
    blue = sum(1 for r, g, b in pixels if b > 140 and b - r > 80 and g < 150)
    assert blue > 100, blue  # the plots' lines, drawn in PLOT_BLUE
    full_width, full_height, full = png_pixels(page)
    assert full_width == WINDOW[0] * ratio and full_height >= 600 * ratio
    assert len(set(full)) > 20
