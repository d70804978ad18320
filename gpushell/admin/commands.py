"""gpushell-admin: the administrator's tool (runs as root)."""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..core.errors import ExitStatus, GpushellError
from ..core.paths import DEBIAN_SUITE, DEFAULT, Paths
from ..system.lock import locked
from . import cli
from .cli import Arg, Command, Options

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..core.model import Registry


def say(text: str) -> None:
    print(text, flush=True)


def warn(warnings: Sequence[str]) -> None:
    """Each warning on its own stderr line, in one write (a thousand students can give two thousand)."""
    sys.stderr.write("".join(f"warning: {warning}\n" for warning in warnings))
    sys.stderr.flush()


def fail(text: str) -> None:
    print(f"gpushell-admin: {text}", file=sys.stderr)


def cmd_init(paths: Paths, args: Options) -> int:
    from . import hostinit

    if args.drop_ins:
        if args.storage is not None or args.pool_file is not None or args.size is not None:
            fail("--drop-ins installs the drop-ins only: leave out --storage, --pool-file and --size")
            return ExitStatus.USAGE
        hostinit.ensure_dropins(paths, say)
        say(f"drop-ins ready: {paths.sudoers_dropin}, {paths.sshd_dropin}")
        return ExitStatus.OK
    request = None
    if args.storage is not None or args.pool_file is not None or args.size is not None:
        pool_file = None if args.pool_file is None else os.path.abspath(args.pool_file)
        request = hostinit.StorageRequest(args.storage or "btrfs", pool_file, args.size)
    reg = hostinit.init(paths, say, request)
    say(
        f"host ready: bridge {reg.bridge} {reg.gateway}/{reg.subnet.prefixlen}, chain {reg.chain}, "
        f"group {paths.group}, storage {reg.storage} in {reg.lxcpath}"
    )
    return ExitStatus.OK


def size_option(text: str) -> int:
    """--size: a size like 200G or 512M (powers of 1024)."""
    from ..core import registry

    try:
        return registry.size_in_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_template_build(paths: Paths, args: Options) -> int:
    from ..containers import storage, template
    from ..containers.factory import backend_for
    from ..core import registry
    from ..system import registry_store

    reg = registry_store.load(paths)
    name = args.name or reg.template
    if not registry.CONTAINER_NAME.fullmatch(name):
        raise GpushellError(f"{name!r} is not a valid template name", status=ExitStatus.USAGE)
    if any(user.container == name for user in reg.users.values()):
        raise GpushellError(f"{name} is a student's container, not a template", status=ExitStatus.USAGE)
    if reg.cluster is not None:
        return cluster_image_build(paths, args, reg, name)
    directory = backend_for(reg).directory(name)
    if os.path.exists(directory) and not args.force:
        say(f"template {name} is already built ({directory}); --force rebuilds it")
        return ExitStatus.OK
    store = storage.for_registry(reg)  # the registry's kind, not the filesystem's, decides the tree
    storage.check_supported(reg)  # before a debootstrap that may take minutes
    extra = tuple(p for p in (args.packages or "").split(",") if p)
    tarball = template.ensure_cached(paths.template_cache, args.suite, extra, args.mirror)
    # Under the registry lock: an add copying this template meanwhile must
    # not see it half-replaced, and apply must not take the staging
    # directory for a leftover.
    with locked(paths.registry_lock):
        if os.path.exists(directory):
            backend_for(reg).destroy(reg, name)
        template.install(tarball, reg.lxcpath, name, args.suite, store)
    say(f"template {name} built from {tarball}")
    return ExitStatus.OK


def cluster_image_build(paths: Paths, args: Options, reg: Registry, name: str) -> int:
    """On a cluster the template is an image of the engine: the same Debian tree, packed and imported."""
    from ..containers import lxdimage, template
    from ..containers.lxd import LxdDriver

    assert reg.cluster is not None
    driver = LxdDriver(reg)
    if not args.force and driver.has_image(name):
        say(f"image {name} is already in project {reg.cluster.project}; --force imports it again")
        return ExitStatus.OK
    extra = tuple(p for p in (args.packages or "").split(",") if p)
    tarball = template.ensure_cached(paths.template_cache, args.suite, extra, args.mirror)
    image = tarball.removesuffix(".tar") + f"-lxd{lxdimage.RECIPE}.tar"
    if not os.path.exists(image):
        lxdimage.pack(tarball, image, f"gpushell {args.suite} from {os.path.basename(tarball)}")
    fingerprint = driver.client().upload_image(image, name)
    say(f"image {name} ({fingerprint[:12]}) imported into project {reg.cluster.project} from {tarball}")
    return ExitStatus.OK


def read_keys(args: Options) -> str:
    from ..system import accounts

    if args.key is None:
        return accounts.existing_keys(args.user)
    try:
        with open(args.key, encoding="utf-8") as stream:
            return accounts.validate_keys(stream.read(), args.key)
    except OSError as exc:
        raise GpushellError(f"cannot read {args.key}: {exc.strerror}") from None


def gpus_option(text: str) -> str | list[int]:
    """--gpus: all, none, or GPU numbers separated by commas (0,2)."""
    if text in ("all", "none"):
        return text
    parts = text.split(",")
    if not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: use all, none or GPU numbers like 0,2")
    numbers = [int(part) for part in parts]
    if len(set(numbers)) != len(numbers):
        raise argparse.ArgumentTypeError(f"{text!r} lists a GPU twice")
    return sorted(numbers)


def expires_option(text: str) -> object:
    """--expires: the day the account expires (YYYY-MM-DD), today or later; a date YAML writes unquoted."""
    import datetime

    from ..core import expiry

    try:
        day = expiry.parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if expiry.is_expired(day, expiry.today()):
        raise argparse.ArgumentTypeError(f"{text} has begun or is past: the account would be expired already")
    return datetime.date(*day)


def cmd_add(paths: Paths, args: Options) -> int:
    from ..containers.factory import backend_for
    from ..core import allocate, registry, registry_edit
    from ..helper import services
    from ..system import accounts, registry_store
    from ..system.files import write_atomically
    from . import leftovers

    name = args.user
    if not registry.USER_NAME.fullmatch(name) or name in registry.RESERVED_USERS:
        raise GpushellError(f"{name!r} is not an allowed user name", status=ExitStatus.USAGE)
    keys = read_keys(args)
    # The whole add is one registry update: parallel adds get distinct ports,
    # IPs and id ranges, and the entry is written last, so a failure (or a
    # kill) leaves the registry as it was.
    import contextlib

    with registry_store.Change(paths) as change, contextlib.ExitStack() as undo:
        reg = change.old
        if name in reg.users:
            raise GpushellError(f"{name} is already registered (port {reg.users[name].port})")
        alloc = allocate.allocate(reg, args.port)
        given = {"gpus": args.gpus, "expires": args.expires, "member": where_to(reg, args)}
        extra = {key: value for key, value in given.items() if value is not None} or None
        new_reg = change.propose(registry_edit.add_user(change.old_text, name, alloc, extra))
        user = new_reg.users[name]

        # Noted before the first change: if this process dies, apply knows
        # what to undo (see leftovers.py).
        journal = leftovers.journal_path(new_reg.lxcpath, name)
        os.makedirs(new_reg.lxcpath, mode=0o755, exist_ok=True)
        write_atomically(journal, leftovers.journal_now(name, user.container).dumps(), 0o600)
        undo.callback(leftovers.forget, journal)
        account = accounts.ensure_account(name, paths.shell, paths.group)
        undo.callback(accounts.undo_account, account, paths.group)
        if keys:
            accounts.install_host_keys(name, keys)
        ctx = services.Context(paths, new_reg, backend_for(new_reg))
        ctx.driver.create(new_reg, user, keys)
        undo.callback(ctx.driver.destroy, new_reg, user.container)
        services.ensure_forward(ctx, user)
        undo.callback(services.remove_forward, ctx, name)
        change.write()
        undo.pop_all()
        leftovers.forget(journal)
        isolated = _isolation_after_change(new_reg)
    on = f" on {user.member}" if user.member else ""
    say(
        f"added {name}: port {user.port}, container {user.container}{on} at {user.address}, "
        f"ids {user.idmap}-{user.idmap + reg.idmap_size - 1}, "
        f"{'key installed' if keys else 'no key yet (use --key FILE)'}"
    )
    say(f"menu: ssh {name}@{reg.hostname}    container: ssh -p {user.port} {name}@{reg.hostname}")
    return ExitStatus.OK if isolated else ExitStatus.ERROR


def where_to(reg: Registry, args: Options) -> str | None:
    """The cluster member for a new student: --on MEMBER if it fits, else placement's; None on one host."""
    from ..core import placement

    if reg.cluster is None:
        if args.on is not None:
            raise GpushellError(
                "--on needs a cluster (backend: lxd in the registry)", status=ExitStatus.USAGE
            )
        return None
    from ..containers.lxd import LxdDriver

    gpus = reg.gpus if args.gpus is None else args.gpus if isinstance(args.gpus, str) else tuple(args.gpus)
    driver = LxdDriver(reg)
    if args.on is not None:
        placement.check_on(reg.cluster, reg.users.values(), args.on, gpus, reg.limits.memory)
        why = driver.silent(args.on)
        if why is not None:
            raise GpushellError(
                f"{args.on} is not answering ({why}); leave --on out to place the student elsewhere"
            )
        return str(args.on)
    # The best member that answers: a server that is down takes no new student.
    candidates = placement.ranked(reg.cluster, reg.users.values(), gpus, reg.limits.memory)
    silent: list[str] = []
    for member in candidates:
        why = driver.silent(member)
        if why is None:
            if silent:
                say(f"placed on {member}: " + "; ".join(silent))
            return member
        silent.append(f"{member} is not answering ({why})")
    raise GpushellError("no member with room for this student answers: " + "; ".join(silent))


def _isolation_after_change(reg: Registry) -> bool:
    """The nftables isolation tables rebuilt for the changed users; False (warned) when that failed."""
    from ..system import nftrun

    return nftrun.after_change(reg, lambda line: warn([line]))


def cmd_remove(paths: Paths, args: Options) -> int:
    from . import removal

    done = removal.remove_student(paths, args.user, args.archive, args.purge, lambda line: warn([line]))
    user = done.user
    if not args.purge:
        account = ", host account kept"
    else:
        account = ", host account deleted" if done.account_deleted else ", no host account to delete"
    loans = f", {done.loans} GPU loan(s) dropped" if done.loans else ""
    say(f"removed {args.user}: container {user.container} destroyed, port {user.port} freed{account}{loans}")
    if done.kept:
        say(f"{done.kept_as} kept in {done.kept}")
    return ExitStatus.OK if done.isolated else ExitStatus.ERROR


def cmd_list(paths: Paths, args: Options) -> int:
    from ..system import registry_store
    from . import listing

    reg = registry_store.load(paths)
    found = listing.gather(reg)
    if args.json:
        say(listing.to_json(found))
    else:
        sys.stdout.write(listing.render_table(found.rows))
        warn(found.warnings)
    return ExitStatus.OK


def cmd_apply(paths: Paths, args: Options) -> int:
    from ..system import registry_store
    from . import apply

    if args.dry_run:
        reg = registry_store.load_all(paths)
        if apply.unmounted_pool(reg) is not None:
            say(f"would {apply.mount_pool_text(reg)} (the containers are in it; not looked at until it is)")
            return ExitStatus.OK
        plan = apply.plan(reg, paths, apply.observe(reg, paths))
        warn(plan.warnings)
        for line in apply.render_dry_run(plan) + apply.loans_dry_run(reg, paths):
            say(line)
        return ExitStatus.OK
    # Under the registry lock: an `add` running meanwhile would otherwise
    # lose its new forward to this rebuild of the chain.
    with locked(paths.registry_lock):
        reg = registry_store.load_all(paths)
        apply.mount_pool(reg, say)  # first: the containers are in it
        plan = apply.plan(reg, paths, apply.observe(reg, paths))
        warn(plan.warnings)
        if not plan.changes:
            say(apply.NOTHING_TO_DO)
        failures = apply.execute(plan, reg, paths, say, fail)
        failures += apply.restore_loans(reg, paths, say, fail)  # after the starts: their lent GPUs
    if plan.changes:
        made = len(plan.changes) - failures
        say(f"{made} change(s) made" + (f", {failures} failed" if failures else ""))
    return ExitStatus.ERROR if failures else ExitStatus.OK


def cmd_doctor(paths: Paths, args: Options) -> int:
    from . import doctor

    findings = doctor.examine(paths)
    for item in findings:
        say(item.line())
    failed = sum(1 for item in findings if not item.ok)
    say(f"{len(findings)} checks, {failed} failed" if failed else f"{len(findings)} checks, all ok")
    return ExitStatus.ERROR if failed else ExitStatus.OK


def cmd_driver_sync(paths: Paths, args: Options) -> int:
    from ..system import registry_store
    from . import clusterdriver, driversync

    reg = registry_store.load(paths)
    sync = driversync.sync if reg.cluster is None else clusterdriver.sync
    failures = sync(reg, paths, args.users, args.installer, say)
    return ExitStatus.ERROR if failures else ExitStatus.OK


def cmd_storage_migrate(paths: Paths, args: Options) -> int:
    from ..system import registry_store
    from . import migrate, poolmove

    move = poolmove.migrate if registry_store.load(paths).cluster is not None else migrate.migrate
    failures = move(paths, args.users, say, lambda line: print(f"gpushell-admin: {line}", file=sys.stderr))
    return ExitStatus.ERROR if failures else ExitStatus.OK


def cmd_tick(paths: Paths, args: Options) -> int:
    from . import lendingops

    failures = lendingops.tick(paths, say, lambda line: warn([line]))
    return ExitStatus.ERROR if failures else ExitStatus.OK


def cmd_loans(paths: Paths, args: Options) -> int:
    import time

    from ..system import loanstore, registry_store
    from . import loansview

    reg = registry_store.load_all(paths)
    book, now = loanstore.read(paths), time.time()
    if args.json:
        say(loansview.to_json(book, now))
        return ExitStatus.OK
    members = None if reg.cluster is None else {user.name: user.member for user in reg.users.values()}
    sys.stdout.write(loansview.render(book, now, members))
    if reg.lending is None:
        warn(["this registry lends no GPUs (no lending:); loans still in the book end at the next tick"])
    return ExitStatus.OK


def cmd_loans_revoke(paths: Paths, args: Options) -> int:
    from . import lendingops

    failures = lendingops.revoke(paths, args.user, args.gpu, say, lambda line: warn([line]))
    return ExitStatus.ERROR if failures else ExitStatus.OK


def date_option(text: str) -> str:
    """--since/--until: a day as YYYY-MM-DD."""
    import datetime

    try:
        if len(text) != 10:
            raise ValueError(text)
        datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use a date like 2024-06-30") from None
    return text


def day_start(text: str, days_after: int = 0) -> float:
    """The local midnight that starts the day `text` (plus days_after days), as epoch seconds."""
    import datetime

    day = datetime.date.fromisoformat(text) + datetime.timedelta(days=days_after)
    return datetime.datetime.combine(day, datetime.time()).timestamp()


def cmd_report(paths: Paths, args: Options) -> int:
    from ..core import usagereport
    from . import samples

    if args.json and args.csv:
        raise GpushellError("choose one of --json and --csv", status=ExitStatus.USAGE)
    since = None if args.since is None else day_start(args.since)
    until = None if args.until is None else day_start(args.until, 1)  # the whole of that day
    found, bad = samples.read(paths, since, until)
    rows = usagereport.aggregate(found, since, until)
    if args.json:
        say(usagereport.to_json(rows, args.since, args.until))
    elif args.csv:
        sys.stdout.write(usagereport.to_csv(rows))
    else:
        sys.stdout.write(usagereport.render_table(rows))
    if bad:
        warn([f"{bad} line(s) of the samples were not samples (a line cut by a crash?) and were skipped"])
    return ExitStatus.OK


def extra_command(name: str, module: str = "editing") -> Callable[[Paths, Options], int]:
    """`module`'s command `name`, imported only when it runs (it pulls in most of gpushell)."""

    def run(paths: Paths, args: Options) -> int:
        import importlib

        return int(getattr(importlib.import_module(f"{__package__}.{module}"), name)(paths, args, say))

    return run


STUDENT = Arg("user", metavar="USER", help="the student's user name")


def _template_commands() -> list[Command]:
    return [
        Command(
            "build",
            "build the Debian template (cached)",
            "Build the template with debootstrap from the Debian "
            "mirror apt uses on this host; cached, so a rebuild takes seconds.",
            [
                Arg("--name", metavar="NAME", help="the template's name (default: the registry's template)"),
                Arg("--suite", default=DEBIAN_SUITE, help="Debian suite (default: %(default)s)"),
                Arg("--mirror", metavar="URL", help="Debian mirror (default: the one in apt's sources)"),
                Arg("--packages", metavar="LIST", help="extra packages, comma separated"),
                Arg("--force", action="store_true", help="rebuild even if the template exists"),
            ],
            cmd_template_build,
        ),
        Command(
            "list",
            "show the built templates",
            "One row per template in the lxcpath: name, suite, size, the "
            "students whose containers were copied from it, and which one new students get.",
            [Arg("--json", action="store_true", help="print JSON instead of a table")],
            extra_command("cmd_template_list"),
        ),
        Command(
            "use",
            "make new students get another (built) template",
            "Set the registry's template: key, keeping its comments.  "
            "Existing containers are full copies and do not change.",
            [Arg("name", metavar="NAME", help="a built template")],
            extra_command("cmd_template_use"),
        ),
    ]


COMMANDS = Command(
    "gpushell-admin",
    "",
    "Manage gpushell: students' containers, ports and the host set-up.",
    [
        Arg("--version", action="version", version=f"%(prog)s {__version__}"),
        Arg("--registry", metavar="PATH", help="registry file (default: /etc/gpushell.yaml)"),
    ],
    dest="command",
    metavar="COMMAND",
    epilog="See gpushell-admin(8) and gpushell.yaml(5).",
    subcommands=[
        Command(
            "init",
            "prepare the host (idempotent)",
            "Create the registry if missing, the bridge, IP forwarding, "
            "the nat chain, the gpushell group, the sudoers and sshd drop-ins, and "
            "root's subordinate ids.  Safe to run again.  With --storage btrfs the "
            "lxcpath must be on btrfs (a disk or partition mounted there); init turns on "
            "btrfs quotas and writes storage: btrfs into the registry.  Without a spare "
            "disk, --pool-file PATH --size SIZE makes a loop-backed pool to try it: a sparse "
            "file holding a btrfs filesystem, mounted at the (empty) lxcpath, and mounted "
            "again by apply at boot.  A lab that has students on dir storage moves with "
            "`gpushell-admin storage migrate`.",
            [
                Arg(
                    "--storage",
                    choices=("dir", "btrfs"),
                    help="how containers are stored: dir (full copies, no disk quota) or btrfs "
                    "(copy-on-write snapshots, a disk quota per student); default: as the registry says",
                ),
                Arg(
                    "--pool-file",
                    metavar="PATH",
                    help="make a loop-backed btrfs pool in this new file and mount it at the lxcpath "
                    "(for trying btrfs; use a real disk or partition in production)",
                ),
                Arg(
                    "--size",
                    type=size_option,
                    metavar="SIZE",
                    help="the pool file's size, like 200G (sparse: disk is taken as it fills)",
                ),
                Arg(
                    "--drop-ins",
                    action="store_true",
                    help="only the sudoers and sshd drop-ins, each checked before it takes effect; "
                    "nothing else is read or changed (the Debian package runs this on install and upgrade)",
                ),
            ],
            run=cmd_init,
        ),
        Command(
            "template",
            "build the container template",
            "Manage the template that new students' containers copy.",
            dest="template_command",
            subcommands=_template_commands(),
        ),
        Command(
            "add",
            "register a student and make their container",
            "Create the host account (login shell gpushell), allocate a "
            "port, IP and id range, copy the template into the student's container "
            "and write the registry entry.  A failure undoes every step.",
            [
                STUDENT,
                Arg(
                    "--key",
                    metavar="FILE",
                    help="authorized_keys file for the student "
                    "(default: the host account's existing keys, if any)",
                ),
                Arg("--port", type=int, metavar="N", help="host port to forward (default: lowest free)"),
                Arg(
                    "--gpus",
                    type=gpus_option,
                    metavar="LIST",
                    help="GPUs for the container: all, none or numbers like 0,2 "
                    "(default: the registry's gpus)",
                ),
                Arg(
                    "--expires",
                    type=expires_option,
                    metavar="DATE",
                    help="the day the account expires (YYYY-MM-DD): from then its logins are refused "
                    "and `expire` removes it after the registry's expire_grace (default: never)",
                ),
                Arg(
                    "--on",
                    metavar="MEMBER",
                    help="on a cluster: the member for the container (default: the one with the most free "
                    "GPUs, then the most unclaimed memory)",
                ),
            ],
            cmd_add,
        ),
        Command(
            "remove",
            "remove a student's container, forward and entry",
            "Stop and destroy the container, remove the forward and "
            "the registry entry.  The host account stays unless --purge.",
            [
                STUDENT,
                Arg("--purge", action="store_true", help="also delete the host account and its home"),
                Arg(
                    "--archive",
                    metavar="DIR",
                    help="first keep the container's rootfs as DIR/USER-TIME.tar (numeric owners; on a "
                    "cluster, the engine's backup of the container); if that fails, nothing is removed",
                ),
            ],
            cmd_remove,
        ),
        Command(
            "move",
            "move a student's container to another cluster member",
            "On a cluster (backend: lxd): move the student's stopped container, snapshots and all, "
            "to MEMBER and point their forward there; their port stays the same.  "
            "Refused when the student does not fit MEMBER (GPUs taken, memory claimed).",
            [
                STUDENT,
                Arg("member", metavar="MEMBER", help="the cluster member to move to"),
                Arg(
                    "--stop", action="store_true", help="stop a running container first, start it there after"
                ),
            ],
            extra_command("cmd_move", "moving"),
        ),
        Command(
            "set",
            "change a student's gpus, port, autostart, snapshot_limit, limits or expiry",
            "Edit the student's registry entry in place (comments kept), "
            "then apply it: a new port replaces the forward at once, autostart, "
            "gpus and limits (memory, cpus, pids: kept in the student's own `limits:`) "
            "regenerate the container's config (gpus and limits take effect at its next start), "
            "snapshot_limit counts from the student's next snapshot, "
            "expires refuses every login from that day on (a day already begun stops the container now).",
            [
                STUDENT,
                Arg(
                    "assignments",
                    nargs="*",
                    metavar="KEY=VALUE",
                    help="gpus=all|none|0,2  port=N  autostart=true|false  snapshot_limit=0..100  "
                    "memory=16G  cpus=4|0.5  pids=4096  expires=YYYY-MM-DD|never",
                ),
            ],
            extra_command("cmd_set"),
        ),
        Command(
            "list",
            "show every student's container, port and resource use",
            "One row per student: user, port, container IP, state, GPUs "
            "(from the registry), CPU% (sampled over 0.2 s) and memory (from the "
            "container's cgroup) and uptime.  Containers in the lxcpath that are "
            "not registered and stray or wrong forward rules are warnings "
            "(on standard error).",
            [Arg("--json", action="store_true", help="print JSON (users and warnings) instead of a table")],
            cmd_list,
        ),
        Command(
            "apply",
            "make the host match the registry (idempotent)",
            "In one pass: mount the registry's pool_file at the lxcpath if it is not (at boot), "
            "bring up the bridge and IP forwarding if needed, "
            "rebuild the nat chain in one iptables-restore if it differs from the "
            "registry, regenerate students' LXC configs that differ, fix students' "
            "login shells and group, and start containers marked autostart (the status page "
            "is the tick's).  Prints each change; a second run has nothing to do.",
            [
                Arg(
                    "--dry-run",
                    action="store_true",
                    help="print the changes it would make and change nothing",
                )
            ],
            cmd_apply,
        ),
        Command(
            "tick",
            "one minute of GPU lending and usage samples (run by a timer)",
            "Run every minute by gpushell-tick.timer (or cron).  With lending: on, warn "
            "students whose loan ends soon (a banner line, and the registry's notify_command), "
            "end loans that expired, sat idle for lending.idle_return (NVML only) or that the "
            "registry no longer allows (the student's processes on the GPU get SIGTERM, then "
            "SIGKILL, and the device leaves the container), and lend freed GPUs to the students "
            "waiting in line.  Then append one usage sample per student holding a GPU to "
            "the state directory's samples/YYYY-MM.jsonl (for report), and write the status "
            "page (index.html and status.json: each GPU's use over the last day, free or lent, "
            "the host's figures) into /var/lib/gpushell-status for a web server to serve.  "
            "Prints one line per change; nothing on a quiet minute.",
            run=cmd_tick,
        ),
        Command(
            "publish-gpus",
            "on a cluster member: publish its GPU figures for the front door (run by a timer)",
            "Run on each member of gpushell's LXD or Incus cluster by "
            "gpushell-publish-gpus.timer, every 20 seconds; needs no registry.  Reads the member's "
            "GPUs with NVML (use, memory, temperature, and which container each process belongs "
            "to, by its host ids), and writes them into the member's own entry in the cluster "
            "(the member config key user.gpushell.gpus) through the engine's unix socket.  The "
            "front door's tick reads every member's entry for the students' banners and the "
            "status page.  Without an NVIDIA driver it publishes that there is none.",
            [
                Arg(
                    "--socket",
                    metavar="PATH",
                    help="the engine's unix socket (default: Incus's, Debian's LXD's or the LXD snap's, "
                    "whichever exists)",
                ),
                Arg(
                    "--project",
                    default="gpushell",
                    help="the engine project of gpushell's containers (default: %(default)s)",
                ),
                Arg("--verbose", action="store_true", help="say what was published"),
            ],
            extra_command("cmd_publish_gpus", "gpupublish"),
        ),
        Command(
            "loans",
            "show the GPU loans and the line, or revoke a loan",
            "Without an action: one row per lent GPU (student, GPU, start, end, time left, "
            "whether the student was warned), then the students waiting in line, in order.",
            [Arg("--json", action="store_true", help="print JSON (loans and queue) instead of tables")],
            cmd_loans,
            dest="loans_command",
            metavar="[ACTION]",
            subcommands=[
                Command(
                    "revoke",
                    "end a student's loan of a GPU now",
                    "End the loan at once, as an expiry does: the student's processes on the GPU "
                    "get SIGTERM, then SIGKILL after a grace period, and the device leaves the "
                    "container.  The GPU goes to the line at the next tick.",
                    [
                        STUDENT,
                        Arg("gpu", type=int, metavar="GPU", help="the GPU's number (as in /dev/nvidiaN)"),
                    ],
                    cmd_loans_revoke,
                )
            ],
        ),
        Command(
            "report",
            "GPU-hours held and busy, loans, CPU-hours and peak memory per student",
            "Sum tick's usage samples per student: GPU-hours held (loans and the student's "
            "own GPUs while the container runs), GPU-hours busy (a process of theirs on the GPU, "
            "from NVML; unknown without a driver), loans, CPU-hours and peak memory of the "
            "container (sampled once a minute).",
            [
                Arg("--since", type=date_option, metavar="DATE", help="from this day on (YYYY-MM-DD)"),
                Arg("--until", type=date_option, metavar="DATE", help="up to and including this day"),
                Arg("--json", action="store_true", help="print JSON (unknown figures are null)"),
                Arg("--csv", action="store_true", help="print CSV (unknown figures read unknown)"),
            ],
            cmd_report,
        ),
        Command(
            "expire",
            "remove the students whose account expired longer than expire_grace ago",
            "For each student whose expires: day has passed by more than the registry's "
            "expire_grace (default 30d): remove them as `remove USER --purge` does (container "
            "and its snapshots, forward, isolation rules, registry entry, host account) and drop "
            "their GPU loans and place in line; with --archive DIR keep each container's rootfs "
            "first.  Students expired but still within their grace are named and kept.  One line "
            "per student; exit status 1 if any removal failed.",
            [
                Arg("--dry-run", action="store_true", help="print what it would remove and change nothing"),
                Arg(
                    "--archive",
                    metavar="DIR",
                    help="first keep each container's rootfs as DIR/USER-TIME.tar (numeric owners; on a "
                    "cluster, the engine's backup); a student whose archive fails is not removed",
                ),
            ],
            extra_command("cmd_expire", "expiring"),
        ),
        Command(
            "doctor",
            "check the host and say how to fix each problem",
            "Check the bridge, IP forwarding, the nat chain and every "
            "student's forward, the drop-ins and whether sshd applies them (sshd -T for "
            "each student, and a reload since they last changed), the registry's permissions, root's "
            "subordinate ids, the template, each container's config, port clashes "
            "with host services and the students' host accounts.  One line per "
            "check: 'ok: ...' or 'FAIL: ... — fix: ...'.  Exit status 0 only when "
            "every check passes.",
            run=cmd_doctor,
        ),
        Command(
            "storage",
            "move a dir lab onto btrfs (subvolumes, snapshots, quotas); a cluster's disks to lxd.pool",
            "How the students' containers are stored (the registry's storage:).",
            dest="storage_command",
            subcommands=[
                Command(
                    "migrate",
                    "move students' containers from dir into btrfs subvolumes (a cluster: to lxd.pool)",
                    "For a lab on storage: dir whose lxcpath is already on btrfs (to move to a new "
                    "disk, first move the lxcpath onto it).  One student at a time: their container "
                    "directory is copied into a subvolume with its own quota group, their snapshots "
                    "into read-only subvolumes while the container runs on, then the rootfs with the "
                    "container stopped (it is started again if it ran); the new directory takes the old "
                    "one's place by rename, then the old copy goes and the disk quota (limits.disk) "
                    "is set.  A failure leaves that student as they were and goes on to the next.  "
                    "The registry says storage: btrfs once every student has moved.  Safe to run again.  "
                    "On a cluster (backend: lxd): move each student's root disk and snapshots onto the "
                    "pool the registry's lxd.pool names, on the same member, by the engine; a running "
                    "container is stopped for it and started again.",
                    [Arg("users", nargs="*", metavar="USER", help="only these students (default: all)")],
                    cmd_storage_migrate,
                )
            ],
        ),
        Command(
            "driver",
            "the NVIDIA user-space driver in containers (driver: container)",
            "Keep containers that carry their own NVIDIA user-space driver at the host's version.",
            dest="driver_command",
            subcommands=[
                Command(
                    "sync",
                    "run NVIDIA's installer in containers whose driver differs from the host's",
                    "For each GPU student's container (or each one named) whose libcuda or "
                    "libnvidia-ml version differs from the loaded kernel module's, copy the installer "
                    "into it and run it there with --no-kernel-module --silent --no-questions, "
                    "starting the container for it if needed; one line per container.  On a cluster "
                    "(backend: lxd) the version to match is the container's member's, from its GPU "
                    "report (publish-gpus), and the engine copies and runs the installer.",
                    [
                        Arg(
                            "--installer",
                            metavar="PATH",
                            help="NVIDIA's .run installer (default: the registry's driver_installer)",
                        ),
                        Arg("users", nargs="*", metavar="USER", help="only these students"),
                    ],
                    cmd_driver_sync,
                )
            ],
        ),
    ],
)


def build_parser() -> argparse.ArgumentParser:
    return cli.build_parser(COMMANDS)


def main(paths: Paths = DEFAULT, argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(words, namespace=Options())
    if args.registry:
        paths = paths.replace(registry=os.path.abspath(args.registry))
    if os.geteuid() != 0:
        print("gpushell-admin: must be run as root", file=sys.stderr)
        return ExitStatus.USAGE
    try:
        return int(args.run(paths, args))
    except GpushellError as exc:
        print(f"gpushell-admin: {exc.user_message}", file=sys.stderr)
        return int(exc.status)
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
