"""gpushell-admin set, template list and template use (the commands are wired in admin.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from ..containers import provision, template
from ..containers.backend import RUNNING
from ..containers.factory import backend_for
from ..core import expiry, registry, registry_edit, usersettings
from ..core.errors import ExitStatus, GpushellError
from ..core.paths import Paths
from ..helper import services
from ..system import nftrun, registry_store
from ..system.files import read_text_or_none
from ..system.lock import ADMIN_WAIT, admin_busy, locked
from . import apply
from .cli import Options

Say = Callable[[str], None]


# --- set -------------------------------------------------------------------------


def edit_user(text: str, name: str, values: dict[str, Any]) -> str:
    """The registry text with each key of `values` set in `name`'s block (pure).

    Limits go into the user's own `limits:` mapping, next to any they had.
    """
    limits = {key: values[key] for key in usersettings.LIMIT_KEYS if key in values}
    for key, value in values.items():
        if key == "expires" and value is None:  # expires=never: no key at all
            text = registry_edit.remove_user_key(text, name, key)
        elif key not in limits:
            text = registry_edit.set_user_key(text, name, key, value)
    if limits:
        own = registry_edit.user_value(text, name, "limits")
        merged = {**(own if isinstance(own, dict) else {}), **limits}
        text = registry_edit.set_user_key(text, name, "limits", merged)
    return text


def port_owner(reg: registry.Registry, name: str, port: int | None) -> str | None:
    """The other student who has `port` already, if any (pure)."""
    others = [user.name for user in reg.users.values() if user.port == port and user.name != name]
    return others[0] if others else None


def set_effects(
    old: registry.User, new: registry.User, running: bool, today: expiry.Day = (1970, 1, 1)
) -> list[str]:
    """What `set` tells the administrator about when each change takes effect (pure)."""
    notes = []
    if old.expires != new.expires:
        notes.append(expiry_effect(old.expires, new.expires, today))
    if old.port != new.port:
        notes.append(f"port {old.port} -> {new.port}: forward replaced now")
    if old.autostart != new.autostart:
        notes.append(f"autostart {'on' if new.autostart else 'off'}: the container's config regenerated")
    if old.gpus != new.gpus:
        when = "at the container's next start" if running else "when the container next starts"
        notes.append(f"gpus {_gpus(old.gpus)} -> {_gpus(new.gpus)}: config regenerated, takes effect {when}")
    if old.limits != new.limits:
        when = "at the container's next start (restart it to apply now)" if running else "when it next starts"
        change = f"{limits_text(old.limits)} -> {limits_text(new.limits)}"
        notes.append(f"limits {change}: config regenerated, takes effect {when}")
    if old.snapshot_limit != new.snapshot_limit:
        notes.append(
            f"snapshot_limit {old.snapshot_limit} -> {new.snapshot_limit}: "
            "from the next snapshot (existing snapshots are kept)"
        )
    return notes or ["nothing changed"]


def expiry_effect(old: expiry.Day | None, new: expiry.Day | None, today: expiry.Day) -> str:
    """What an expiry change does, and from when (pure)."""
    shown = f"expires {_day(old)} -> {_day(new)}"
    if new is None:
        return f"{shown}: the account no longer expires"
    if expiry.is_expired(new, today):
        return f"{shown}: expired now: every login refused, the container stopped"
    return f"{shown}: logins refused from {_day(new)} (the banner says so from 14 days before)"


def _day(day: expiry.Day | None) -> str:
    return "never" if day is None else expiry.day_text(day)


def limits_text(limits: registry.Limits) -> str:
    return (
        f"memory={registry.size_text(limits.memory)} cpus={limits.cpus:g} pids={limits.pids} "
        f"disk={registry.size_text(limits.disk)}"
    )


def _gpus(spec: registry.GpuSpec) -> str:
    return spec if isinstance(spec, str) else ",".join(map(str, spec)) or "none"


def cmd_set(paths: Paths, args: Options, say: Say) -> int:
    values = usersettings.parse_assignments(args.assignments)
    name = args.user
    with registry_store.Change(paths) as change:
        old_user = change.old.user(name)
        taken = port_owner(change.old, name, values.get("port"))
        if taken:
            raise GpushellError(
                f"not changed: port {values['port']} is already used by {taken}", status=ExitStatus.USAGE
            )
        new_reg = change.propose(edit_user(change.old_text, name, values))
        new_user = new_reg.users[name]
        change.write()
        driver = backend_for(new_reg)
        ctx = services.Context(paths, new_reg, driver)
        with locked(paths.user_lock(name), ADMIN_WAIT, admin_busy(name)):
            if new_user.port != old_user.port:
                services.ensure_forward(ctx, new_user)
            running = apply.container_state(driver, new_user.container) == RUNNING
            today = expiry.today()
            if running and expiry.is_expired(new_user.expires, today):  # as the student's next call would
                driver.stop(new_user.container)
            if (new_user.gpus, new_user.autostart, new_user.limits) != (
                old_user.gpus,
                old_user.autostart,
                old_user.limits,
            ):
                regenerate_config(new_reg, paths, new_user.container)
        # No setting moves an address today, so this finds the tables right and leaves them.
        isolated = nftrun.after_change(new_reg, _warn)
    changes = ", ".join(usersettings.describe(key, value) for key, value in values.items())
    say(f"set {name}: {changes}")
    for note in set_effects(old_user, new_user, running, today):
        say(f"  {note}")
    return ExitStatus.OK if isolated else ExitStatus.ERROR


def _warn(line: str) -> None:
    sys.stderr.write(f"warning: {line}\n")


def regenerate_config(reg: registry.Registry, paths: Paths, container: str) -> None:
    """Rewrite one container's LXC config exactly as `apply` would."""
    if reg.cluster is None and not os.path.isdir(backend_for(reg).directory(container)):
        raise GpushellError(f"container {container} does not exist; registry updated, config not written")
    plan = apply.plan(reg, paths, apply.observe(reg, paths))
    for change in plan.changes:
        if change.kind == apply.CONFIG and change.subject == container:
            apply.execute_change(change, reg, paths)


# --- template list / use -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TemplateRow:
    name: str
    suite: str | None
    size: int | None  # bytes; None: not built
    users: list[str]
    default: bool  # the one new students get


def template_rows(
    reg: registry.Registry,
    built: dict[str, tuple[str | None, int]],
    origins: dict[str, str | None],
) -> list[TemplateRow]:
    """One row per built template, and the registry's even when it is not built (pure).

    built: template name -> (suite, size in bytes); origins: user -> template it was copied from.
    """
    names = sorted(set(built) | {reg.template})
    rows = []
    for name in names:
        suite, size = built.get(name, (None, None))
        users = sorted(user for user, made_from in origins.items() if made_from == name)
        rows.append(TemplateRow(name, suite, size, users, name == reg.template))
    return rows


def human_size(size: int | None) -> str:
    if size is None:
        return "not built"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def render_templates(rows: list[TemplateRow]) -> str:
    table = [("TEMPLATE", "SUITE", "SIZE", "USED BY", "NEW STUDENTS")]
    for row in rows:
        table.append(
            (
                row.name,
                row.suite or "?",
                human_size(row.size),
                ",".join(row.users) or "-",
                "yes" if row.default else "",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in table
    )


def templates_to_json(rows: list[TemplateRow]) -> str:
    return json.dumps([dataclasses.asdict(row) for row in rows], indent=2)


def built_templates(reg: registry.Registry) -> dict[str, tuple[str | None, int]]:
    """Directories in the lxcpath that are gpushell templates: name -> (suite, size)."""
    driver = backend_for(reg)
    return {
        name: (template.suite_of(config), tree_size(driver.directory(name)))
        for name, config in template_configs(reg).items()
    }


def template_configs(reg: registry.Registry) -> dict[str, str]:
    """The config text of each gpushell template in the lxcpath (a student's container is not one)."""
    driver = backend_for(reg)
    configs = {name: read_text_or_none(driver.config_path(name)) for name in driver.names()}
    return {name: text for name, text in configs.items() if text and text.startswith("# gpushell template")}


def tree_size(directory: str) -> int:
    """Bytes under directory, each inode counted once, links not followed."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def is_built(reg: registry.Registry, name: str) -> bool:
    return os.path.isdir(backend_for(reg).rootfs(name))


def images_and_origins(
    images: list[dict[str, Any]], instances: list[dict[str, Any]], containers: dict[str, str]
) -> tuple[dict[str, tuple[str | None, int]], dict[str, str | None]]:
    """On a cluster (pure): the project's images by alias -> (Debian suite, bytes), as built_templates
    gives templates, and each student's image (containers: container -> user) by the fingerprint the
    engine noted when it made the container (volatile.base_image)."""
    built: dict[str, tuple[str | None, int]] = {}
    alias_of: dict[object, str] = {}
    for image in images:
        properties, size = image.get("properties") or {}, image.get("size")
        for alias in image.get("aliases") or []:
            name = str(alias.get("name"))
            built[name] = (properties.get("release"), size if isinstance(size, int) else 0)
            alias_of.setdefault(image.get("fingerprint"), name)
    origins: dict[str, str | None] = dict.fromkeys(containers.values())
    for instance in instances:
        user = containers.get(instance.get("name", ""))
        if user is not None:
            origins[user] = alias_of.get((instance.get("config") or {}).get("volatile.base_image"))
    return built, origins


def _templates(reg: registry.Registry) -> tuple[dict[str, tuple[str | None, int]], dict[str, str | None]]:
    """What `template list` lists: LXC templates in the lxcpath, or a cluster's images."""
    if reg.cluster is None:
        origins = {name: provision.origin(reg, user.container) for name, user in reg.users.items()}
        return built_templates(reg), origins
    from ..containers.lxd import LxdDriver

    driver = LxdDriver(reg)
    containers = {user.container: name for name, user in reg.users.items()}
    return images_and_origins(driver.images(), driver.listing(), containers)


def cmd_template_list(paths: Paths, args: Options, say: Say) -> int:
    reg = registry_store.load(paths)
    rows = template_rows(reg, *_templates(reg))
    say(templates_to_json(rows) if args.json else render_templates(rows).rstrip("\n"))
    return ExitStatus.OK


def cmd_template_use(paths: Paths, args: Options, say: Say) -> int:
    name = args.name
    if not registry.CONTAINER_NAME.fullmatch(name):
        raise GpushellError(f"{name!r} is not a valid template name", status=ExitStatus.USAGE)

    def use(text: str, reg: registry.Registry) -> str:
        if reg.cluster is not None:
            from ..containers.lxd import LxdDriver

            if not LxdDriver(reg).has_image(name):
                raise GpushellError(
                    f"image {name} is not in project {reg.cluster.project}; "
                    f"run: gpushell-admin template build --name {name}"
                )
        elif not is_built(reg, name) or name not in template_configs(reg):
            raise GpushellError(
                f"template {name} is not built in {reg.lxcpath}; "
                f"run: gpushell-admin template build --name {name}"
            )
        return text if name == reg.template else registry_edit.set_setting(text, "template", name)

    old, _new = registry_store.update(paths, use)
    if old.template == name:
        say(f"new students already get template {name}")
    else:
        say(f"new students get template {name} (was {old.template}); existing containers are unchanged")
    return ExitStatus.OK
