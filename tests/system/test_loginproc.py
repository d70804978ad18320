"""loginproc.leave: main()'s status and output, the atexit functions, and no teardown."""

from __future__ import annotations

import os
import subprocess
import sys

from gpushell.core.errors import ExitStatus
from gpushell.system import entrypoints

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROGRAM = """
import atexit, sys
sys.path.insert(0, {repo!r})
from gpushell.system.loginproc import leave

class Finalized:
    def __del__(self):
        print("torn down", file=sys.stderr)

kept = Finalized()  # freed only by the interpreter's teardown
atexit.register(lambda: print("atexit ran"))
print("the answer")  # a pipe: block-buffered, so only a flush sends it
leave({status})
"""


def run(status: str) -> subprocess.CompletedProcess[str]:
    code = PROGRAM.format(repo=REPO, status=status)
    return subprocess.run([sys.executable, "-IS", "-c", code], capture_output=True, text=True, timeout=30)


def test_status_output_and_atexit_survive_and_the_teardown_is_skipped() -> None:
    result = run("3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "the answer\natexit ran\n", "")


def test_no_status_is_success() -> None:
    assert run("None").returncode == 0


def test_the_login_programs_leave_quickly_and_still_answer(tmp_path: os.PathLike[str]) -> None:
    """The installed helper script, run outside sudo: refused, with its answer and status intact."""
    script = os.path.join(tmp_path, "gpushell-helper")
    with open(script, "w", encoding="utf-8") as stream:
        stream.write(entrypoints.script("helper.verbs", site_dirs=[REPO]))
    env = {"PATH": "/usr/bin:/bin"}  # no SUDO_UID
    result = subprocess.run([sys.executable, "-IS", script, "login"], capture_output=True, text=True, env=env,
                            timeout=30)  # fmt: skip
    expected = ExitStatus.USAGE if os.geteuid() == 0 else ExitStatus.ERROR
    assert result.returncode == expected, result
    assert result.stdout.startswith("error=") and f"status={int(expected)}" in result.stdout


def test_only_the_login_programs_skip_the_teardown() -> None:
    for module in ("student.shell", "helper.verbs"):
        assert entrypoints.script(module, site_dirs=[REPO]).endswith("leave(main())\n")
    for module in ("admin.commands", "gpu.driverhook"):
        assert entrypoints.script(module, site_dirs=[REPO]).endswith("sys.exit(main())\n")
