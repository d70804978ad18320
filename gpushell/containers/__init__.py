"""A student's container for its whole life: the LXC backend, its config, rootfs, storage, snapshots."""
