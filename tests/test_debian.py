"""debian/ agrees with the code beside it: the drop-ins the scripts name, the paths the rules rewrite.

tests/integration/test_package.py installs, upgrades and removes the
package for real; these catch a mismatch in seconds, without root.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import pathlib
import re
from types import ModuleType

import pytest

from gpushell.core import paths

TOP = pathlib.Path(__file__).resolve().parents[1]
DEBIAN = TOP / "debian"
CHECKED_COPY = ".gpushell-new"  # hostinit.ensure_file's candidate beside a drop-in
SIGNER = "Ann Lee <ann@lab.example>"
DATE = "Thu, 3 Dec 2026 06:29:07 +0000"


def stamp_version() -> ModuleType:
    """debian/stamp-version, a script without .py, as a module."""
    loader = importlib.machinery.SourceFileLoader("stamp_version", str(DEBIAN / "stamp-version"))
    spec = importlib.util.spec_from_loader("stamp_version", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_postinst_refreshes_the_dropins_with_the_packages_own_admin_and_nothing_else() -> None:
    postinst = (DEBIAN / "gpushell.postinst").read_text()
    assert "ADMIN=/usr/bin/gpushell-admin\n" in postinst
    assert re.findall(r'"\$ADMIN" (.*)', postinst) == ["init --drop-ins"]
    assert re.findall(r"^\s*gpushell-admin", postinst, flags=re.MULTILINE) == []  # never through PATH
    assert f"SSHD_DROPIN={paths.DEFAULT.sshd_dropin}\n" in postinst


def test_the_postrm_removes_exactly_the_dropins_and_only_on_purge() -> None:
    postrm = (DEBIAN / "gpushell.postrm").read_text()
    removed = {name for line in re.findall(r"rm -f (.*)", postrm) for name in line.split()}
    dropins = (paths.DEFAULT.sudoers_dropin, paths.DEFAULT.sshd_dropin)
    assert removed == {*dropins, *(name + CHECKED_COPY for name in dropins)}
    purge_branch = postrm.partition('if [ "$1" = purge ]; then\n')[2].partition("\nfi\n")[0]
    assert postrm.count("rm -f") == purge_branch.count("rm -f")


def test_the_rules_point_the_packages_copy_at_usr_bin() -> None:
    rules = (DEBIAN / "rules").read_text()
    assert 'BIN_DIR = "/usr/local/bin"\n' in (TOP / "gpushell/core/paths.py").read_text()
    assert 's|^BIN_DIR = "/usr/local/bin"$$|BIN_DIR = "/usr/bin"|' in rules
    assert "--site-dir $(SITE)" in rules and "SITE := /usr/lib/python3/dist-packages\n" in rules
    units = sorted(path.name for path in (TOP / "etc").iterdir() if path.suffix in (".service", ".timer"))
    assert f"UNITS := {' '.join(units)}\n" in rules


def test_every_man_page_is_packaged() -> None:
    packaged = (DEBIAN / "gpushell.manpages").read_text().split()
    assert sorted(packaged) == sorted(f"man/{path.name}" for path in (TOP / "man").iterdir())


def test_the_changelog_entry_carries_the_version_date_and_signer() -> None:
    entry = stamp_version().changelog(
        "0.1.0+git412", "Thu, 3 Dec 2026 06:29:07 +0000", "Ann Lee <ann@lab.example>"
    )
    assert entry.splitlines()[0] == "gpushell (0.1.0+git412) unstable; urgency=medium"
    assert entry.endswith("\n -- Ann Lee <ann@lab.example>  Thu, 3 Dec 2026 06:29:07 +0000\n")


@pytest.mark.parametrize("version", ["0.1.0-1", "0.1.0+git", "v1", "1.0~rc1", ""])
def test_a_version_not_made_by_the_makefile_is_refused(version: str) -> None:
    with pytest.raises(ValueError, match="not a gpushell package version"):
        stamp_version().changelog(version, DATE, SIGNER)


def test_the_maintainer_becomes_the_commits_author() -> None:
    module = stamp_version()
    control = module.with_maintainer((DEBIAN / "control").read_text(), "Ann Lee <ann@lab.example>")
    assert re.findall(r"^Maintainer: .*$", control, flags=re.MULTILINE) == [
        "Maintainer: Ann Lee <ann@lab.example>"
    ]
    with pytest.raises(ValueError, match="no Maintainer"):
        module.with_maintainer("Source: gpushell\n", "Ann Lee <ann@lab.example>")
