"""The installed entry-point scripts: `python3 -IS`, fixed paths, nothing else.

-I ignores PYTHON* variables and the user's site directory; -S skips the
site module too, so no .pth file anywhere runs before gpushell.  The package
directories are written in at install time instead.  `make install`
writes these over the console scripts pip made, with this Python's site
directories; the Debian package writes its own with its directory alone
(`--site-dir /usr/lib/python3/dist-packages`), so a copy under /usr/local
never shadows the one the package installed.
"""

from __future__ import annotations

import argparse
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


def install(directory: str, site_dirs: list[str] | None = None) -> None:
    for program, module in PROGRAMS.items():
        write_atomically(os.path.join(directory, program), script(module, site_dirs=site_dirs), 0o755)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python3 -m gpushell.system.entrypoints", description="Write gpushell's entry-point scripts."
    )
    parser.add_argument("directory", help="where to write them")
    parser.add_argument(
        "--site-dir",
        action="append",
        dest="site_dirs",
        metavar="DIR",
        help="a directory the scripts import from (repeatable); default: this Python's site directories",
    )
    args = parser.parse_args(argv)
    install(args.directory, args.site_dirs)


if __name__ == "__main__":
    main()
