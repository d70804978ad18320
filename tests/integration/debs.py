"""Debian packages of gpushell for the package test: this checkout's and the previous commit's.

Each is built by `make deb` in a clone of its own, so the checkout under
test (and its build/ directory, which others may be using) is never
touched.  The current package is this checkout as it is, uncommitted
changes included; the previous one is the newest commit before HEAD
that has debian/control.  A clone without that history (a shallow one)
gets the current tree again with a lower version, so an upgrade is still
tested, and says why.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import subprocess
import time

from .lab import ENV

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOWER_VERSION = "0"  # below every 0.1.0+gitN: the stand-in for the previous package
HISTORY_SEARCHED = 200  # commits before HEAD looked at for debian/control


@dataclasses.dataclass
class Package:
    path: str
    version: str
    source: str  # what it was built from, for the report
    seconds: float


def attempt(argv: list[str], cwd: str = ROOT) -> subprocess.CompletedProcess[str]:
    # The caller's HOME: git's safe.directory settings live there.
    env = {**ENV, "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def run(argv: list[str], cwd: str = ROOT) -> str:
    result = attempt(argv, cwd)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def clone(destination: str) -> None:
    run(["git", "clone", "-q", "--no-hardlinks", ROOT, destination])


def previous_commit(repository: str) -> str | None:
    """The newest commit before HEAD that has debian/control; None when the history lacks one."""
    commits = attempt(["git", "rev-list", f"--max-count={HISTORY_SEARCHED}", "HEAD^"], repository)
    for commit in commits.stdout.split():
        if attempt(["git", "cat-file", "-e", f"{commit}:debian/control"], repository).returncode == 0:
            return commit
    return None


def copy_working_tree(destination: str) -> None:
    """The checkout's files as they are now (tracked and new, not ignored; deleted ones gone) over a clone."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
    present = [name for name in listed.split("\0") if name and os.path.lexists(os.path.join(ROOT, name))]
    for name in present:
        target = os.path.join(destination, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), target, follow_symlinks=False)
    for name in run(["git", "ls-files", "-z", "--deleted"]).split("\0"):
        if name:
            os.unlink(os.path.join(destination, name))


def make_deb(tree: str, output: str, source: str, version: str | None = None) -> Package:
    began = time.monotonic()
    run(["make", "-s", "deb", *([f"DEB_VERSION={version}"] if version else [])], cwd=tree)
    (built,) = glob.glob(f"{tree}/gpushell_*_all.deb")
    path = shutil.move(built, output)
    found = run(["dpkg-deb", "-f", path, "Version"]).strip()
    return Package(path, found, source, time.monotonic() - began)


def build_both(workdir: str) -> tuple[Package, Package]:
    """(previous, current): the previous commit's package and this checkout's, which sorts above it."""
    current_tree, previous_tree = f"{workdir}/current", f"{workdir}/previous"
    clone(current_tree)
    copy_working_tree(current_tree)
    current = make_deb(current_tree, workdir, "this checkout")
    clone(previous_tree)
    commit = previous_commit(previous_tree)
    if commit is None:
        shallow = run(["git", "rev-parse", "--is-shallow-repository"]).strip() == "true"
        print(
            "no commit before HEAD has debian/control"
            + (" (a shallow clone: its history is cut off)" if shallow else "")
            + f"; the previous package is this checkout again, as version {LOWER_VERSION}"
        )
        copy_working_tree(previous_tree)
        previous = make_deb(previous_tree, workdir, "this checkout", LOWER_VERSION)
    else:
        run(["git", "checkout", "-q", commit], cwd=previous_tree)
        previous = make_deb(previous_tree, workdir, f"commit {commit[:12]}")
    shutil.rmtree(current_tree)
    shutil.rmtree(previous_tree)
    newer = attempt(["dpkg", "--compare-versions", current.version, "gt", previous.version])
    assert newer.returncode == 0, f"{current.version} does not sort above {previous.version}"
    return previous, current
