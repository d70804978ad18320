"""The one place gpushell runs external commands.

Always an argv list, never a shell; always a minimal environment, so nothing
a student sets (PATH, LD_PRELOAD, PYTHON*, LC_*) reaches a privileged
program.  Tests check exact argv lists through `record` hooks.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

from .environment import SAFE_ENV
from .errors import GpushellError

# Called with every argv before it runs; tests append to a list here.
observers: list[Callable[[Sequence[str]], None]] = []


def run(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    check: bool = True,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run argv and return its result; raise GpushellError when check fails."""
    for observe in observers:
        observe(argv)
    try:
        result = subprocess.run(
            list(argv),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=SAFE_ENV,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GpushellError(f"could not run {argv[0]}", f"running {list(argv)} failed: {exc}") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit status {result.returncode}"
        raise GpushellError(
            f"{argv[0].rsplit('/', 1)[-1]} failed: {last}",
            f"{list(argv)} exited {result.returncode}: {result.stderr.strip()}",
        )
    return result
