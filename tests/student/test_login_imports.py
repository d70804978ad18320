"""The login path's modules load no heavy standard-library module (gpushell/system/loginproc.py says why).

This checks what a fresh interpreter has loaded after importing exactly
what a login runs, so a stray `import enum` shows up here rather than
only in the benchmark.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

KEPT_OFF = ("yaml", "lxc", "subprocess", "enum", "signal", "socket", "selectors", "contextlib",
            "typing", "dataclasses", "re", "json", "shlex", "argparse", "threading", "ipaddress",
            "functools", "collections")  # fmt: skip

LOGIN_MODULES = {
    "shell": ["gpushell.student.shell", "gpushell.system.loginproc"],
    "helper": [
        "gpushell.helper.verbs",
        "gpushell.system.registry_store",
        "gpushell.system.registry_cache",
        "gpushell.helper.services",
        "gpushell.system.iptables",
        "gpushell.system.loginproc",
    ],
}


def loaded_after(modules: list[str], then: str = "") -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + then
    code += "print(' '.join(sys.modules))"
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


# What the helper does with a registry entry on a login, after its imports:
# the user and settings from the compiled copy, the forward rules, the answer.
HELPER_WORK = """
from gpushell.core import forward
from gpushell.system import registry_cache
from gpushell.helper import services
from gpushell.containers.backend import ContainerDriver, RUNNING
reg, user = registry_cache.from_plain(PLAIN, "alice")
rules = forward.user_rule(reg.chain, user) + forward.masquerade_rule(reg)
answer = services.describe(services.Context(None, reg, ContainerDriver()), user, RUNNING)
assert f"{user.address}:22" in rules and answer["ip"] == "10.0.3.2", (rules, answer)
"""


def test_the_helpers_login_work_builds_no_ipaddress_objects() -> None:
    from gpushell.core.registry import parse
    from gpushell.system import registry_cache

    text = "subnet: 10.0.3.0/24\nusers:\n  alice: {port: 22001, ip: 10.0.3.2, idmap: 1000000}\n"
    plain = registry_cache.to_plain(parse(text, "/etc/gpushell.yaml"))
    loaded = loaded_after(LOGIN_MODULES["helper"], f"PLAIN = {plain!r}\n{HELPER_WORK}")
    assert sorted(name for name in KEPT_OFF if name in loaded) == []
