"""Which forwards are known right, at which nf_tables ruleset generation.

A login reads the nat table only when the ruleset has moved since its
forward was last seen right (iptables.generation).  Anything moves it,
gpushell or not: `apply` at boot, an admin's rule, a fail2ban ban.  The
first login after such a move checks the whole lab (the isolation tables,
and the chain against every student in the registry) and, when all of it
is right, says so once for everyone: the lab's stamp.  A class logging in
after it then finds their rules there, instead of each reading the rules
again, one behind the other under the forward lock.

Both stamps are root's files in the run directory (files.write_private):

    forward-NAME.stamp   GENERATION RULE         one student's rule, seen right
    forwards.stamp       GENERATION\\nRULE\\n...   every rule the chain held, exactly
                                                 as the registry wants it

A rule's text is enough to vouch for it: the chain held exactly the
registry's rules, one per student, each port once; a student whose port
or address changed since wants another text, which no stamp names.
"""

from __future__ import annotations

from ..core.paths import Paths
from .files import read_private, write_private

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

MAX_STAMP = 4096  # a generation number and one rule
MAX_LAB_STAMP = 4 * 2**20  # some 110 bytes a student: tens of thousands of students


def known_right(paths: Paths, name: str, generation: int, rule: str) -> bool:
    """Whether the student's rule was seen right at this generation, by their own check or the lab's."""
    if read_private(paths.forward_stamp(name), MAX_STAMP) == f"{generation} {rule}":
        return True
    lab = read_private(paths.forwards_stamp, MAX_LAB_STAMP)
    # A line cut by the cap has no newline after it: it never matches.
    return lab is not None and lab.startswith(f"{generation}\n") and f"\n{rule}\n" in lab


def remember(paths: Paths, name: str, generation: int, rule: str) -> None:
    write_private(paths.forward_stamp(name), f"{generation} {rule}")


def forget(paths: Paths, name: str) -> None:
    """The student's rule is unknown: their next login reads the table."""
    write_private(paths.forward_stamp(name), "")


def remember_lab(paths: Paths, generation: int, rules: Iterable[str]) -> None:
    """Every rule of the registry seen right at generation (the chain held exactly these)."""
    text = f"{generation}\n" + "".join(f"{rule}\n" for rule in rules)
    if len(text) <= MAX_LAB_STAMP:  # beyond it, each login checks its own
        write_private(paths.forwards_stamp, text)
