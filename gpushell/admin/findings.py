"""What `doctor` reports: one finding a line, ok or not, with the fix."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""
    warning: bool = False  # ok, but the admin should know (fix: what would make it go away)

    def line(self) -> str:
        if self.warning:
            return f"warning: {self.what} — {self.fix}"
        return f"ok: {self.what}" if self.ok else f"FAIL: {self.what} — fix: {self.fix}"


def finding(ok: bool, good: str, bad: str, fix: str) -> Finding:
    return Finding(True, good) if ok else Finding(False, bad, fix)
