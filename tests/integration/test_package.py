"""The Debian package on this machine: installed, upgraded from the previous commit's, removed, purged.

A lab whose entry points import the package's copy (SITE) holds a student
with a running container, a snapshot, a file in their home and a GPU loan.
Before the upgrade the host's drop-ins are made stale: the upgrade must put
this release's back at their real paths, checked, and leave the lab's
registry, container, snapshots and loans as they were, and the host's
registry and state directory too (the lab's copies stand in where this
machine has none).  Remove leaves all of that; purge takes the drop-ins and
nothing else.  The machine is put back as it was, byte for byte, even after
a failure, and the `make install` copy under /usr/local that the other
tests run is never touched.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator

import pexpect
import pytest

from .debs import Package, build_both
from .lab import ENV, Lab, Student, sh
from .test_login import login

SITE = "/usr/lib/python3/dist-packages"  # the package's copy of gpushell
SUDOERS = "/etc/sudoers.d/gpushell"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/gpushell.conf"
HOST_REGISTRY = "/etc/gpushell.yaml"
HOST_STATE = "/var/lib/gpushell"
HOST_LOANS = f"{HOST_STATE}/loans.json"
SAVED = (SUDOERS, SSHD_DROPIN, HOST_REGISTRY, HOST_LOANS)
HELPER = "/usr/bin/gpushell-helper"
SNAPSHOT = "before-upgrade"
NOTES = "written before the upgrade\n"
# Every place the package, its maintainer scripts or `make install` put a file of gpushell's.
TRACES = (
    "/etc/sudoers.d/gpushell*", "/etc/ssh/sshd_config.d/gpushell*", "/etc/systemd/system/**/gpushell*",
    "/usr/bin/gpushell*", f"{SITE}/gpushell*", "/lib/systemd/system/gpushell*",
    "/usr/share/doc/gpushell", "/usr/share/man/man*/gpushell*", "/usr/share/lintian/overrides/gpushell",
    "/var/lib/systemd/deb-systemd-helper-*/**/gpushell*", "/var/lib/dpkg/info/gpushell.*",
    "/usr/local/bin/gpushell*", "/usr/local/lib/python3*/dist-packages/gpushell*",
)  # fmt: skip
STALE_SUDOERS = f"# an earlier release's: one verb\n%gpushell ALL=(root) NOPASSWD: {HELPER} status\n"
STALE_SSHD = "# an earlier release's: one setting\nPermitUserEnvironment no\n"
WRITE_LOAN = """
import json, sys, time
from gpushell.core.lending import Loan, LoanBook
from gpushell.core.paths import Paths
from gpushell.system import loanstore
now = time.time()
loan = Loan(sys.argv[2], 7, now, now + 86400)
loanstore.update(Paths(**json.loads(sys.argv[1])), lambda book: (LoanBook([loan], book.queue), None))
"""
DROPINS = """
import sys
from gpushell.core import dropins, paths
sys.stdout.write(paths.BIN_DIR + "\\0" + dropins.sudoers(paths.DEFAULT) + "\\0" + dropins.sshd(paths.DEFAULT))
"""


# --- the machine ------------------------------------------------------------


def package_python(code: str, *args: str) -> str:
    """Run code with the package's copy of gpushell alone (as its entry points do)."""
    return sh(
        ["/usr/bin/python3", "-IS", "-c", f"import sys; sys.path.append({SITE!r})\n{code}", *args]
    ).stdout


def apt_get(*args: str, check: bool = True) -> str:
    """apt-get as an admin runs it; everything the package needs is installed already (no download)."""
    argv = ["apt-get", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", *args]
    env = {**ENV, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0 or not check, f"{' '.join(argv)}:\n{result.stdout}{result.stderr}"
    return result.stdout + result.stderr


def package_status() -> str:
    """dpkg's status and version of gpushell ("" when dpkg knows no such package)."""
    result = sh(["dpkg-query", "-W", "-f=${Status} ${Version}", "gpushell"], check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def installed() -> bool:
    status = package_status()
    return bool(status) and not status.startswith("unknown ok not-installed")


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def saved_file(path: str) -> tuple[bytes, int] | None:
    data = read_bytes(path)
    return None if data is None else (data, stat.S_IMODE(os.stat(path).st_mode))


def put_back(path: str, saved: tuple[bytes, int] | None) -> None:
    if saved is None:
        for name in (path, f"{path}.gpushell-new"):  # and a checked copy a failed refresh left
            if os.path.lexists(name):
                os.unlink(name)
        return
    data, mode = saved
    with open(path, "wb") as stream:
        stream.write(data)
    os.chmod(path, mode)


def traces() -> dict[str, str]:
    """Each file of gpushell's on this machine and its sha256 (directories and links as such)."""
    found: dict[str, str] = {}
    for pattern in TRACES:
        for path in glob.glob(pattern, recursive=True):
            if os.path.islink(path):
                found[path] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                found[path] = "directory"
            else:
                with open(path, "rb") as stream:
                    found[path] = hashlib.sha256(stream.read()).hexdigest()
    return found


@dataclasses.dataclass
class Machine:
    saved: dict[str, tuple[bytes, int] | None]
    had_state_dir: bool
    traces: dict[str, str]


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    """The machine as it was, put back afterwards: no gpushell package, its own files byte for byte."""
    if installed():
        pytest.fail(f"the gpushell package is here already ({package_status()}); this test would replace it")
    before = Machine({path: saved_file(path) for path in SAVED}, os.path.isdir(HOST_STATE), traces())
    try:
        yield before
    finally:
        if installed():
            apt_get("purge", "gpushell", check=False)
        if installed():  # a maintainer script that failed
            sh(["dpkg", "--purge", "--force-all", "gpushell"], check=False)
        sshd_read = read_bytes(SSHD_DROPIN)
        for path, saved in before.saved.items():
            put_back(path, saved)
        if not before.had_state_dir:
            shutil.rmtree(HOST_STATE, ignore_errors=True)
        if read_bytes(SSHD_DROPIN) != sshd_read:  # the host's own drop-in came back: sshd reads it again
            sh(["invoke-rc.d", "ssh", "reload"], check=False)


@pytest.fixture(scope="module")
def packages() -> Iterator[tuple[Package, Package]]:
    """(previous, current): built in a temporary directory, gone afterwards."""
    with tempfile.TemporaryDirectory(prefix="gpushell-debs-") as workdir:
        previous, current = build_both(workdir)
        for package in (previous, current):
            print(f"built {package.source} as {package.version} in {package.seconds:.1f} s")
        yield previous, current


# --- the lab on the package ---------------------------------------------------


@pytest.fixture(scope="module")
def previous_installed(packages: tuple[Package, Package], machine: Machine) -> Package:
    previous = packages[0]
    apt_get("install", previous.path)
    assert package_status() == f"install ok installed {previous.version}"
    return previous


@pytest.fixture(scope="module")
def packaged_lab(previous_installed: Package) -> Iterator[Lab]:
    """A lab whose gpushell, gpushell-helper and gpushell-admin import the package's copy."""
    with Lab(site_dir=SITE).made() as instance:
        yield instance


@pytest.fixture(scope="module")
def tenant(packaged_lab: Lab) -> Student:
    """A student whose container runs, with a snapshot, a file in their home and a GPU loan."""
    lab = packaged_lab
    student = lab.add_student("pkg")
    assert lab.ssh(student, "start").returncode == 0
    made = lab.ssh(student, "snapshot", SNAPSHOT)
    assert made.returncode == 0, made.stdout + made.stderr
    write = f"printf '{NOTES}' > /home/{student.name}/notes.txt"
    sh(["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--", "sh", "-c", write])
    package_python(WRITE_LOAN, json.dumps(lab.paths), student.name)
    return student


def lab_data(lab: Lab, student: Student) -> dict[str, object]:
    """What no install, upgrade or removal may change: registries, container, snapshots, home, loans."""
    container = f"{lab.lxcpath}/{student.container}"
    snapshots = f"{container}/gpushell-snapshots"
    lxc_info = ["lxc-info", "-P", lab.lxcpath, "-n", student.container]
    return {
        "registry": read_bytes(lab.registry),
        "loans": read_bytes(f"{lab.paths['state_dir']}/loans.json"),
        "host registry": read_bytes(HOST_REGISTRY),
        "host loans": read_bytes(HOST_LOANS),
        "containers": sorted(sh(["lxc-ls", "-P", lab.lxcpath, "-1"]).stdout.split()),
        "config": read_bytes(f"{container}/config"),
        "state and init": (lab.state(student), sh([*lxc_info, "-pH"], check=False).stdout.strip()),
        "snapshots": {name: read_bytes(f"{snapshots}/{name}/info") for name in sorted(os.listdir(snapshots))},
        "home": read_bytes(f"{container}/rootfs/home/{student.name}/notes.txt"),
        "account": sh(["getent", "passwd", student.name]).stdout,
    }


def host_stand_ins(lab: Lab) -> None:
    """The lab's registry and loan book at the host's paths where it has none, to be kept too."""
    if read_bytes(HOST_REGISTRY) is None:
        shutil.copy2(lab.registry, HOST_REGISTRY)
    if not os.path.exists(HOST_STATE):
        os.mkdir(HOST_STATE, 0o700)
        shutil.copy2(f"{lab.paths['state_dir']}/loans.json", HOST_LOANS)


@dataclasses.dataclass
class Upgrade:
    before: dict[str, object]
    output: str


@pytest.fixture(scope="module")
def upgraded(packages: tuple[Package, Package], packaged_lab: Lab, tenant: Student) -> Upgrade:
    """The current package over the previous one, with stale drop-ins at the host's paths first."""
    host_stand_ins(packaged_lab)
    for path, text, mode in ((SUDOERS, STALE_SUDOERS, 0o440), (SSHD_DROPIN, STALE_SSHD, 0o644)):
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(path, mode)
    before = lab_data(packaged_lab, tenant)
    assert before["state and init"][0] == "RUNNING"  # type: ignore[index]
    assert before["snapshots"] and before["home"] == NOTES.encode()
    book = json.loads(before["loans"])  # type: ignore[arg-type]
    assert [(loan["user"], loan["gpu"]) for loan in book["loans"]] == [(tenant.name, 7)]
    output = apt_get("install", packages[1].path)
    return Upgrade(before, output)


@pytest.fixture(scope="module")
def removed(upgraded: Upgrade) -> str:
    return apt_get("remove", "gpushell")


@pytest.fixture(scope="module")
def purged(removed: str) -> str:
    return apt_get("purge", "gpushell")


# --- the tests, in the order the package lives -------------------------------


def test_the_packages_ship_nothing_under_etc_or_var(packages: tuple[Package, Package]) -> None:
    """dpkg itself can then never replace or delete a registry, a state file or a drop-in."""
    for package in packages:
        listing = sh(["dpkg-deb", "-c", package.path]).stdout.splitlines()
        shipped = [line.split()[-1] for line in listing]
        assert any(path.startswith("./usr/bin/gpushell-helper") for path in shipped)
        assert not [path for path in shipped if path.startswith(("./etc/", "./var/"))], package.path
        conffiles = sh(["dpkg-deb", "-f", package.path, "Conffiles"]).stdout
        assert not conffiles.strip()


def test_install_writes_the_dropins_naming_the_packages_helper(previous_installed: Package) -> None:
    for path in (SUDOERS, SSHD_DROPIN):
        assert os.path.isfile(path), path
    with open(SUDOERS, encoding="utf-8") as stream:
        assert f"{HELPER} status" in stream.read()


def test_upgrade_keeps_the_registry_container_snapshots_home_and_loans(
    packages: tuple[Package, Package], packaged_lab: Lab, tenant: Student, upgraded: Upgrade
) -> None:
    assert package_status() == f"install ok installed {packages[1].version}"
    assert lab_data(packaged_lab, tenant) == upgraded.before


def test_upgrade_refreshes_the_dropins_each_checked(upgraded: Upgrade) -> None:
    bin_dir, sudoers, sshd = package_python(DROPINS).split("\0")
    assert bin_dir == "/usr/bin"
    for path, wanted, mode in ((SUDOERS, sudoers, 0o440), (SSHD_DROPIN, sshd, 0o644)):
        with open(path, encoding="utf-8") as stream:
            assert stream.read() == wanted, f"{path} was not refreshed by the upgrade"
        info = os.stat(path)
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, mode), path
        assert not os.path.exists(f"{path}.gpushell-new")
    assert f"{HELPER} snapshot" in sudoers and "/usr/local/" not in sudoers
    assert sh(["visudo", "-cf", SUDOERS], check=False).returncode == 0
    checked = sh(["sshd", "-t"], check=False)  # the host's whole configuration, which includes the drop-in
    assert checked.returncode == 0, checked.stderr
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as alone:
        alone.write(f"Include {SSHD_DROPIN}\n")
        alone.flush()
        assert sh(["sshd", "-t", "-f", alone.name], check=False).returncode == 0


def test_the_upgraded_package_serves_the_lab(packaged_lab: Lab, tenant: Student, upgraded: Upgrade) -> None:
    lab = packaged_lab
    assert sh(["/usr/bin/gpushell-admin", "--help"]).stdout.startswith("usage: gpushell-admin")
    with open(lab.admin_path, encoding="utf-8") as stream:
        assert f"sys.path.extend([{SITE!r}])" in stream.read()
    # The lab's own drop-ins, refreshed as the postinst refreshes the host's.
    lab.admin("init", "--drop-ins")
    # The lab's resident helper still runs the previous package's code: doctor says so, and it is
    # restarted as the package restarts the host's gpushell-helper.service.
    stale = lab.admin("doctor", check=False)
    assert stale.returncode != 0, stale.stdout
    assert [line for line in stale.stdout.splitlines() if line.startswith("FAIL")] == [
        f"FAIL: the resident helper (PID {lab.helper_server.pid if lab.helper_server else 0}) started before "
        "gpushell was last installed: it answers students with the old code — fix: "
        "systemctl restart gpushell-helper.service"
    ], stale.stdout
    lab.stop_helper_server()
    lab.start_helper_server()
    doctor = lab.admin("doctor", check=False)
    assert doctor.returncode == 0 and "FAIL" not in doctor.stdout, doctor.stdout
    status = lab.ssh(tenant, "status")
    assert status.returncode == 0 and "running" in status.stdout and tenant.ip in status.stdout, status
    listed = lab.ssh(tenant, "snapshots")
    assert listed.returncode == 0 and SNAPSHOT in listed.stdout, listed
    child = login(lab, tenant)
    assert f"Welcome, {tenant.name}." in child.before
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert lab_data(lab, tenant) == upgraded.before


def test_remove_leaves_the_lab_its_data_and_the_dropins(
    packaged_lab: Lab, tenant: Student, upgraded: Upgrade, removed: str
) -> None:
    assert package_status().startswith("deinstall ok config-files")
    assert not os.path.exists("/usr/bin/gpushell-admin") and not os.path.exists(f"{SITE}/gpushell")
    assert lab_data(packaged_lab, tenant) == upgraded.before
    for path in (SUDOERS, SSHD_DROPIN):  # configuration stays until purge
        assert os.path.isfile(path), path


def test_purge_takes_the_dropins_and_leaves_the_machine_as_it_was(
    machine: Machine, packaged_lab: Lab, tenant: Student, upgraded: Upgrade, purged: str
) -> None:
    assert not installed()
    assert not os.path.exists(SUDOERS) and not os.path.exists(SSHD_DROPIN)
    assert lab_data(packaged_lab, tenant) == upgraded.before
    dropins = (SUDOERS, SSHD_DROPIN)
    now = {path: digest for path, digest in traces().items() if path not in dropins}
    assert now == {path: digest for path, digest in machine.traces.items() if path not in dropins}
    # The make install copy still answers for the other tests.
    assert sh(["/usr/local/bin/gpushell-admin", "--help"]).stdout.startswith("usage: gpushell-admin")
