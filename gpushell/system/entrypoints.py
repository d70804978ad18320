"""The installed entry-point scripts: `python3 -IS`, fixed paths, nothing else.

-I ignores PYTHON* variables and the user's site directory; -S skips the
site module too, so no .pth file anywhere runs before gpushell.  The package
directories are written in at install time instead.  `make install`
writes these over the console scripts pip made.
"""

from __future__ import annotations

import os
import site
import sys

from .files import write_atomically

PROGRAMS = {
    "gpushell": "student.shell",
    "gpushell-helper": "helper.verbs",
    "gpushell-admin": "admin.commands",
    "gpushell-driver-hook": "gpu.driverhook",  # paths.DRIVER_HOOK
}


# The two processes of every login leave without the interpreter's teardown (loginproc.py).
QUICK_EXIT = frozenset({"student.shell", "helper.verbs"})


def script(module: str, paths_arguments: str = "", site_dirs: list[str] | None = None) -> str:
    """A wrapper running gpushell.<module>.main, with Paths(<paths_arguments>) if given."""
    directories = site_dirs if site_dirs is not None else site.getsitepackages()
    call = f"main(Paths({paths_arguments}))" if paths_arguments else "main()"
    if module in QUICK_EXIT:
        ending = f"from gpushell.system.loginproc import leave\nleave({call})\n"
    else:
        ending = f"sys.exit({call})\n"
    return (
        f"#!{sys.executable} -IS\n"
        "import sys\n"
        f"sys.path.extend({directories!r})\n"
        "from gpushell.core.paths import Paths\n"
        f"from gpushell.{module} import main\n"
        f"{ending}"
    )


def install(directory: str) -> None:
    for program, module in PROGRAMS.items():
        write_atomically(os.path.join(directory, program), script(module), 0o755)


if __name__ == "__main__":
    install(sys.argv[1])
