"""gpushell benchmarks: each figure beside a baseline measured in the same run.

Run as root with `make bench`.  It builds a throw-away lab (the integration
tests' Lab: own bridge, chain, group, lxcpath, client namespace, sshd),
measures, prints a table of medians (min..max) and ratios against their
baselines and targets, and removes the lab again.  Nothing here asserts:
the table is the verdict.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import pwd
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpushell import forward, iptables, registry
from tests.integration.lab import Lab, Student, sh

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
    ours: list[float] = []
    theirs: list[float] = []
    for round_number in range(count):
        pair = [(action, ours), (baseline, theirs)]
        for work, into in pair if round_number % 2 == 0 else reversed(pair):
            setup()
            into.append(measure(work))
    return ours, theirs


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


def with_synthetic_students(text: str, lab: Lab, count: int) -> str:
    """The registry text plus `count` students that have no container (only entries and forwards)."""
    reg = registry.parse(text, lab.registry)
    used_ips = {u.ip for u in reg.users.values()} | {reg.gateway}
    used_ports = {u.port for u in reg.users.values()}
    hosts = (ip for ip in reg.subnet.hosts() if ip not in used_ips)
    ports = (p for p in range(reg.ports[0], reg.ports[1] + 1) if p not in used_ports)
    top = max([u.idmap for u in reg.users.values()] + [reg.idmap_start])
    lines = [
        f"  {lab.prefix}x{i}:\n    port: {next(ports)}\n    ip: {next(hosts)}\n"
        f"    idmap: {top + (i + 1) * reg.idmap_size}"
        for i in range(count)
    ]
    return text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def registered(lab: Lab, text: str, count: int) -> int:
    """Register `count` students in all (one real), rebuild the forwards; return the rule count."""
    lab.write_registry(with_synthetic_students(text, lab, count - 1))
    lab.admin(*rebuild_command(lab))
    save = sh(["iptables-save", "-t", "nat"]).stdout
    return sum(line.startswith(f"-A {lab.chain} ") for line in save.splitlines())


def bench_growth(lab: Lab, student: Student, small: list[float], original: str) -> None:
    """small: the login with 10 students (figure 1), measured here if not given."""
    settled(lab, student)  # after the cold starts: a container just booted
    small = small or samples(lambda: login_to_prompt(lab, student))
    try:
        rules = registered(lab, original, 1000)
        large = samples(lambda: login_to_prompt(lab, student))
        report(f"3. login with {rules} forwards", large, "with 10", small, "<= 1.2", lambda r: r <= 1.2)
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
               singles, ">= 50x faster", lambda r: r <= 1 / 50)  # fmt: skip
        report(f"3. gpushell-admin {command[0]}, nothing to do", idle, f"{rules} x iptables -A",
               singles, "(report)", lambda r: True)  # fmt: skip
    finally:
        registered(lab, original, 10)


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


def bench_overhead(lab: Lab, student: Student) -> None:
    """The same workload timed from inside (date +%s%N around it) in the container and on the host."""
    settled(lab, student)
    in_container = inside(lab, student)
    workloads = {
        "CPU-bound (sha256 of 400 MB)": "head -c 400M /dev/zero | sha256sum >/dev/null",
        "memory-bound (dd, 64 MB blocks)": "dd if=/dev/zero of=/dev/null bs=64M count=200 status=none",
    }
    for label, work in workloads.items():
        script = f"a=$(date +%s%N); {work}; b=$(date +%s%N); echo $(( (b - a) / 1000 ))"

        def run_on(prefix: list[str], script: str = script) -> float:
            return int(sh([*prefix, "sh", "-c", script]).stdout) / 1000

        # Each run times itself (no lxc-attach start-up counted); in turns, so drift falls on both.
        guest, host = paired_samples(lambda: run_on(in_container), lambda: run_on([]), 12, setup=lambda: None,
                                     measure=lambda work: float(work()))  # type: ignore[arg-type]  # fmt: skip
        # Throughput ratio container/host = host time / container time.
        report(f"6. {label}, in container", guest, "on the host", host, "throughput >= 0.98",
               lambda r: 1 / r >= 0.98, paired=True)  # fmt: skip


FIGURES = ("login", "cold", "growth", "memory", "overhead", "add")


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
            bench_growth(lab, student, small, original)
        if "memory" in args.only:
            bench_memory(lab, student)
        if "overhead" in args.only:
            bench_overhead(lab, student)
        if "add" in args.only:
            bench_add(lab)  # last: its copies leave the disk busy writing back
    finally:
        lab.destroy()
    print(f"\n{len(ROWS)} figures in {time.monotonic() - began:.0f} s, repeat={REPEAT}; lab removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
