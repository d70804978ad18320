"""The status page's files: the day's history kept, index.html and status.json written.

`publish` is the tick's step (it has looked at the GPUs already): the
host's figures read, the history in the state directory brought up to this
minute (`status-history.json`, root's and private), and the page written
into `Paths.status_dir` (`/var/lib/gpushell-status`): the directory root's
and 0755, the files 0644, so the host's web server can read them and
nobody but root can change them.  Each file is replaced at once: a reader
sees the last page or the new one.  The tick is the page's one writer,
so the history has one writer too.

With `status_page: {enabled: false}` nothing is kept or written, and a
page written before is removed: stale figures would mislead.
"""

from __future__ import annotations

import contextlib
import json
import os

from ..core import gpuhistory, statushtml, statusmodel
from ..core.errors import ExitStatus, GpushellError
from ..system import hostfigures
from ..system.files import read_private, write_atomically
from ..system.ownership import check_owned_by_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from ..containers.backend import ContainerDriver
    from ..core.lending import LoanBook
    from ..core.model import Registry
    from ..core.paths import Paths
    from ..core.statusmodel import GpuReading, HostFigures

    Report = Callable[[str], None]

PAGE, DOCUMENT = "index.html", "status.json"
MAX_HISTORY = 16 * 2**20  # bytes: a day of 1024 GPUs is about 10 MB


def history_path(paths: Paths) -> str:
    return f"{paths.state_dir}/status-history.json"


def publish(
    paths: Paths,
    reg: Registry,
    book: LoanBook,
    driver: ContainerDriver,
    readings: Mapping[str, Iterable[GpuReading]],
    host_gpus: Mapping[str, Iterable[int]],
    now: float,
    warn: Report,
) -> None:
    """This minute's page; OSError or GpushellError when it cannot be written.

    readings and host_gpus by server, as statusmodel.page takes them."""
    if not reg.status_page.enabled:
        remove(paths)
        return
    write(paths, reg, book, readings, hostfigures.read(reg, _running(driver)), host_gpus, now, warn)


def write(
    paths: Paths,
    reg: Registry,
    book: LoanBook,
    readings: Mapping[str, Iterable[GpuReading]],
    host: HostFigures,
    host_gpus: Mapping[str, Iterable[int]],
    now: float,
    warn: Report,
) -> None:
    """The history and the page from figures already read (the tests give recorded ones)."""
    history, document = statusmodel.page(reg, book, read_history(paths, warn), readings, host, host_gpus, now)
    _directory(paths.state_dir, 0o700)
    write_atomically(history_path(paths), gpuhistory.to_json(history), 0o600, durable=False)
    folder = _directory(paths.status_dir, 0o755)
    write_atomically(f"{folder}/{DOCUMENT}", json.dumps(document) + "\n", 0o644, durable=False)
    write_atomically(f"{folder}/{PAGE}", statushtml.render(document), 0o644, durable=False)


def _running(driver: ContainerDriver) -> set[str] | None:
    """The containers running (one look for all), or None when the backend cannot tell."""
    try:
        return driver.running()
    except (GpushellError, OSError):
        return None


def read_history(paths: Paths, warn: Report) -> gpuhistory.History:
    """The history so far; a missing file is none yet, a damaged one is warned about and started afresh."""
    path = history_path(paths)
    text = read_private(path, MAX_HISTORY + 1)
    if text is None:
        return gpuhistory.EMPTY
    try:
        if len(text) > MAX_HISTORY:
            raise ValueError(f"larger than {MAX_HISTORY} bytes")
        return gpuhistory.from_json(text)
    except ValueError as exc:
        warn(f"{path} is damaged ({exc}); the status page's plots start afresh")
        return gpuhistory.EMPTY


def remove(paths: Paths) -> None:
    """The page's files gone (the directory stays, empty): the page is turned off."""
    for name in (PAGE, DOCUMENT):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{paths.status_dir}/{name}")


def not_written(exc: Exception) -> str:
    """The one line a tick gives when the page could not be written."""
    why = exc.log_message if isinstance(exc, GpushellError) else str(exc)
    return f"status page not written: {why}"


def _directory(path: str, mode: int) -> str:
    """path as a directory of root's that only root may change, made with mode when missing."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        os.mkdir(path, mode)
        os.chmod(path, mode)  # exactly mode, whatever the umask: a web server reads the page
    except FileExistsError:
        pass
    check_owned_by_root(path)
    if os.lstat(path).st_mode & 0o777 & ~mode:
        why = f"is open to others (mode must be {mode:04o})"
        raise GpushellError(f"{path} is unsafe: {why}", f"refusing {path}: {why}", ExitStatus.CONFIG)
    return path
