"""gpucache: the GPU snapshot a login reads, its file, and the refresh behind a login.

What goes into the snapshot (counts from recorded NVML readings) is in
test_gpustatus.py; how the banner shows it is in test_banner.py.
"""

from __future__ import annotations

import ast
import fcntl
import os
import pathlib
import stat
import subprocess
import sys
import time

import pytest

from gpushell.core import protocol
from gpushell.core.paths import Paths
from gpushell.gpu import gpucache

REPO = str(pathlib.Path(__file__).resolve().parents[2])
NOW = 1712345678
SNAPSHOT = {
    "taken": str(NOW - 10),
    "gpu_state": "ok",
    "gpu_count": "2",
    "gpu.0": "0|87|12288|40960|61|2",
    "gpu.1.error": "1|GPU is lost",
}


def never() -> dict[str, str]:
    raise AssertionError("the registry was read without NVML answering")


# --- what a login adds ----------------------------------------------------------


def test_a_fresh_snapshot_goes_into_the_login_answer_as_it_is():
    keys, stale = gpucache.login_keys(SNAPSHOT, NOW)
    assert keys == {
        "gpu_state": "ok",
        "gpu_age": 10,
        "gpu_count": 2,
        "gpu.0": "0|87|12288|40960|61|2",
        "gpu.1.error": "1|GPU is lost",
    }
    assert not stale


@pytest.mark.parametrize(
    ("age", "stale", "shown"),
    [(0, False, 0), (30, False, 30), (31, True, 31), (-5, False, 0), (-6, True, 0), (86400, True, 86400)],
)
def test_refreshed_when_older_than_30_s_or_when_the_clock_moved(age, stale, shown):
    keys, refresh = gpucache.login_keys({**SNAPSHOT, "taken": str(NOW - age)}, NOW)
    assert (refresh, keys["gpu_age"]) == (stale, shown)


@pytest.mark.parametrize(
    "lines",
    [None, {}, {"gpu_state": "ok"}, {**SNAPSHOT, "taken": "-1"}, {**SNAPSHOT, "taken": "soon"},
     {**SNAPSHOT, "gpu_state": "maybe"}],
)  # fmt: skip
def test_no_usable_snapshot_says_none_and_asks_for_a_refresh(lines):
    assert gpucache.login_keys(lines, NOW) == ({"gpu_state": "none"}, True)


def test_only_the_rows_it_counts_are_copied_and_never_more_than_64():
    lines = {**SNAPSHOT, "gpu.2": "2|1|1|1|1|1", "user": "mallory", "gpu_age": "0"}
    keys, _ = gpucache.login_keys(lines, NOW)
    assert "gpu.2" not in keys and "user" not in keys and keys["gpu_age"] == 10
    many = {"taken": str(NOW), "gpu_state": "ok", "gpu_count": "1000"}
    many.update({f"gpu.{row}": f"{row}|0|0|0|0|0" for row in range(100)})
    keys, _ = gpucache.login_keys(many, NOW)
    assert keys["gpu_count"] == 64 and "gpu.63" in keys and "gpu.64" not in keys
    keys, _ = gpucache.login_keys({"taken": str(NOW), "gpu_state": "no-driver", "gpu.0": "x"}, NOW)
    assert keys == {"gpu_state": "no-driver", "gpu_age": 0}


def test_for_login_asks_for_a_refresh_only_when_stale(tmp_path):
    paths = Paths(run_dir=str(tmp_path))
    assert gpucache.for_login(paths) == ({"gpu_state": "none"}, True)
    gpucache.write(paths.gpu_snapshot, {**SNAPSHOT, "taken": int(time.time())})
    keys, stale = gpucache.for_login(paths)
    assert keys["gpu.0"] == SNAPSHOT["gpu.0"] and not stale
    gpucache.write(paths.gpu_snapshot, {**SNAPSHOT, "taken": int(time.time()) - 31})
    keys, stale = gpucache.for_login(paths)
    assert keys["gpu_state"] == "ok" and stale


# --- the file ------------------------------------------------------------------


def test_write_replaces_the_file_whole_root_only(tmp_path):
    path = str(tmp_path / "gpus.snapshot")
    gpucache.write(path, {"taken": 1, "gpu_state": "no-driver"})
    gpucache.write(path, SNAPSHOT)  # type: ignore[arg-type]
    assert gpucache.read(path) == SNAPSHOT
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["gpus.snapshot"]
    with pytest.raises(ValueError):
        gpucache.write(path, {"gpu.0": "two\nlines"})
    assert os.listdir(tmp_path) == ["gpus.snapshot"]
    assert gpucache.read(path) == SNAPSHOT


def test_read_refuses_a_link_and_reads_a_bounded_amount(tmp_path):
    assert gpucache.read(str(tmp_path / "missing")) is None
    real = tmp_path / "real"
    real.write_text(protocol.encode(SNAPSHOT))  # type: ignore[arg-type]
    (tmp_path / "link").symlink_to(real)
    assert gpucache.read(str(tmp_path / "link")) is None
    big = tmp_path / "big"
    big.write_text("gpu_state=ok\n" + "x" * (2 * gpucache.MAX_BYTES) + "\nlate=1\n")
    assert gpucache.read(str(big)) == {"gpu_state": "ok"}


# --- the refresh ------------------------------------------------------------------


def test_refresh_writes_the_snapshot_and_skips_while_another_holds_the_lock(tmp_path):
    paths = Paths(run_dir=str(tmp_path))
    assert gpucache.refresh(paths, never, lambda: None)
    assert gpucache.read(paths.gpu_snapshot)["gpu_state"] == "no-driver"  # type: ignore[index]
    os.unlink(paths.gpu_snapshot)
    holder = os.open(paths.gpu_lock, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert not gpucache.refresh(paths, never, lambda: pytest.fail("NVML asked during another refresh"))
        assert not os.path.exists(paths.gpu_snapshot)
    finally:
        os.close(holder)
    assert gpucache.refresh(paths, never, lambda: None)


def run_python(code: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """code in a fresh interpreter, as the helper would run it; stdout and stderr piped, like spawn.run."""
    return subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {REPO!r})\n{code}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,  # a hang guard, not a measure
    )  # fmt: skip


def wait_for(path: pathlib.Path) -> str:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text()


def test_the_detached_child_lets_the_caller_finish_while_it_still_works(tmp_path):
    """The parent's pipes reach EOF and it exits while the child waits for a FIFO only this test opens."""
    go = tmp_path / "go"
    os.mkfifo(go)
    report = tmp_path / "report"
    code = f"""
import os
from gpushell.gpu import gpucache
def work():
    with open({str(go)!r}) as gate:
        gate.read()
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    stdio = [os.readlink(f"/proc/self/fd/{{fd}}") for fd in (0, 1, 2)]
    with open({str(report)!r} + ".tmp", "w") as out:
        out.write(repr((os.getsid(0), os.getppid(), fds, stdio, os.getcwd())))
    os.rename({str(report)!r} + ".tmp", {str(report)!r})
print("state=ok", flush=False)
gpucache.run_detached(work)
print("after=1")
print(os.getsid(0), os.getpid())
"""
    result = run_python(code, tmp_path)
    # The caller is done, output whole and in order, while the child still waits at the FIFO.
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == ["state=ok", "after=1"]
    assert not report.exists()
    caller_session, caller = (int(word) for word in result.stdout.splitlines()[2].split())
    deadline = time.monotonic() + 30
    while True:
        try:
            gate = os.open(go, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until the child opens it to read
            break
        except OSError:
            assert time.monotonic() < deadline, "the detached child never opened its gate"
            time.sleep(0.02)
    os.close(gate)
    session, parent, fds, stdio, cwd = ast.literal_eval(wait_for(report))
    assert session != caller_session  # a session of its own: no terminal to hang up on it
    assert parent != caller  # orphaned once the caller exited: reaped by init, not waited for
    assert stdio == ["/dev/null"] * 3
    assert cwd == "/"
    assert fds == [0, 1, 2, 3]  # 3: the listing of /proc/self/fd itself; nothing inherited


def test_a_stale_login_refreshes_after_its_answer_is_written(tmp_path):
    """refresh_in_background: the answer comes out once and whole; the snapshot appears afterwards."""
    code = f"""
from gpushell.gpu import gpucache
from gpushell.core.paths import Paths
print("state=ok", end="")
gpucache.refresh_in_background(Paths(run_dir={str(tmp_path)!r}), dict, lambda: None)
"""
    result = run_python(code, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "state=ok", "")
    lines = protocol.decode(wait_for(tmp_path / "gpus.snapshot"))
    assert lines["gpu_state"] == "no-driver" and lines["taken"].isdigit()
