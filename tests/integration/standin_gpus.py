"""Stand-in NVIDIA GPUs that a test cluster member's engine lists and gives to containers.

No machine the tests run on has an NVIDIA GPU.  In a member's own mount
namespace (lxdcluster.py runs each daemon in one), `script` makes what
the engine reads of a real card, and nothing of it is seen outside:

- a PCI device of display class bound to a driver named `nvidia`, over a
  tmpfs on /sys/bus/pci/devices;
- the driver's /proc/driver/nvidia/gpus/ADDRESS/information: the text a
  real H200 gave (tests/data/real_gpu), over a tmpfs on /proc/driver;
- the nodes /dev/nvidiaN, nvidiactl, nvidia-uvm and nvidia-uvm-tools with
  that H200's numbers, in an overlay on /dev.

With `drm`, the card also has a DRM card and render node, as with the
nvidia-drm module loaded; without, it is that H200 as it was (no DRM
node).  A container given such a GPU gets the nodes; opening one fails
with ENXIO, since no driver stands behind the numbers.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shlex

RECORDED = json.loads((pathlib.Path(__file__).parents[1] / "data/real_gpu/h200.json").read_text())
NVIDIA_MAJOR, CTL_MINOR = 195, 255
DRM_MAJOR, RENDER_BASE = 226, 128
UVM_MAJOR = int(RECORDED["host"]["dev"]["/dev/nvidia-uvm"].split()[1].split(":")[0])  # the kernel's pick
DISPLAY_CLASS = RECORDED["host"]["pci_nvidia"]["0000:00:06.0"]["class"].strip()  # 0x030200: 3D controller
NVIDIA_VENDOR = "0x10de"


@dataclasses.dataclass(frozen=True)
class StandinGpu:
    minor: int  # its /dev/nvidiaN
    pci: str  # its PCI address
    drm: int | None  # its DRM card number; None: no DRM node (no nvidia-drm module)


def information(gpu: StandinGpu) -> str:
    """The recorded H200's information file, at this card's address and minor."""
    (recorded,) = RECORDED["host"]["gpus_information"].values()
    text = str(recorded).replace("Bus Location: \t 0000:00:06.0", f"Bus Location: \t {gpu.pci}")
    return text.replace("Device Minor: \t 0", f"Device Minor: \t {gpu.minor}")


def script(gpus: tuple[StandinGpu, ...], workdir: str) -> str:
    """Shell commands making the GPUs in the current mount namespace (as root); "" for none.

    workdir: an empty directory of the test's, where the overlay's tmpfs is mounted.
    """
    if not gpus:
        return ""
    lines = [
        f'g={shlex.quote(workdir)}; mkdir -p "$g"; mount -t tmpfs standin-gpus "$g"',
        'mkdir -p "$g/up/dri" "$g/work" "$g/new" "$g/nvidia"',
        # A proc and a sysfs with nothing mounted over them: the kernel lets a container (its own
        # user namespace) mount proc and sysfs only while one such is in its mount namespace.
        'mkdir "$g/proc" "$g/sys"; mount -t proc proc "$g/proc"; mount -t sysfs sysfs "$g/sys"',
        "mount -t tmpfs standin-pci /sys/bus/pci/devices; mount -t tmpfs standin-nvidia /proc/driver",
        f'mknod -m 0666 "$g/up/nvidiactl" c {NVIDIA_MAJOR} {CTL_MINOR}',
        f'mknod -m 0666 "$g/up/nvidia-uvm" c {UVM_MAJOR} 0',
        f'mknod -m 0666 "$g/up/nvidia-uvm-tools" c {UVM_MAJOR} 1',
    ]
    for gpu in gpus:
        device, proc = f"/sys/bus/pci/devices/{gpu.pci}", f"/proc/driver/nvidia/gpus/{gpu.pci}"
        node = f"nvidia{gpu.minor}"
        lines += [
            f"mkdir -p {device} {proc}",
            f"echo {DISPLAY_CLASS} > {device}/class; echo {NVIDIA_VENDOR} > {device}/vendor",
            f'ln -s "$g/nvidia" {device}/driver',
            f"printf %s {shlex.quote(information(gpu))} > {proc}/information",
            f'mknod -m 0666 "$g/up/{node}" c {NVIDIA_MAJOR} {gpu.minor}',
        ]
        if gpu.drm is not None:
            card, render = gpu.drm, RENDER_BASE + gpu.drm
            lines += [
                f"mkdir -p {device}/drm/card{card} {device}/drm/renderD{render}",
                f"echo {DRM_MAJOR}:{card} > {device}/drm/card{card}/dev",
                f"echo {DRM_MAJOR}:{render} > {device}/drm/renderD{render}/dev",
                f'mknod -m 0666 "$g/up/dri/card{card}" c {DRM_MAJOR} {card}',
                f'mknod -m 0666 "$g/up/dri/renderD{render}" c {DRM_MAJOR} {render}',
            ]
    lines += [
        'mount -t overlay standin-dev -o lowerdir=/dev,upperdir="$g/up",workdir="$g/work" "$g/new"',
        "for sub in pts shm mqueue hugepages; do",
        'if mountpoint -q /dev/$sub; then mount --rbind /dev/$sub "$g/new/$sub"; fi; done',
        'mount --move "$g/new" /dev',
    ]
    return "; ".join(lines).replace("do; ", "do ") + "; "
