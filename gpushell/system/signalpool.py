"""The queued-signal pool a container's user namespace takes from the process that starts it.

The kernel sizes it from lxc-start's soft RLIMIT_SIGPENDING (about 96 000
by default) when the namespace is made, and charges every container's
queued signals to host root's one count: at the default, one container
that queues that many leaves every neighbour unable to queue one (sigqueue
and timer_create answer EAGAIN).  So lxc-start gets a limit larger than
the host's memory could fill (kernelpools.signals_wanted); then only each
container's memory limit stops it.  Raising the hard limit takes
CAP_SYS_RESOURCE, which root has on a stock host; without it, the soft
limit goes as far as the hard one allows, and doctor warns.
"""

from __future__ import annotations

import resource

from ..core import kernelpools
from .sysctl import host_memory

SIGPENDING = resource.RLIMIT_SIGPENDING


def widen() -> tuple[int, int]:
    """Raise this process's RLIMIT_SIGPENDING, and so its children's, toward the pool a container
    should get; (the soft limit now, the pool wanted).  RLIM_INFINITY counts as more than any pool."""
    wanted = kernelpools.signals_wanted(host_memory())
    soft, hard = resource.getrlimit(SIGPENDING)
    if _at_least(soft, wanted):
        return (wanted if soft == resource.RLIM_INFINITY else soft), wanted
    if _at_least(hard, wanted):  # room under the hard limit: no capability needed
        resource.setrlimit(SIGPENDING, (wanted, hard))
        return wanted, wanted
    try:
        resource.setrlimit(SIGPENDING, (wanted, wanted))
        return wanted, wanted
    except ValueError:  # CPython's word for EPERM here: no CAP_SYS_RESOURCE
        resource.setrlimit(SIGPENDING, (hard, hard))
        return hard, wanted


def _at_least(limit: int, wanted: int) -> bool:
    return limit == resource.RLIM_INFINITY or limit >= wanted
