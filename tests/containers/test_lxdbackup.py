"""lxdbackup: the engine's backup of a container kept on the front door before `remove` destroys it.

The engine here is a stand-in that records each request and writes the
export into the output it is given (the real engines' backups are in
tests/integration/test_cluster.py).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from gpushell.containers import lxdapi, lxdbackup
from gpushell.core.errors import GpushellError

WHEN = datetime.datetime(2026, 12, 4, 23, 30, 5, tzinfo=datetime.UTC)
ALLOWED = {"restricted": "true", "restricted.backups": "allow"}


class Engine:
    """Records requests; its export is `content`, or a failure part way when `fail_after` is set."""

    def __init__(self, content: bytes = b"backup bytes", fail_after: int | None = None) -> None:
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[object] = []
        self.content, self.fail_after = content, fail_after

    def call(self, method: str, endpoint: str, body: object = None, wait: float | None = 120.0) -> Any:
        self.requests.append((method, endpoint))
        self.bodies.append(body)
        if method == "DELETE" and len(self.requests) == 1:
            raise lxdapi.ApiError(404, "Instance backup not found")  # the usual: no leftover
        return {}

    def download(self, endpoint: str, output: BinaryIO, timeout: float = 30.0) -> int:
        self.requests.append(("GET", endpoint))
        if self.fail_after is not None:
            output.write(self.content[: self.fail_after])
            raise lxdapi.Unreachable("GET export: connection reset")
        output.write(self.content)
        return len(self.content)


def keep(engine: Engine, directory: Path, config: dict[str, str] = ALLOWED, kind: str = "incus") -> str:
    return lxdbackup.keep(engine, "gpushell", config, kind, "c-alice", str(directory), "alice", WHEN)  # type: ignore[arg-type]


def test_the_backup_is_the_instance_alone_uncompressed_and_expires_on_the_member() -> None:
    assert lxdbackup.request(WHEN) == {
        "name": "gpushell-archive",
        "expires_at": "2026-12-05T05:30:05Z",
        "instance_only": True,
        "optimized_storage": False,
        "compression_algorithm": "none",
    }


def test_keep_fetches_the_backup_under_the_archive_name_and_deletes_it_on_the_member(tmp_path: Path) -> None:
    engine = Engine()
    kept = keep(engine, tmp_path / "archives")
    assert kept == str(tmp_path / "archives" / "alice-20261204T233005Z.tar")
    assert Path(kept).read_bytes() == b"backup bytes" and os.stat(kept).st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path / "archives") == ["alice-20261204T233005Z.tar"]
    backups = "/instances/c-alice/backups"
    assert engine.requests == [
        ("DELETE", f"{backups}/gpushell-archive"),
        ("POST", backups),
        ("GET", f"{backups}/gpushell-archive/export"),
        ("DELETE", f"{backups}/gpushell-archive"),
    ]
    assert engine.bodies[1] == lxdbackup.request(WHEN)


def test_a_failed_fetch_leaves_no_file_and_still_deletes_the_backup(tmp_path: Path) -> None:
    engine = Engine(fail_after=5)
    with pytest.raises(lxdapi.Unreachable):
        keep(engine, tmp_path)
    assert os.listdir(tmp_path) == []
    assert engine.requests[-1] == ("DELETE", "/instances/c-alice/backups/gpushell-archive")


def test_a_project_that_blocks_backups_is_refused_before_any_request(tmp_path: Path) -> None:
    engine = Engine()
    for config in ({"restricted": "true"}, {"restricted": "true", "restricted.backups": "block"}):
        with pytest.raises(GpushellError) as caught:
            keep(engine, tmp_path, config)
        assert str(caught.value) == (
            "cannot archive c-alice: project gpushell blocks backups; "
            "run: lxc project set gpushell restricted.backups=allow"
        )
        # On LXD the project should block them: the line says what the admin does instead.
        with pytest.raises(GpushellError) as caught:
            keep(engine, tmp_path, config, "lxd")
        assert str(caught.value) == (
            "cannot archive c-alice: project gpushell blocks backups, as it should on LXD, whose backup "
            "import skips the project's restrictions; keep it as the cluster's admin on a member "
            "(lxc export c-alice --project gpushell), then remove without --archive"
        )
    assert engine.requests == [] and os.listdir(tmp_path) == []
    assert not lxdbackup.blocked({})  # an unrestricted project allows everything
    assert keep(engine, tmp_path / "open", {})
    assert (
        lxdbackup.import_unchecked("lxd")
        and lxdbackup.import_unchecked("")
        and not lxdbackup.import_unchecked("incus")
    )


def test_an_archive_of_that_name_already_there_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "alice-20261204T233005Z.tar").write_bytes(b"older")
    engine = Engine()
    with pytest.raises(GpushellError, match="already exists; not overwriting it"):
        keep(engine, tmp_path)
    assert (tmp_path / "alice-20261204T233005Z.tar").read_bytes() == b"older"
    assert engine.requests == []  # no backup made for nothing
