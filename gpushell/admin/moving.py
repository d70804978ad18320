"""`gpushell-admin move USER MEMBER`: a student's stopped container to another cluster member.

The engine copies the container (snapshots included) and drops the old
copy; gpushell then points the student's registry entry and forward at
the new member.  The student's port stays: the container's proxy device
listens on it wherever it runs, so their `ssh -p PORT` works as before.
"""

from __future__ import annotations

from ..containers.backend import FROZEN, RUNNING
from ..containers.factory import backend_for
from ..containers.lxd import LxdDriver
from ..core import placement
from ..core.errors import ExitStatus, GpushellError
from ..helper import services
from ..system import loanstore, registry_store
from ..system.lock import ADMIN_WAIT, admin_busy, locked
from .editing import edit_user

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import Namespace as Options
    from collections.abc import Callable

    from ..core.paths import Paths


def cmd_move(paths: Paths, args: Options, say: Callable[[str], None]) -> int:
    name, target = args.user, args.member
    with registry_store.Change(paths) as change:
        reg = change.old
        user = reg.user(name)
        if reg.cluster is None:
            raise GpushellError(
                "move needs a cluster (backend: lxd in the registry)", status=ExitStatus.USAGE
            )
        if user.member == target:
            raise GpushellError(f"{name} is on {target} already", status=ExitStatus.USAGE)
        held = loanstore.read(paths).of(name)
        if held:  # numbered on this member: the same numbers elsewhere are other cards
            gpus = ", ".join(str(loan.gpu) for loan in held)
            raise GpushellError(
                f"{name} borrowed GPU {gpus} of {user.member}; end the loan first "
                f"(their `return`, or gpushell-admin loans revoke {name} GPU); nothing moved",
                status=ExitStatus.USAGE,
            )
        others = [other for other in reg.users.values() if other.name != name]
        placement.check_on(reg.cluster, others, target, user.gpus, user.limits.memory)
        new_reg = change.propose(edit_user(change.old_text, name, {"member": target}))
        driver = backend_for(reg)
        assert isinstance(driver, LxdDriver)
        why = driver.silent(target)
        if why is not None:
            raise GpushellError(f"{target} is not answering ({why}); nothing moved")
        with locked(paths.user_lock(name), ADMIN_WAIT, admin_busy(name)):
            state = driver.state(user.container)
            if state in (RUNNING, FROZEN):
                if not args.stop:
                    raise GpushellError(
                        f"{name}'s container is running; stop it first, or pass --stop "
                        "(it starts again on the new member)",
                        status=ExitStatus.USAGE,
                    )
                driver.stop(user.container)
            driver.move(user.container, target)
            try:
                moved = new_reg.users[name]
                ctx = services.Context(paths, new_reg, backend_for(new_reg))
                services.ensure_forward(ctx, moved)
                change.write()
            except BaseException:
                driver.move(user.container, user.member)  # the registry still says the old member
                raise
            if state in (RUNNING, FROZEN):
                services.start(ctx, moved)
                services.wait_until_ready(ctx, moved)
    say(f"moved {name} from {user.member} to {target}: port {user.port} now leads there")
    return ExitStatus.OK
