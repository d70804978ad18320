"""gpushell benchmarks: each figure beside a baseline measured in the same run.

Run as root with `make bench`.  It builds a throw-away lab (the integration
tests' Lab: own bridge, chain, group, lxcpath, client namespace, sshd),
measures, prints a table of medians (min..max) and ratios against their
baselines and targets, and removes the lab again.  Nothing here asserts:
the table is the verdict.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import io
import ipaddress
import os
import pwd
import select
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpushell.containers import snapshots, storage
from gpushell.containers.factory import backend_for
from gpushell.core import forward, registry
from gpushell.system import iptables
from tests.integration.btrfs_pool import btrfs_pool
from tests.integration.lab import Lab, Student, sh
from tests.integration.test_gpus import open_errno, stand_in_devices

REPEAT = int(os.environ.get("BENCH_REPEAT", "21"))  # --repeat sets it
ROWS: list[str] = []


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return (time.perf_counter() - began) * 1000


def samples(
    action: Callable[[], object], count: int = REPEAT, setup: Callable[[], object] | None = None
) -> list[float]:
    result = []
    for _ in range(count):
        if setup is not None:
            setup()
        result.append(timed(action))
    return result


def paired_samples(
    action: Callable[[], object],
    baseline: Callable[[], object],
    count: int,
    setup: Callable[[], object],
    measure: Callable[[Callable[[], object]], float] = timed,
) -> tuple[list[float], list[float]]:
    """Both sides in turns, the order swapped each round (ABBA...), so drift in the
    machine (disk write-back, a neighbour's load) falls on both alike."""
    ours, theirs = samples_in_turns([action, baseline], count, setup, measure)
    return ours, theirs


def samples_in_turns(
    actions: list[Callable[[], object]],
    count: int,
    setup: Callable[[], object],
    measure: Callable[[Callable[[], object]], float] = timed,
) -> list[list[float]]:
    """Each action once a round, the order reversed every other round."""
    taken: list[list[float]] = [[] for _ in actions]
    for round_number in range(count):
        turns = list(zip(actions, taken, strict=True))
        for work, into in turns if round_number % 2 == 0 else reversed(turns):
            setup()
            into.append(measure(work))
    return taken


def summary(values: list[float], unit: str = "ms") -> str:
    return f"{statistics.median(values):8.1f} {unit} ({min(values):.1f}..{max(values):.1f})"


def report(name: str, values: list[float], baseline_name: str, baseline: list[float], target: str,
           ratio_ok: Callable[[float], bool], unit: str = "ms", paired: bool = False) -> None:  # fmt: skip
    """One row.  paired: the samples were taken in pairs (paired_samples), and the
    ratio is the median of the pairs' ratios: drift between pairs (this VM's disk
    ran 0.8-10 s for one copy) then cancels out, as it cannot in the medians."""
    if paired:
        ratio = statistics.median(ours / theirs for ours, theirs in zip(values, baseline, strict=True))
    else:
        ratio = statistics.median(values) / statistics.median(baseline)
    verdict = "ok" if ratio_ok(ratio) else "MISSED"
    ROWS.append(
        f"| {name} | {summary(values, unit)} | {baseline_name} | {summary(baseline, unit)} "
        f"| {ratio:.2f}{' (pairs)' if paired else ''} | {target} | {verdict} |"
    )
    print(ROWS[-1], flush=True)


def as_student(student: Student) -> dict[str, object]:
    entry = pwd.getpwnam(student.name)
    groups = os.getgrouplist(student.name, entry.pw_gid)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups,
            "env": {"PATH": "/usr/bin:/bin", "HOME": entry.pw_dir, "LOGNAME": student.name},
            "cwd": entry.pw_dir}  # fmt: skip


def login_to_prompt(lab: Lab, student: Student, keep: list[subprocess.Popen[bytes]] | None = None) -> None:
    """The student's gpushell from exec to the menu prompt (what sshd would start)."""
    proc = subprocess.Popen(
        [lab.paths["shell"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        **as_student(student),  # type: ignore[arg-type]
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    seen = b""
    deadline = time.monotonic() + 60
    while b"gpushell>" not in seen:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
        if not chunk:
            raise RuntimeError(f"no menu prompt: {seen[-300:]!r} {proc.stderr.read() if proc.stderr else ''}")
        seen += chunk
    if keep is not None:
        keep.append(proc)
        return
    proc.stdin.write(b"quit\n")
    proc.stdin.close()
    proc.wait(10)


def seed_login(lab: Lab, student: Student) -> None:
    """What a bash login script of the kind gpushell replaces would do."""
    script = (
        f"lxc-info -P {lab.lxcpath} -n {student.container} -s >/dev/null; "
        f"iptables -t nat -C {lab.chain} -p tcp -m tcp --dport {student.port} -m comment "
        f"--comment gpushell:{student.name} -j DNAT --to-destination {student.ip}:22; "
        f"printf 'Welcome %s\\n' {student.name}"
    )
    subprocess.run(["bash", "-c", script], check=True, capture_output=True)


def ssh_handshake(lab: Lab, student: Student) -> None:
    result = lab.ssh(student, "true", port=student.port)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)


def greets(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5) as conn:
            conn.settimeout(1)
            return conn.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def poll_greeting(ip: str, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not greets(ip, port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{ip}:{port} never answered")
        time.sleep(0.01)


def inside(lab: Lab, student: Student) -> list[str]:
    """A command's prefix that runs it in the student's container."""
    return ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--clear-env", "--"]


def settled(lab: Lab, student: Student) -> None:
    """The container running with its boot finished.  sshd answers long before the
    container's other services have started, and their start-up, on the same two
    cores, would be counted against whatever is measured next."""
    lab.ssh(student, "start")
    sh([*inside(lab, student), "timeout", "60", "systemctl", "is-system-running", "--wait"], check=False)


def bench_login(lab: Lab, student: Student) -> list[float]:
    settled(lab, student)
    login = samples(lambda: login_to_prompt(lab, student))
    seed = samples(lambda: seed_login(lab, student))
    handshake = samples(lambda: ssh_handshake(lab, student), count=max(5, REPEAT // 2))
    report("1. login to menu, container running", login, "ssh key login", handshake,
           "<= 0.25", lambda r: r <= 0.25)  # fmt: skip
    report("1. login to menu, container running", login, "bash seed login", seed, "(report)", lambda r: True)
    lab.stop_helper_server()  # the same login through sudo and a fresh helper, as without the service
    try:
        through_sudo = samples(lambda: login_to_prompt(lab, student))
    finally:
        lab.start_helper_server()
    report(
        "1b. login to menu, resident helper", login, "through sudo", through_sudo, "(report)", lambda r: True
    )
    return login


def bench_cold_start(lab: Lab, student: Student) -> None:
    stop = lambda: lab.ssh(student, "stop")  # noqa: E731
    kwargs = as_student(student)

    def gpushell_start() -> None:
        subprocess.run([lab.paths["shell"], "-c", "start"], check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
        poll_greeting(lab.host_ip, student.port)  # through the forward, as the student would

    def raw_start() -> None:
        sh(["lxc-start", "-P", lab.lxcpath, "-n", student.container])
        poll_greeting(student.ip, 22)

    ours, raw = paired_samples(gpushell_start, raw_start, max(4, REPEAT // 2), setup=stop)
    report("2. cold start to sshd answering", ours, "lxc-start + poll :22", raw, "<= 1.2", lambda r: r <= 1.2,
           paired=True)  # fmt: skip


def with_synthetic_students(text: str, lab: Lab, count: int, tag: str = "x") -> str:
    """The registry text plus `count` students that have no container (only entries and forwards)."""
    reg = registry.parse(text, lab.registry)
    used_ips = {u.ip for u in reg.users.values()} | {reg.gateway}
    used_ports = {u.port for u in reg.users.values()}
    hosts = (ip for ip in reg.subnet.hosts() if ip not in used_ips)
    ports = (p for p in range(reg.ports[0], reg.ports[1] + 1) if p not in used_ports)
    top = max([u.idmap for u in reg.users.values()] + [reg.idmap_start])
    lines = [
        f"  {lab.prefix}{tag}{i}:\n    port: {next(ports)}\n    ip: {next(hosts)}\n"
        f"    idmap: {top + (i + 1) * reg.idmap_size}"
        for i in range(count)
    ]
    return text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def registered(lab: Lab, text: str, count: int) -> int:
    """Register `count` students in all (the real ones of text among them), rebuild the forwards;
    return the rule count."""
    real = len(registry.parse(text, lab.registry).users)
    lab.write_registry(with_synthetic_students(text, lab, count - real))
    lab.admin(*rebuild_command(lab))
    save = sh(["iptables-save", "-t", "nat"]).stdout
    return sum(line.startswith(f"-A {lab.chain} ") for line in save.splitlines())


def bench_growth(lab: Lab, student: Student, small: list[float], original: str, neighbour: Student) -> None:
    """small: the login with 10 students (figure 1), measured here if not given.
    neighbour: a second real student, for the login after another's look at the rules."""
    settled(lab, neighbour)
    settled(lab, student)  # after the cold starts: a container just booted
    small = small or samples(lambda: login_to_prompt(lab, student))
    try:
        rules = registered(lab, original, 1000)
        large = samples(lambda: login_to_prompt(lab, student))
        report(f"3. login with {rules} forwards", large, "with 10", small, "<= 1.2", lambda r: r <= 1.2)
        # After a ruleset change the first login checks the whole lab; the class after it does not.
        first = samples(lambda: login_to_prompt(lab, student), setup=lambda: lab.bump_ruleset())
        following = samples(lambda: login_to_prompt(lab, neighbour), setup=lambda: (lab.bump_ruleset(),
                            login_to_prompt(lab, student)))  # fmt: skip
        report(f"3. login with {rules} forwards, the first after a ruleset change", first,
               "no change", large, "(report)", lambda r: True)  # fmt: skip
        report(f"3. login with {rules} forwards, the next student after it", following,
               "no change", large, "<= 1.2", lambda r: r <= 1.2)  # fmt: skip
        reg = registry.parse(lab.read_registry(), lab.registry)

        def rebuild() -> None:  # what apply does to the chain: one read, one iptables-restore
            table = iptables.read_nat()
            iptables.apply(forward.rebuild_lines(table, reg, reg.users.values()))

        flush = lambda: sh(["iptables", "-t", "nat", "-F", lab.chain])  # noqa: E731 - as after a reboot
        # All 1000 rebuilt into the emptied chain, as apply finds it at boot.
        rebuilds = samples(rebuild, count=max(5, REPEAT // 2), setup=flush)
        command = rebuild_command(lab)
        apply = samples(lambda: lab.admin(*command), count=max(5, REPEAT // 2), setup=flush)
        idle = samples(lambda: lab.admin(*command), count=max(5, REPEAT // 2))  # the chain is right
        save = sh(["iptables-save", "-t", "nat"]).stdout.splitlines()
        lines = [line for line in save if line.startswith(f"-A {lab.chain} ")]
        singles = samples(lambda: single_iptables_calls(lab, lines), count=3)
        report(f"3. rebuild {rules} forwards into the flushed chain (apply's chain step)", rebuilds,
               f"{rules} x iptables -A", singles, ">= 50x faster", lambda r: r <= 1 / 50)  # fmt: skip
        report(f"3. gpushell-admin {command[0]}, whole command", apply, f"{rules} x iptables -A",
               singles, ">= 20x faster", lambda r: r <= 1 / 20)  # fmt: skip
        report(f"3. gpushell-admin {command[0]}, nothing to do", idle, f"{rules} x iptables -A",
               singles, "(report)", lambda r: True)  # fmt: skip
    finally:
        registered(lab, original, 10)
        if neighbour != student:  # idle from here on: its container's timers off the later rows
            lab.ssh(neighbour, "stop")


def rebuild_command(lab: Lab) -> list[str]:
    help_text = sh([lab.admin_path, "--help"]).stdout
    return ["apply"] if " apply" in help_text else ["init"]


def single_iptables_calls(lab: Lab, rules: list[str]) -> None:
    chain = f"{lab.chain}B"
    sh(["iptables", "-t", "nat", "-N", chain])
    try:
        for rule in rules:
            parts = rule.split()
            parts[1] = chain
            sh(["iptables", "-t", "nat", *[p.strip('"') for p in parts]])
    finally:
        sh(["iptables", "-t", "nat", "-F", chain])
        sh(["iptables", "-t", "nat", "-X", chain])


def bench_add(lab: Lab) -> None:
    """add against cp -a of the template, on this VM's disk (the figure), which took
    1-11 s for the same copy from one sample to the next; and, first, while the disk
    is quiet, with the lxcpath on a tmpfs, where a copy costs only CPU and memory and
    add's own work shows (a report: nobody keeps containers in memory)."""
    memory = f"{lab.root}/lxcpath-in-memory"
    os.makedirs(memory)
    registry_text = lab.read_registry()
    sh(["mount", "-t", "tmpfs", "-o", "size=4g,mode=0755", "tmpfs", memory])
    try:
        sh(["cp", "-a", f"{lab.lxcpath}/{lab.template}", memory])
        lab.write_registry(registry_text.replace(f"lxcpath: {lab.lxcpath}\n", f"lxcpath: {memory}\n"))
        names = measure_add(lab, memory, "lxcpath on a tmpfs", "mem", "(report)")
        for name in names:
            lab.admin("remove", name, "--purge")
    finally:
        lab.write_registry(registry_text)
        sh(["umount", memory], check=False)
        os.rmdir(memory)
    names = measure_add(lab, lab.lxcpath, "until on disk", "add", "<= 1.5")
    template = f"{lab.lxcpath}/{lab.template}/rootfs"
    disk = int(sh(["du", "-sm", f"{lab.lxcpath}/{names[0]}"]).stdout.split()[0])
    template_mb = int(sh(["du", "-sm", template]).stdout.split()[0])
    report("4. disk per student", [float(disk)], "template", [float(template_mb)], "(report)", lambda r: True,
           "MB")  # fmt: skip
    for name in names:
        lab.admin("remove", name, "--purge")


def measure_add(lab: Lab, lxcpath: str, where: str, tag: str, goal: str) -> list[str]:
    """One row: add and cp -a in turns, each until its copy is on disk; the students made."""
    names: list[str] = []
    template = f"{lxcpath}/{lab.template}/rootfs"
    target = f"{lxcpath}/.bench-copy"

    def add() -> None:
        names.append(f"{lab.prefix}{tag}{len(names)}")
        lab.admin("add", names[-1])

    def settle() -> None:  # each sample starts with the disk quiet: no write-back of the last
        sh(["rm", "-rf", target])
        sh(["sync"])

    def copy() -> None:
        sh(["cp", "-a", template, target])

    def on_disk(work: Callable[[], object]) -> float:
        """Until the copy is on disk: the page cache would otherwise hand its
        write-back to whichever sample comes next."""
        return timed(lambda: (work(), sh(["sync"])))

    # In turns: run all of one side first, and the other pays for its write-back.
    adds, copies = paired_samples(add, copy, max(4, REPEAT // 4), settle, measure=on_disk)
    settle()
    report(f"4. gpushell-admin add, {where}", adds, "cp -a of the template", copies, goal,
           lambda r: r <= 1.5 or goal == "(report)", paired=True)  # fmt: skip
    return names


DATA_FILES, DATA_FILE_SIZE = 20_000, 100 * 1024  # 2 GB in 20 000 files


class StorageModes:
    """One lab, two storage kinds: the registry's lxcpath and `storage:` switched
    between the lab's own directory (dir, on this VM's disk) and a btrfs pool."""

    def __init__(self, lab: Lab, pool: str) -> None:
        self.lab, self.pool = lab, pool
        self.dir_text = lab.read_registry()

    def use(self, kind: str) -> None:
        text = self.lab.read_registry()
        text = text.replace(f"lxcpath: {self.pool}\n", f"lxcpath: {self.lab.lxcpath}\n")
        text = text.replace("storage: btrfs\n", "")
        if kind == "btrfs":
            text = text.replace(f"lxcpath: {self.lab.lxcpath}\n", f"lxcpath: {self.pool}\n")
            text = text.replace("users:\n", "storage: btrfs\nusers:\n", 1)
        self.lab.write_registry(text)

    def registry(self) -> registry.Registry:
        return registry.parse(self.lab.read_registry(), self.lab.registry)


def fill(reg: registry.Registry, container: str) -> None:
    """DATA_FILES files of DATA_FILE_SIZE bytes into the container's /srv, written inside by its root."""
    block = os.urandom(DATA_FILE_SIZE)
    with subprocess.Popen(backend_for(reg).attach(container, ["tar", "-x", "-C", "/srv"]),
                          stdin=subprocess.PIPE) as tar:  # fmt: skip
        assert tar.stdin is not None
        with tarfile.open(fileobj=tar.stdin, mode="w|") as stream:
            for number in range(DATA_FILES):
                info = tarfile.TarInfo(f"data/{number // 1000}/{number}")
                info.size = DATA_FILE_SIZE
                # Each file its own bytes: no two share a block.
                stream.addfile(info, io.BytesIO(number.to_bytes(8, "big") + block[8:]))
        tar.stdin.close()
        if tar.wait() != 0:
            raise RuntimeError(f"filling {container} failed")


def bench_storage(lab: Lab) -> None:
    """btrfs storage against dir, each in the same run on the same lab: add, a new
    container's disk, and snapshot and restore of a container holding 2 GB in
    20 000 files (the storage's own work, called in-process as the helper does)."""
    pool = f"{lab.root}/pool"
    with btrfs_pool(pool, size="12G"):
        modes = StorageModes(lab, pool)
        made: dict[str, list[str]] = {"dir": [], "btrfs": []}
        try:
            modes.use("btrfs")
            lab.admin("template", "build")
            measure_storage(lab, modes, made)
        finally:
            for kind, names in made.items():
                modes.use(kind)
                for name in names:
                    lab.admin("remove", name, "--purge", check=False)
            lab.write_registry(modes.dir_text)


def measure_storage(lab: Lab, modes: StorageModes, made: dict[str, list[str]]) -> None:
    def adder(kind: str) -> Callable[[], object]:
        def add() -> None:
            modes.use(kind)
            made[kind].append(f"{lab.prefix}{kind[0]}{len(made[kind])}")
            lab.admin("add", made[kind][-1])

        return add

    def settle() -> None:
        sh(["sync"])

    def on_disk(work: Callable[[], object]) -> float:  # as in measure_add
        return timed(lambda: (work(), sh(["sync"])))

    cow, full = paired_samples(adder("btrfs"), adder("dir"), max(3, REPEAT // 6), settle, measure=on_disk)
    report("5. gpushell-admin add, btrfs, until on disk", cow, "add on dir", full, ">= 20x faster",
           lambda r: r <= 1 / 20, paired=True)  # fmt: skip
    used = {kind: disk_of(modes, kind, made[kind][0]) for kind in ("btrfs", "dir")}
    report("5. disk per student before writes, btrfs", [used["btrfs"]], "on dir", [used["dir"]], "<= 5 MB",
           lambda r: used["btrfs"] <= 5, unit="MB")  # fmt: skip
    students = {kind: modes.registry().users[made[kind][0]] for kind in ("btrfs", "dir")}
    for kind, user in students.items():
        modes.use(kind)
        reg = modes.registry()
        backend_for(reg).start(user.container)
        fill(reg, user.container)

    taken: dict[str, list[str]] = {"dir": [], "btrfs": []}

    def snapshot(kind: str) -> Callable[[], object]:
        def take() -> None:
            modes.use(kind)
            reg = modes.registry()
            taken[kind].append(f"bench{len(taken[kind])}")
            snapshots.create(reg, students[kind], backend_for(reg), taken[kind][-1])

        return take

    def only_the_newest() -> None:  # each side's newest stays, for the size and the restore
        for kind, user in students.items():
            modes.use(kind)
            reg = modes.registry()
            for name in taken[kind][:-1]:
                if any(snap.name == name for snap in snapshots.list_snapshots(reg, user)):
                    snapshots.delete(reg, user, name)
        sh(["sync"])

    count = max(3, REPEAT // 7)
    cow, full = paired_samples(snapshot("btrfs"), snapshot("dir"), count, only_the_newest, measure=on_disk)
    report("5. snapshot of a running container, 2 GB in 20 000 files, btrfs", cow, "on dir", full,
           ">= 100x faster", lambda r: r <= 1 / 100, paired=True)  # fmt: skip
    kept = {kind: snapshot_size(modes, kind, students[kind], taken[kind][-1]) for kind in ("btrfs", "dir")}
    report("5. disk taken by a snapshot before the container changes, btrfs", [kept["btrfs"]], "on dir",
           [kept["dir"]], "<= 1 MB", lambda r: kept["btrfs"] <= 1, unit="MB")  # fmt: skip

    def restore(kind: str) -> Callable[[], object]:
        def put_back() -> None:
            modes.use(kind)
            reg = modes.registry()
            snapshots.restore(reg, students[kind], backend_for(reg), taken[kind][-1])

        return put_back

    for kind, user in students.items():  # the swap's stop and start are the container's, not storage's
        modes.use(kind)
        backend_for(modes.registry()).stop(user.container)
    cow, full = paired_samples(restore("btrfs"), restore("dir"), count, settle, measure=on_disk)
    report("5. restore of a stopped container, 2 GB in 20 000 files, btrfs", cow, "on dir", full,
           ">= 100x faster", lambda r: r <= 1 / 100, paired=True)  # fmt: skip


def disk_of(modes: StorageModes, kind: str, name: str) -> float:
    """MB a student's new container takes: its quota group's exclusive bytes on btrfs, du on dir."""
    modes.use(kind)
    reg = modes.registry()
    directory = os.path.join(reg.lxcpath, reg.users[name].container)
    if kind == "btrfs":
        store = storage.for_registry(reg)
        store.settle_counts(wait=True)
        return (store.disk_used(directory) or 0) / 2**20
    return int(sh(["du", "-sb", directory]).stdout.split()[0]) / 2**20


def snapshot_size(modes: StorageModes, kind: str, user: registry.User, name: str) -> float:
    """MB the snapshot keeps alone (btrfs), or its recorded size (dir's full copy)."""
    modes.use(kind)
    reg = modes.registry()
    if kind == "btrfs":
        storage.for_registry(reg).settle_counts(wait=True)
    sizes = {snap.name: snap.size for snap in snapshots.list_snapshots(reg, user, measured=True)}
    return sizes[name] / 2**20


def bench_memory(lab: Lab, student: Student) -> None:
    waiting: list[subprocess.Popen[bytes]] = []
    sizes = []
    for _ in range(5):
        login_to_prompt(lab, student, keep=waiting)
    for proc in waiting:
        with open(f"/proc/{proc.pid}/status") as status:
            rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        sizes.append(rss / 1024)
        assert proc.stdin is not None
        proc.stdin.write(b"quit\n")
        proc.stdin.close()
        proc.wait(10)
    baseline = []
    for _ in range(5):
        idle = subprocess.Popen(
            ["/usr/bin/python3", "-I", "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        time.sleep(0.3)
        with open(f"/proc/{idle.pid}/status") as status:
            baseline.append(next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024)
        idle.communicate(b"")
    report("5. RSS of gpushell at the menu", sizes, "idle python3 -I", baseline, "<= 16 MB abs.",
           lambda r: max(sizes) <= 16, "MB")  # fmt: skip


CPU_LABEL = "CPU-bound (sha256 of 400 MB)"
CPU_WORK = "head -c 400M /dev/zero | sha256sum >/dev/null"


def self_timed(prefix: list[str], work: str) -> float:
    """ms that work took, timed by the shell that runs it (date +%s%N around it): no lxc-attach start-up."""
    script = f"a=$(date +%s%N); {work}; b=$(date +%s%N); echo $(( (b - a) / 1000 ))"
    return int(sh([*prefix, "sh", "-c", script]).stdout) / 1000


def bench_overhead(lab: Lab, student: Student) -> None:
    """The same workload timed from inside (date +%s%N around it) in the container and on the host."""
    settled(lab, student)
    in_container = inside(lab, student)
    workloads = {
        CPU_LABEL: CPU_WORK,
        "memory-bound (dd, 64 MB blocks)": "dd if=/dev/zero of=/dev/null bs=64M count=200 status=none",
    }
    for label, work in workloads.items():

        def run_on(prefix: list[str], work: str = work) -> float:
            return self_timed(prefix, work)

        # Each run times itself (no lxc-attach start-up counted); in turns, so drift falls on both.
        guest, host = paired_samples(lambda: run_on(in_container), lambda: run_on([]), 12, setup=lambda: None,
                                     measure=lambda work: float(work()))  # type: ignore[arg-type]  # fmt: skip
        # Throughput ratio container/host = host time / container time.
        report(f"6. {label}, in container", guest, "on the host", host, "throughput >= 0.98",
               lambda r: 1 / r >= 0.98, paired=True)  # fmt: skip


def all_at_once(jobs: list[Callable[[], object]]) -> None:
    """Each job in its own thread, all started together; return when all are done (the first error raised)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


CROWD = 20  # students logging in at once
# A student's ssh client runs on their own machine; the bench's run on the
# server's cores, beside the boots.  OpenSSH's default key exchange
# (sntrup761x25519) costs the client ~75 ms of CPU a login and the server
# next to nothing: the crowd's clients use curve25519, whose client side
# costs ~1 ms, so the figure counts the server's work, not the laptops'.
CLIENT_KEX = ("-o", "KexAlgorithms=curve25519-sha256")
START_TIMEOUT = 300  # seconds a crowd's boot may take, on either side


def admit_crowd(lab: Lab) -> None:
    """Let the lab's sshd take CROWD handshakes at once.  At its default MaxStartups
    (10:30:100) it drops 30% and more of the unauthenticated connections beyond 10
    ("kex_exchange_identification: Connection closed"), and a crowd loses logins."""
    assert lab.sshd is not None
    with open(lab.paths["sshd_config"], "a", encoding="utf-8") as stream:
        stream.write(f"MaxStartups {2 * CROWD}:30:{4 * CROWD}\n")  # after the drop-in's `Match all`
    os.kill(lab.sshd.pid, signal.SIGHUP)  # sshd re-executes itself, same pid, new config
    time.sleep(0.5)
    poll_greeting(lab.host_ip, lab.sshd_port)


def plain_account(lab: Lab, like: Student) -> Student:
    """A host account with an ordinary shell and like's key (removed with the lab: its prefix)."""
    name = f"{lab.prefix}plain"
    sh(["useradd", "--create-home", "--shell", "/bin/sh", name])
    ssh_dir = f"/home/{name}/.ssh"
    os.makedirs(ssh_dir, mode=0o700)
    shutil.copy(like.key + ".pub", f"{ssh_dir}/authorized_keys")
    sh(["chown", "-R", f"{name}:{name}", ssh_dir])
    return dataclasses.replace(like, name=name)


def bench_crowd(lab: Lab) -> None:
    """CROWD students log in at once with their containers stopped (a lab session's
    start), against CROWD raw lxc-starts + polls of port 22 in parallel: whether the
    helper's locks, iptables and sudo make a crowd wait on each other."""
    crowd: list[Student] = []
    try:
        for number in range(CROWD):
            crowd.append(lab.add_student(f"crowd{number}"))
        sh(["sync"])  # the copies written back before anything is timed
        admit_crowd(lab)

        def stop_all() -> None:
            all_at_once([lambda s=s: sh(["lxc-stop", "-P", lab.lxcpath, "-n", s.container, "-k"], check=False)
                         for s in crowd])  # fmt: skip
            left = [s.name for s in crowd if lab.state(s) != "STOPPED"]
            if left:
                raise RuntimeError(f"not stopped: {left}")

        # Each student's own wait, from the round's start: starts take turns (bootslots.py), so
        # most students get in well before the last, where twenty raw starts all end together.
        waits: dict[str, list[float]] = {"ours": [], "raw": []}  # each round's median student, ms

        def crowd_round(job: Callable[[Student], None], side: str) -> None:
            began, ends = time.monotonic(), []

            def timed(student: Student) -> None:
                job(student)
                ends.append(time.monotonic() - began)

            all_at_once([lambda s=s: timed(s) for s in crowd])
            waits[side].append(statistics.median(ends) * 1000)

        def login(student: Student) -> None:
            # A real ssh, from the client netns.
            result = lab.ssh(student, "start", options=CLIENT_KEX, timeout=START_TIMEOUT + 60)
            if result.returncode != 0:
                raise RuntimeError(f"{student.name}: ssh start exited {result.returncode}: {result.stderr}")
            poll_greeting(lab.host_ip, student.port)  # through the forward, as the student would

        def raw_start(student: Student) -> None:
            sh(["lxc-start", "-P", lab.lxcpath, "-n", student.container])
            poll_greeting(student.ip, 22, timeout=START_TIMEOUT)

        # The floor for any tool a student reaches by ssh: the same raw starts,
        # with as many plain key logins (a shell running `true`) at once.
        plain = plain_account(lab, crowd[0])

        def plain_login() -> None:
            result = lab.ssh(plain, "true", options=CLIENT_KEX, timeout=START_TIMEOUT)
            if result.returncode != 0:
                raise RuntimeError(f"plain ssh login exited {result.returncode}: {result.stderr}")

        # CROWD boots on this VM's two cores pass the lab's start_timeout (60 s): both sides get more.
        text = lab.read_registry()
        with lab.registry_replaced(text.replace("start_timeout: 60\n", f"start_timeout: {START_TIMEOUT}\n")):
            ours, raw, floor = samples_in_turns(
                [
                    lambda: crowd_round(login, "ours"),
                    lambda: crowd_round(raw_start, "raw"),
                    lambda: all_at_once([lambda s=s: raw_start(s) for s in crowd] + [plain_login] * CROWD),
                ],
                min(5, max(3, REPEAT // 4)),
                setup=stop_all,
            )
        report(f"2. {CROWD} cold logins at once (ssh start), until all answer", ours,
               f"{CROWD} x lxc-start + poll :22", raw, "<= 1.2", lambda r: r <= 1.2, paired=True)  # fmt: skip
        report(f"2b. the same {CROWD} cold logins (report)", ours,
               f"{CROWD} x lxc-start + poll, {CROWD} plain ssh logins", floor, "report", lambda r: True,
               paired=True)  # fmt: skip
        # The floor against the raw starts: what ssh alone costs the crowd, with no tool behind it.
        report(f"2c. {CROWD} x lxc-start + poll, {CROWD} plain ssh logins (report)", floor,
               f"{CROWD} x lxc-start + poll :22", raw, "report", lambda r: True, paired=True)  # fmt: skip
        report(f"2d. the same {CROWD} cold logins, the median student's wait (report)", waits["ours"],
               f"{CROWD} x lxc-start + poll, the median start", waits["raw"], "report", lambda r: True,
               paired=True)  # fmt: skip
    finally:
        for student in crowd:
            lab.admin("remove", student.name, "--purge", check=False)
        sh(["userdel", "--remove", f"{lab.prefix}plain"], check=False)


# The limit keys lxcconfig.limit_lines writes, in either cgroup layout.
LIMIT_KEYS = tuple(f"lxc.{v}.{c}." for v in ("cgroup", "cgroup2") for c in ("memory", "cpu", "pids"))


def bench_limits(lab: Lab, student: Student) -> None:
    """The CPU-bound workload of figure 6 in the same container booted with its
    default limits and booted with the limit lines taken out of its config: the
    cost of the cgroup limits themselves.  Each sample: a boot with one config,
    then the fastest of 5 runs (each timed from inside, as in figure 6): the other
    work on this VM's two cores can only add time to a run."""
    config = f"{lab.lxcpath}/{student.container}/config"
    with open(config, encoding="utf-8") as stream:
        limited = stream.read()
    unlimited = "".join(line for line in limited.splitlines(keepends=True)
                        if not line.lstrip().startswith(LIMIT_KEYS))  # fmt: skip
    if unlimited == limited:
        raise RuntimeError(f"no limit lines in {config}")
    quota_file = "cpu.max" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "cpu.cfs_quota_us"

    def boot_with(text: str) -> None:
        sh(["lxc-stop", "-P", lab.lxcpath, "-n", student.container, "-k"], check=False)
        with open(config, "w", encoding="utf-8") as stream:
            stream.write(text)
        settled(lab, student)

    def under(text: str) -> float:
        boot_with(text)
        quota = sh(["lxc-cgroup", "-P", lab.lxcpath, "-n", student.container, quota_file]).stdout.split()[0]
        if (quota in ("-1", "max")) != (text == unlimited):  # the kernel has what the config says
            raise RuntimeError(f"{student.container}: {quota_file} is {quota}, not what its config says")
        return min(self_timed(inside(lab, student), CPU_WORK) for _ in range(5))

    try:
        capped, free = paired_samples(lambda: under(limited), lambda: under(unlimited), max(4, REPEAT // 4),
                                      setup=lambda: None, measure=lambda work: float(work()))  # type: ignore[arg-type]  # fmt: skip
    finally:
        boot_with(limited)
    report(f"6. {CPU_LABEL}, default limits", capped, "limit lines removed", free, "throughput >= 0.98",
           lambda r: 1 / r >= 0.98, paired=True)  # fmt: skip


TRANSFER = 1 << 30  # bytes per sample: long enough (~0.3 s and up) that start-up is noise
LISTEN_PORT = 5001  # inside the container: its own network, no clash with the host's


LENDING = "lending: {gpus: all, max_per_student: 1}\n"


def bench_lending(lab: Lab, student: Student) -> None:
    """A GPU borrowed into the running container: `gpushell -c borrow` until it returns, which
    the helper does once the device is in place; the same path with `status` beside it."""
    kwargs = as_student(student)

    def shell(command: str) -> None:
        subprocess.run([lab.paths["shell"], "-c", command], check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]

    with stand_in_devices(lab), lab.setting_added(LENDING):
        lab.ssh(student, "start")
        shell("borrow 1 1h")
        usable = open_errno(lab, student, "/dev/nvidia0")
        shell("return all")
        if usable != "6":  # ENXIO: the devices cgroup let the open reach the (missing) driver
            raise RuntimeError(f"a borrowed GPU did not open as expected inside: errno {usable}")
        borrow = samples(lambda: shell("borrow 1 1h"), setup=lambda: shell("return all"))
        shell("return all")
        status = samples(lambda: shell("status"))
    report("8. borrow a GPU into the running container, until usable", borrow, "gpushell -c status", status,
           "<= 150 ms abs.", lambda r: statistics.median(borrow) <= 150)  # fmt: skip
    bench_tick(lab)


TICK_GPUS = 64


@contextlib.contextmanager
def many_stand_in_gpus(lab: Lab, count: int) -> Iterator[str]:
    """count stand-in GPU nodes (c 195 N) and nvidiactl in a directory named by the registry."""
    directory = f"{lab.root}/gpudev-many"
    os.mkdir(directory, 0o755)
    nodes = {f"nvidia{n}": n for n in range(count)} | {"nvidiactl": 255}
    try:
        for name, minor in nodes.items():
            os.mknod(f"{directory}/{name}", 0o666 | stat.S_IFCHR, os.makedev(195, minor))
        with lab.setting_added(f"gpu_devices: {directory}\n"):
            yield directory
    finally:
        shutil.rmtree(directory)


def bench_tick(lab: Lab) -> None:
    """gpushell-admin tick, a lab of 1000 students and 64 GPUs: every GPU lent, 100 in line."""
    from gpushell.core import lending
    from gpushell.core.paths import Paths
    from gpushell.system import loanstore

    original = lab.read_registry()
    paths = Paths(**lab.paths)  # type: ignore[arg-type]
    try:
        with many_stand_in_gpus(lab, TICK_GPUS):
            text = with_synthetic_students(lab.read_registry(), lab, 1000, tag="t").replace(
                "users:\n", "lending: {gpus: all, max_duration: 1d}\nusers:\n", 1
            )
            lab.write_registry(text)
            names = sorted(registry.parse(text, lab.registry).users)
            now = time.time()
            book = lending.LoanBook(
                [lending.Loan(names[n], n, now, now + 86400) for n in range(TICK_GPUS)],
                [lending.Waiter(names[TICK_GPUS + n], 1, 3600, now) for n in range(100)],
            )
            loanstore.update(paths, lambda _old: (book, None))
            lab.admin("tick")  # the registry's compiled copy made once, as every minute after the first
            ticks = samples(lambda: lab.admin("tick"))
            floor = samples(lambda: lab.admin("--version"))
    finally:
        loanstore.update(paths, lambda _old: (lending.EMPTY, None))
        lab.write_registry(original)
    report(f"8. gpushell-admin tick, 1000 students, {TICK_GPUS} GPUs lent, 100 in line", ticks,
           "gpushell-admin --version", floor, "<= 500 ms abs.",
           lambda r: statistics.median(ticks) <= 500)  # fmt: skip


def bench_isolation(lab: Lab, student: Student) -> None:
    """TCP throughput host<->container with the isolation tables (isolation.py) against without.

    With the tables the host accepts no new connection from a container, so
    the host connects, in both directions, to a listener in the container:
    systemd-socket-activate (in the template, unlike nc or python) hands each
    accepted connection to `head` (container -> host) or `cat` (host ->
    container).  Every data frame or its ACKs then meets the bridge chains
    (the student port's MAC/IP checks, the MAC check towards its port) and
    the inet input chain (established).  Pairs in turns, tables loaded
    for one side and deleted for the other; the traffic stays on the lab's
    bridge.
    """
    from gpushell.core import isolation

    settled(lab, student)
    reg = registry.parse(lab.read_registry(), lab.registry)

    def tables_on() -> None:
        sh(["nft", "-f", "-"], input=isolation.rebuild_script(reg))

    def tables_off() -> None:
        sh(["nft", "-f", "-"], input=isolation.delete_script(reg))

    directions = {
        "container -> host": (f"dd if=/dev/zero bs=1M count={TRANSFER >> 20} status=none", receive),
        "host -> container": ("cat >/dev/null", send),
    }
    try:
        for label, (program, transfer) in directions.items():
            pid = sh([*inside(lab, student), "sh", "-c",
                      f"systemd-socket-activate -l {LISTEN_PORT} -a --inetd sh -c '{program}' "
                      ">/dev/null 2>&1 </dev/null & echo $!"]).stdout.strip()  # fmt: skip
            try:
                poll_listening(student.ip, LISTEN_PORT)

                def with_tables(transfer: Callable[[str], float] = transfer) -> float:
                    tables_on()
                    return transfer(student.ip)

                def without(transfer: Callable[[str], float] = transfer) -> float:
                    tables_off()
                    return transfer(student.ip)

                ours, theirs = paired_samples(with_tables, without, max(6, REPEAT // 2), setup=lambda: None,
                                              measure=lambda work: float(work()))  # type: ignore[arg-type]  # fmt: skip
            finally:
                sh([*inside(lab, student), "kill", pid], check=False)
            report(f"7. TCP {label}, 1 GiB, isolation tables", ours, "tables deleted", theirs, ">= 0.95",
                   lambda r: r >= 0.95, "MB/s", paired=True)  # fmt: skip
    finally:
        tables_on()


def poll_listening(ip: str, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((ip, port), timeout=1).close()  # served at once: head or cat ends
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ip}:{port} never listened") from None
            time.sleep(0.05)


def receive(ip: str) -> float:
    """MB/s of reading TRANSFER bytes the container sends, from connect to its close."""
    buffer = bytearray(1 << 20)
    view, got = memoryview(buffer), 0
    began = time.perf_counter()
    with socket.create_connection((ip, LISTEN_PORT), timeout=30) as conn:
        while count := conn.recv_into(view):
            got += count
    elapsed = time.perf_counter() - began
    if got != TRANSFER:
        raise RuntimeError(f"received {got} bytes of {TRANSFER}")
    return got / elapsed / 1e6


def send(ip: str) -> float:
    """MB/s of sending TRANSFER bytes into the container, until it has read them all and closed."""
    chunk = memoryview(bytes(1 << 20))
    began = time.perf_counter()
    with socket.create_connection((ip, LISTEN_PORT), timeout=30) as conn:
        for _ in range(TRANSFER // len(chunk)):
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # EOF once cat has read everything
    return TRANSFER / (time.perf_counter() - began) / 1e6


FIGURES = (
    "login", "cold", "growth", "memory", "overhead", "crowd", "limits", "isolation", "lending", "add",
    "storage",
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Measure gpushell against baselines run beside it, on a throw-away lab "
        "(real containers, iptables, sshd); print a table of medians and ratios.  Run as root.",
    )
    names = ", ".join(FIGURES)
    parser.add_argument("--only", metavar="LIST", default=",".join(FIGURES),
                        help=f"figures to measure, comma separated: {names} (default: all)")  # fmt: skip
    parser.add_argument("--repeat", type=int, metavar="N", default=REPEAT,
                        help="samples per figure (default: %(default)s, or $BENCH_REPEAT)")  # fmt: skip
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(FIGURES))
    if unknown or not args.only:
        parser.error(f"unknown figure {', '.join(unknown)}" if unknown else "--only names no figure")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    global REPEAT
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root (make bench)", file=sys.stderr)
        return 2
    REPEAT = args.repeat
    lab = Lab()
    # 1000 students need more than a /24 and a 999-port range.
    lab.subnet = ipaddress.IPv4Network(f"{lab.subnet.network_address}/22", strict=False)
    lab.ports = (lab.ports[0], lab.ports[0] + 1998)
    began = time.monotonic()
    try:
        print(f"setting up lab {lab.prefix} ...", flush=True)
        lab.create()
        student = lab.add_student("bench")
        neighbour = lab.add_student("next") if "growth" in args.only else student
        original = lab.read_registry()
        registered(lab, original, 10)
        print("| figure | median (min..max) | baseline | median (min..max) | ratio | target | |")
        print("|---|---|---|---|---|---|---|")
        small: list[float] = []
        if "login" in args.only:
            small = bench_login(lab, student)
        if "cold" in args.only:
            bench_cold_start(lab, student)
        if "growth" in args.only:
            bench_growth(lab, student, small, original, neighbour)
        if "memory" in args.only:
            bench_memory(lab, student)
        if "overhead" in args.only:
            bench_overhead(lab, student)
        if "limits" in args.only:
            bench_limits(lab, student)
        if "isolation" in args.only:
            bench_isolation(lab, student)
        if "lending" in args.only:
            bench_lending(lab, student)
        if "crowd" in args.only:
            bench_crowd(lab)  # adds and removes its own students
        if "add" in args.only:
            bench_add(lab)  # its copies leave the disk busy writing back
        if "storage" in args.only:
            bench_storage(lab)  # last: 2 GB written, copied and copied back
    finally:
        lab.destroy()
    print(f"\n{len(ROWS)} figures in {time.monotonic() - began:.0f} s, repeat={REPEAT}; lab removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
