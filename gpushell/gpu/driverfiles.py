"""The NVIDIA user-space driver: which host files a container gets, and version checks.

A container's libcuda/libnvidia-* must be the exact version of the host's
kernel module.  With the registry's `driver: host` (the default), the
host's own files, found by the module's version, are bind-mounted
read-only into each GPU container by an LXC mount hook (driverhook.py)
that lists them afresh at every start, so they follow a driver upgrade
with nothing to regenerate.  With `driver: container` the template
carries its own, and doctor compares versions.

The decisions (`parse_version`, `driver_files`, `container_versions`,
`mismatch`) are pure; `read_host` reads a directory tree rooted at the
registry's `driver_root` (default /), so tests use stand-in trees.
"""

from __future__ import annotations

import os
import re

LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
)
BIN_DIR = "/usr/bin"
BINARIES = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
)
VERSION_FILE = "proc/driver/nvidia/version"  # relative to the driver root
MODULE_VERSION = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)\s")
LIBRARY = r"(lib[A-Za-z0-9_+-]*nvidia[A-Za-z0-9_+-]*|libcuda|libcudadebugger|libnvcuvid|libnvoptix)"
VERSIONED = re.compile(r"(libcuda|libnvidia-ml)\.so\.(\d+\.\d+(?:\.\d+)?)")
DRIVER_NAME = re.compile(LIBRARY + r"\.so(?:\.\d+)*")
MAX_HOPS = 8

# directory -> {file name: symlink target, or None for a regular file}
Listing = dict[str, dict[str, str | None]]


def parse_version(text: str) -> str | None:
    """The kernel module's version in /proc/driver/nvidia/version text, or None.

    `NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 ...`
    or, for the open modules, `... Open Kernel Module for x86_64  550.54.14  Release Build ...`.
    """
    match = MODULE_VERSION.search(text)
    return match[1] if match else None


def _resolve(names: dict[str, str | None], name: str) -> str | None:
    """Follow symlinks within one directory to a regular file's name, or None."""
    for _ in range(MAX_HOPS):
        if name not in names:
            return None
        target = names[name]
        if target is None:
            return name
        if "/" in target:
            return None  # out of this directory: not ours to follow
        name = target
    return None


def driver_files(listing: Listing, version: str | None) -> tuple[tuple[str, str], ...]:
    """(source, target) host paths to bind-mount for `version`: libraries, their links, tools.

    Only libraries named `NAME.so.VERSION` for exactly this version count
    (leftovers of an older driver stay out); a link to one of them, such
    as libcuda.so.1, is mounted as that file at the link's name.  Each
    target once, from the first library directory that has it.
    """
    if not version:
        return ()
    library = re.compile(LIBRARY + r"\.so\." + re.escape(version))
    found: dict[str, str] = {}
    for directory in LIB_DIRS:
        names = listing.get(directory, {})
        for name in sorted(names):
            real = _resolve(names, name)
            if real is not None and library.fullmatch(real):
                found.setdefault(f"{directory}/{name}", f"{directory}/{real}")
    names = listing.get(BIN_DIR, {})
    for name in BINARIES:
        if name in names:
            found.setdefault(f"{BIN_DIR}/{name}", f"{BIN_DIR}/{name}")
    return tuple(sorted((source, target) for target, source in found.items()))


def container_versions(names: list[str]) -> frozenset[str]:
    """Driver versions a container's library file names carry (libcuda/libnvidia-ml.so.X)."""
    return frozenset(match[2] for name in names if (match := VERSIONED.fullmatch(name)))


def mismatch(host_version: str | None, versions: frozenset[str], host: str = "the host") -> str | None:
    """What is wrong with a container's driver files, or None when they match the host's module.

    host: whose module it is, in the words of the line (a cluster: "its member m1").
    """
    if host_version is None:
        return None  # no driver on the host: nothing to match
    if not versions:
        return f"has no NVIDIA user-space driver ({host.removeprefix('the ')}: {host_version})"
    if versions != {host_version}:
        return f"has driver {', '.join(sorted(versions))}, {host} {host_version}"
    return None


def stale_placeholders(present: dict[str, dict[str, int]], files: tuple[tuple[str, str], ...]) -> list[str]:
    """Empty driver-named files no current driver file is mounted on: an older driver's.

    `present` maps each directory to its regular files' sizes in the
    container.  The hook leaves an empty file at each target it mounts on;
    after a driver upgrade the old version's names would stay behind as
    empty libraries.  Only empty files are taken: never a real library.
    """
    wanted = {target for _, target in files}
    stale = []
    for directory, names in sorted(present.items()):
        for name, size in sorted(names.items()):
            path = f"{directory}/{name}"
            driver_named = DRIVER_NAME.fullmatch(name) if directory != BIN_DIR else name in BINARIES
            if size == 0 and driver_named and path not in wanted:
                stale.append(path)
    return stale


# --- reading ------------------------------------------------------------------------


def read_version(root: str = "/") -> str | None:
    try:
        with open(os.path.join(root, VERSION_FILE), encoding="ascii", errors="replace") as stream:
            return parse_version(stream.read())
    except OSError:
        return None


def read_listing(root: str, directories: tuple[str, ...] = (*LIB_DIRS, BIN_DIR)) -> Listing:
    """The regular files and symlinks in each directory under root (names only)."""
    listing: Listing = {}
    for directory in directories:
        names: dict[str, str | None] = {}
        try:
            entries = list(os.scandir(os.path.join(root, directory.lstrip("/"))))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_symlink():
                    names[entry.name] = os.readlink(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    names[entry.name] = None
            except OSError:
                continue
        listing[directory] = names
    return listing


def read_host(root: str = "/") -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """The host driver's version and the files a container gets for it."""
    version = read_version(root)
    return version, (driver_files(read_listing(root), version) if version else ())


def read_container_versions(rootfs: str) -> frozenset[str]:
    names: list[str] = []
    for directory in LIB_DIRS:
        try:
            names += os.listdir(os.path.join(rootfs, directory.lstrip("/")))
        except OSError:
            continue
    return container_versions(names)
