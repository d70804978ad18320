"""The login path's modules load no heavy standard-library module.

Each import below costs a login a few milliseconds, twice (the shell and
the root helper); this checks what a fresh interpreter has loaded after
importing exactly what a login runs, so a stray `import enum` shows up
here rather than only in the benchmark.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

KEPT_OFF = ("yaml", "lxc", "subprocess", "enum", "signal", "socket", "selectors", "contextlib",
            "typing", "dataclasses", "re", "json", "shlex", "argparse", "threading")  # fmt: skip

LOGIN_MODULES = {
    "shell": ["gpushell.shell"],
    "helper": ["gpushell.helper", "gpushell.registry_cache", "gpushell.services", "gpushell.iptables"],
}


def loaded_after(modules: list[str]) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print(' '.join(sys.modules))"
    # -S as the installed entry points run: no site module, the package found via the path given.
    result = subprocess.run(
        [sys.executable, "-IS", "-c", f"import sys; sys.path[:0] = {sys.path!r}\n{code}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return set(result.stdout.split())


@pytest.mark.parametrize("side", sorted(LOGIN_MODULES))
def test_login_path_keeps_heavy_modules_off(side: str) -> None:
    loaded = loaded_after(LOGIN_MODULES[side])
    assert set(LOGIN_MODULES[side]) <= loaded  # the imports really ran
    assert sorted(name for name in KEPT_OFF if name in loaded) == []
