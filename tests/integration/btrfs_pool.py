"""A real btrfs filesystem for the integration tests: a sparse file on a loop device, quota on.

Made under /var/tmp with a unique name, mounted where a lab wants it, and
on the way out (after a failure too) unmounted, its loop device detached
and the file removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

from .lab import sh

POOL_SIZE = "3G"


@contextlib.contextmanager
def btrfs_pool(mount_point: str, size: str = POOL_SIZE) -> Iterator[str]:
    """Mount a fresh btrfs filesystem (quota enabled) at mount_point; yield the file holding it."""
    image = f"/var/tmp/gpushell-test-pool-{secrets.token_hex(4)}.img"
    loop = ""
    mounted = False
    try:
        sh(["truncate", "-s", size, image])
        loop = sh(["losetup", "--find", "--show", image]).stdout.strip()
        sh(["mkfs.btrfs", "-q", loop])
        os.makedirs(mount_point, mode=0o755, exist_ok=True)
        sh(["mount", loop, mount_point])
        mounted = True
        sh(["btrfs", "quota", "enable", mount_point])
        yield image
    finally:
        if mounted:
            result = sh(["umount", mount_point], check=False)
            if result.returncode != 0:  # something still holds it: detach it lazily
                sh(["umount", "-l", mount_point], check=False)
        with contextlib.suppress(OSError):
            os.rmdir(mount_point)
        if loop:
            sh(["losetup", "-d", loop], check=False)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(image)
