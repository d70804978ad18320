"""Fixtures for the integration tests: a real lab, real students, the audit log."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from .lab import Lab, Student

REQUIRED = ("lxc-start", "iptables-save", "sshd", "ssh", "sudo", "debootstrap", "ip", "tmux")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here is an integration test; one marked `engines(...)` runs only on clusters
    of those engines (deselected on the others: it does not apply there, and is not skipped)."""
    kept, dropped = [], []
    for item in items:
        item.add_marker(pytest.mark.integration)
        engines = item.get_closest_marker("engines")
        callspec = getattr(item, "callspec", None)
        engine = callspec.params.get("cluster") if callspec is not None else None
        (dropped if engines is not None and engine not in engines.args else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    # Missing parts are a failure, not a skip: `make test` installs them all.
    if os.geteuid() != 0:
        pytest.fail("the integration tests need root (they make containers, rules and users)")
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    missing = [tool for tool in REQUIRED if shutil.which(tool, path=path) is None]
    if missing:
        pytest.fail(f"missing tools: {', '.join(missing)}; run `make test`, which installs them")
    with Lab().made() as instance:
        yield instance


class Syslog:
    """Datagrams sent to /dev/log while the tests run (no syslog daemon here)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("/dev/log")
        os.chmod("/dev/log", 0o666)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.lines.append(self.sock.recv(65536).decode(errors="replace"))

    def matching(self, *words: str) -> list[str]:
        return [line for line in list(self.lines) if all(word in line for word in words)]

    def close(self) -> None:
        self.sock.close()
        os.unlink("/dev/log")


@pytest.fixture(scope="session")
def syslog() -> Iterator[Syslog]:
    # Another test run on this machine may hold it for a while: wait, bounded.
    deadline = time.monotonic() + 120
    while os.path.exists("/dev/log") and time.monotonic() < deadline:
        time.sleep(1)
    if os.path.exists("/dev/log"):
        pytest.skip("a syslog daemon owns /dev/log here; the audit lines go to its files")
    log = Syslog()
    try:
        yield log
    finally:
        log.close()


@pytest.fixture
def student(lab: Lab) -> Iterator[Student]:
    """A fresh student with a stopped container, removed (with account) afterwards."""
    index = len(lab.students)
    made = lab.add_student(f"s{index}")
    try:
        yield made
    finally:
        lab.admin("remove", made.name, "--purge", check=False)
