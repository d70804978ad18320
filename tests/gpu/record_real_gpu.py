"""gpushell's GPU readers against a real NVIDIA GPU, and a recording of what they read.

Not part of `make test` (the machines the suite runs on have no NVIDIA
driver).  Run it as root on a host with a driver, NVML and PyTorch:

    PYTHONPATH=. python3 tests/gpu/record_real_gpu.py OUTDIR

It starts two CUDA processes that hold GPU 0's memory: one as root (a host
process) and one as a uid of a stand-in container id range (alice's, as
the registry would give it), the second kept busy with matrix products.
Then gpushell's own code reads them: the `gpus` answer (NVML), the tick's
GPU use, the status page's figures, a cluster member's report
(publish-gpus), the device nodes and driver version,
which processes hold /dev/nvidia0 (by fd and mapping, and by cgroup tree),
nvidia-smi's CSV as `gpus` reads it on a cluster, and `kill-gpu-process`
(refused for the host process, done for alice's).  One line per check;
exit status 1 when any failed.  OUTDIR/recorded.json keeps the raw
readings (NVML, nvidia-smi, /proc, /dev, /sys) that tests/data/real_gpu
replays.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

from gpushell.containers import lxcdevices
from gpushell.core import gpureport, gputable
from gpushell.core.errors import GpushellError
from gpushell.gpu import driverfiles, gpudevices, gpufigures, gpustatus, gpuuse, memberreading, smi
from gpushell.student.banner import PLAIN
from gpushell.student.tables import gpu_table

ALICE, BOB, SIZE = 1_000_000, 1_065_536, 65_536
ALICE_UID = ALICE + 1000  # her container's uid 1000, as the host sees it
GIB = 1024**3
WORKER = """
import sys, time, torch
gib, busy = int(sys.argv[1]), sys.argv[2] == "busy"
held = torch.empty(gib * 2**30, dtype=torch.uint8, device="cuda")
a = torch.randn(4096, 4096, device="cuda")
torch.cuda.synchronize()
print("ready", flush=True)
while True:
    if busy:
        for _ in range(50):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
    else:
        time.sleep(1)
"""

results: list[tuple[bool, str]] = []


def check(ok: bool, what: str) -> None:
    results.append((ok, what))
    print(("PASS " if ok else "FAIL ") + what, flush=True)


def read(path: str) -> str | None:
    try:
        with open(path, errors="replace") as stream:
            return stream.read()
    except OSError as exc:
        return f"<{exc.strerror}>"


def run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        return f"<{exc.strerror}>"
    return done.stdout + done.stderr


def worker(gib: int, busy: bool, uid: int) -> subprocess.Popen[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(gib), "busy" if busy else "idle"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        user=uid,
        group=uid,
        extra_groups=[],
        cwd="/tmp",
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        raise SystemExit(f"worker as uid {uid} did not start: {line!r}")
    return process


def recorded_nvml(nvml: Any) -> list[dict[str, Any]]:
    """Each GPU's raw NVML answers, in the shape tests/gpu's stand-in replays."""
    gpus = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        gpu: dict[str, Any] = {
            "name": _text(nvml.nvmlDeviceGetName(handle)),
            "uuid": _text(nvml.nvmlDeviceGetUUID(handle)),
            "minor": nvml.nvmlDeviceGetMinorNumber(handle),
            "pci_bus_id": _text(nvml.nvmlDeviceGetPciInfo(handle).busId),
        }
        try:
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            gpu["utilization"] = {"gpu": rates.gpu, "memory": rates.memory}
        except nvml.NVMLError as exc:
            gpu["utilization"] = {"error": str(exc)}
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        gpu["memory"] = {"used": memory.used, "total": memory.total, "free": memory.free}
        gpu["temperature"] = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
        for kind, get in (
            ("compute_processes", nvml.nvmlDeviceGetComputeRunningProcesses),
            ("graphics_processes", nvml.nvmlDeviceGetGraphicsRunningProcesses),
        ):
            gpu[kind] = [{"pid": p.pid, "usedGpuMemory": p.usedGpuMemory} for p in get(handle)]
        gpus.append(gpu)
    return gpus


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def host_files() -> dict[str, Any]:
    dev = {
        path: oct(os.lstat(path).st_mode)
        + f" {os.major(os.lstat(path).st_rdev)}:{os.minor(os.lstat(path).st_rdev)}"
        for path in sorted(
            glob.glob("/dev/nvidia*") + glob.glob("/dev/nvidia-caps/*") + glob.glob("/dev/dri/*")
        )
    }
    return {
        "proc_devices": read("/proc/devices"),
        "driver_version": read("/proc/driver/nvidia/version"),
        "gpus_information": {
            path: read(path) for path in glob.glob("/proc/driver/nvidia/gpus/*/information")
        },
        "dev": dev,
        "sys_class_drm": sorted(os.listdir("/sys/class/drm")) if os.path.isdir("/sys/class/drm") else None,
        "modules": sorted(name for name in os.listdir("/sys/module") if "nvidia" in name or name == "drm"),
        "ldconfig_nvidia": [
            line for line in run(["ldconfig", "-p"]).splitlines() if "nvidia" in line or "cuda" in line
        ],
        "nvidia_smi_L": run(["nvidia-smi", "-L"]),
        "pci_nvidia": {
            os.path.basename(path): {
                "class": read(f"{path}/class"),
                "driver": os.path.basename(os.readlink(f"{path}/driver"))
                if os.path.exists(f"{path}/driver")
                else None,
                "drm": sorted(os.listdir(f"{path}/drm")) if os.path.isdir(f"{path}/drm") else None,
            }
            for path in glob.glob("/sys/bus/pci/devices/*")
            if (read(f"{path}/vendor") or "").strip() == "0x10de"
        },
        "cgroup_root": sorted(os.listdir("/sys/fs/cgroup"))[:40],
        "uname": os.uname().release,
    }


def nvml_now() -> Any:
    nvml = gpustatus.load_nvml()
    if nvml is None:
        raise SystemExit("NVML did not initialise: no driver or no pynvml")
    return nvml


@contextlib.contextmanager
def section(name: str) -> Iterator[None]:
    """One group of checks: an exception in it is its failure, and the next group still runs."""
    try:
        yield
    except Exception as exc:  # every failure is reported; none stops the run
        traceback.print_exc()
        check(False, f"{name}: {type(exc).__name__}: {exc}")


def main(out: str) -> int:
    os.makedirs(out, exist_ok=True)
    record: dict[str, Any] = {"host": host_files()}
    owners = gpustatus.Owners(
        {"gpushell-alice": "alice", "gpushell-bob": "bob"}, [(ALICE, SIZE, "alice"), (BOB, SIZE, "bob")]
    )
    host = worker(1, busy=False, uid=0)
    alice = worker(4, busy=True, uid=ALICE_UID)
    bystander = subprocess.Popen(["sleep", "600"])
    time.sleep(4)  # NVML's utilization is a mean over the last second or so
    minor, report = 0, None
    try:
        with section("NVML"):
            nvml = nvml_now()
            check(nvml is not None, "load_nvml: NVML initialised")
            assert nvml is not None
            record["nvml"] = recorded_nvml(nvml)
            record["proc"] = {
                str(p.pid): {"status": read(f"/proc/{p.pid}/status"), "comm": read(f"/proc/{p.pid}/comm")}
                for p in (host, alice)
            }
            record["pids"] = {"host": host.pid, "alice": alice.pid}

            readings = gpustatus.gather(nvml)
            procs = dict(readings[0]["procs"])  # type: ignore[call-overload]
            check(
                {host.pid, alice.pid} <= set(procs), f"gather: both CUDA processes on GPU 0 {sorted(procs)}"
            )
            check(
                (procs.get(alice.pid) or 0) >= 4 * GIB,
                f"gather: alice's memory {procs.get(alice.pid)} >= 4 GiB",
            )
            check(
                readings[0]["mem_total"] > 100 * GIB and readings[0]["mem_used"] >= 5 * GIB,  # type: ignore[operator]
                f"gather: memory {readings[0]['mem_used']} of {readings[0]['mem_total']}",
            )
            nvml.nvmlInit()  # classified shuts NVML down after reading
            as_alice = gpustatus.classified(nvml, "alice", lambda: owners)
            kinds = {proc[1] or proc[2]: proc[0] for proc in as_alice[0]["procs"]}  # type: ignore[attr-defined]
            check(
                kinds.get(alice.pid) == "you",
                f"classified for alice: her process is hers {as_alice[0]['procs']}",
            )
            check(
                [proc for proc in as_alice[0]["procs"] if proc[0] == "other"] != []  # type: ignore[attr-defined]
                and host.pid not in kinds,
                "classified for alice: the host process shows as other, without its PID",
            )
            answer = gputable.encode(as_alice)
            table = gpu_table({k: str(v) for k, v in answer.items()}, PLAIN)
            record["alice_table"] = table
            print(table, end="")
            check(f"you: pid {alice.pid} python3" in table, "the student's table names her process")
            nvml = nvml_now()
            as_bob = gpustatus.classified(nvml, "bob", lambda: owners)
            check(
                ("student", None, "alice", procs[alice.pid]) in as_bob[0]["procs"],  # type: ignore[operator]
                "classified for bob: alice's process carries her name only",
            )

            nvml = nvml_now()
            use = gpuuse.read(nvml, owners)
            figures = gpufigures.read(nvml)
            nvml.nvmlShutdown()
            minor = record["nvml"][0]["minor"]
            check(use is not None and minor in use.busy, f"gpuuse: GPU {minor} busy")
            check(
                use is not None and use.by_user == {"alice": frozenset({minor})},
                f"gpuuse: by user {use and use.by_user}",
            )
            check(
                len(figures) == len(record["nvml"])
                and figures[0].gpu == minor
                and (figures[0].util or 0) > 0,
                f"gpufigures: {figures[0]}",
            )
            record["figures"] = [repr(figure) for figure in figures]

            # A cluster member's report (publish-gpus): processes by container, through the wire format.
            in_range = gpustatus.Owners({}, [(ALICE, SIZE, "gpushell-alice"), (BOB, SIZE, "gpushell-bob")])
            report = memberreading.read(nvml_now(), lambda pid: gpustatus.pid_owner(pid, in_range), 1)
            by_container = dict(report.gpus[0].procs) if report.gpus else {}
            check(
                report.state == gpureport.OK and report.gpus[0].gpu == minor
                and (by_container.get("gpushell-alice") or 0) >= 4 * GIB and "" in by_container,
                f"member report: GPU {minor}, alice's container and a host process {report.gpus[0].procs}",
            )  # fmt: skip
            check(
                gpureport.decode(gpureport.encode(report)) == report,
                "member report: read back from its member config value as written",
            )

        with section("device nodes and driver"):
            gpu_host = gpudevices.read_host("/dev", "/")
            record["gpudevices"] = {
                "nodes": [repr(node) for node in gpu_host.nodes],
                "expected": [repr(node) for node in gpudevices.expected(gpu_host)],
                "missing": [repr(node) for node in gpudevices.missing(gpu_host)],
                "wrong": [repr(pair) for pair in gpudevices.wrong(gpu_host)],
                "minors": list(gpu_host.gpu_minors),
            }
            check(
                any(node.name == f"nvidia{minor}" for node in gpu_host.nodes),
                f"gpudevices: nodes {gpu_host.nodes}",
            )
            check(gpu_host.gpu_minors == (minor,), f"gpudevices: minors {gpu_host.gpu_minors}")
            check(
                not gpudevices.wrong(gpu_host),
                f"gpudevices: no node with wrong numbers {gpudevices.wrong(gpu_host)}",
            )
            check(
                not gpudevices.missing(gpu_host), f"gpudevices: none missing {gpudevices.missing(gpu_host)}"
            )
            version, files = driverfiles.read_host("/")
            smi_version = run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]).strip()
            record["driver"] = {"version": version, "files": files, "smi_version": smi_version}
            check(
                version == smi_version, f"driverfiles: module version {version} == nvidia-smi's {smi_version}"
            )
            print(f"INFO driverfiles: {len(files)} files a container would get: {[f for f, _ in files][:12]}")

        with section("holders"):
            rdev = {name: os.stat(f"/dev/{name}").st_rdev for name in ("nvidia0", "nvidiactl", "nvidia-uvm")}
            for name, number in rdev.items():
                held = {who: lxcdevices.holds(p.pid, number) for who, p in (("host", host), ("alice", alice))}
                check(held == {"host": True, "alice": True}, f"holds /dev/{name}: {held}")
            check(
                not lxcdevices.holds(bystander.pid, rdev["nvidia0"]),
                "holds: a process without the GPU does not",
            )
            check_cgroup_holders(alice.pid, host.pid, rdev["nvidia0"])

        with section("nvidia-smi"):
            path = "/tmp/gpushell-smi.csv"
            status = subprocess.run(smi.command(path), check=False).returncode
            text = read(path) or ""
            record["smi_csv"] = text
            parsed = smi.parse(text)
            apps = {proc[1]: proc[3] for proc in parsed[0]["procs"]} if parsed else {}  # type: ignore[attr-defined]
            check(status == 0 and len(parsed) == len(record["nvml"]), f"smi: {len(parsed)} GPU(s) parsed")
            check({host.pid, alice.pid} <= set(apps), f"smi: both processes listed {apps}")
            check(
                parsed != []
                and parsed[0]["name"] == record["nvml"][0]["name"]
                and parsed[0]["mem_total"] is not None,
                f"smi: name {parsed and parsed[0]['name']}, total {parsed and parsed[0]['mem_total']}",
            )
            # `gpus` on a cluster: nvidia-smi's rows found in the member's report by UUID.
            now = time.time()
            fresh = None if report is None else report.replace(taken=int(now))
            joined = gpureport.with_neighbours(
                parsed, fresh, now, "gpushell-bob", {"gpushell-alice": "alice"}
            )
            others = [proc for proc in joined[0]["procs"] if proc[0] != "you"] if joined else []  # type: ignore[attr-defined]
            check(
                joined is not None and joined[0]["index"] == minor
                and any(proc[:3] == ("student", None, "alice") for proc in others),
                f"smi: its GPU found in the member report by UUID {parsed and parsed[0].get('uuid')}: "
                f"GPU {joined and joined[0]['index']}, others {others}",
            )  # fmt: skip

        with section("kill"):
            try:
                gpustatus.kill(host.pid, ALICE, SIZE)
                check(False, "kill: the host's process was signalled for alice")
            except GpushellError as exc:
                check(
                    "not in your container" in exc.user_message, f"kill refused for the host process: {exc}"
                )
            check(host.poll() is None, "kill: the host process still runs")
            done = gpustatus.kill(alice.pid, ALICE, SIZE)
            with contextlib.suppress(subprocess.TimeoutExpired):
                alice.wait(20)
            check(
                done == {"state": "ok", "killed": alice.pid} and alice.returncode == -signal.SIGTERM,
                f"kill: {done}, {alice.returncode}",
            )
            time.sleep(2)
            nvml = nvml_now()
            use = gpuuse.read(nvml, owners)
            nvml.nvmlShutdown()
            check(
                use is not None and use.by_user == {} and minor in use.busy,
                f"gpuuse after the kill: {use and use.by_user}",
            )
    finally:
        for process in (host, alice, bystander):
            if process.poll() is None:
                process.kill()
                process.wait()
        with open(os.path.join(out, "recorded.json"), "w") as stream:
            json.dump(record, stream, indent=1, default=repr)
    failed = [what for ok, what in results if not ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def check_cgroup_holders(alice_pid: int, host_pid: int, rdev: int) -> None:
    """lxcdevices.holders over a real cgroup tree holding alice's process (cgroup v2 hosts)."""
    top = "/sys/fs/cgroup/gpushell-gpu-check"
    if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        print("INFO holders: no cgroup v2 here, skipped")
        return
    os.makedirs(f"{top}/inner", exist_ok=True)
    try:
        with open(f"{top}/inner/cgroup.procs", "w") as stream:
            stream.write(str(alice_pid))
        container = lxcdevices.Container(os.pidfd_open(alice_pid), top, True)
        node = gpudevices.Node("nvidia0", os.major(rdev), os.minor(rdev))
        found = lxcdevices.holders(container, node)
        check(
            found == [alice_pid], f"holders of the stand-in container's tree: {found} (host's {host_pid} not)"
        )
        container.close()
    finally:
        with open("/sys/fs/cgroup/cgroup.procs", "w") as stream:
            stream.write(str(alice_pid))
        with contextlib.suppress(OSError):
            os.rmdir(f"{top}/inner")
            os.rmdir(top)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gpushell-real-gpu"))
