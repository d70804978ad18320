"""What the student reads: banner, status and help text (pure rendering)."""

from __future__ import annotations

from .menu import MENU
from .protocol import Answer


class Palette:
    """Escape sequences for emphasis; all empty when colour is off."""

    __slots__ = ("bad", "bold", "dim", "good", "reset")

    def __init__(self, bold: str = "", good: str = "", bad: str = "", dim: str = "", reset: str = "") -> None:
        self.bold, self.good, self.bad, self.dim, self.reset = bold, good, bad, dim, reset

    def _values(self) -> tuple[str, ...]:
        return (self.bold, self.good, self.bad, self.dim, self.reset)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Palette) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    @classmethod
    def ansi(cls) -> Palette:
        from colorama import Fore, Style  # only a terminal pays for the import

        return cls(Style.BRIGHT, Fore.GREEN, Fore.RED, Style.DIM, Style.RESET_ALL)


PLAIN = Palette()


def state_text(info: Answer, p: Palette) -> str:
    state = str(info.get("state", "UNKNOWN"))
    colour = p.good if state == "RUNNING" else p.bad
    return f"{colour}{state.lower()}{p.reset}"


def connect_command(info: Answer) -> str:
    return f"ssh -p {info['port']} {info['user']}@{info['host']}"


def status(info: Answer, p: Palette = PLAIN) -> str:
    return (
        f"Container {p.bold}{info['container']}{p.reset}: {state_text(info, p)}, "
        f"IP {info['ip']}, port {info['port']}\n"
    )


def banner(info: Answer, p: Palette = PLAIN) -> str:
    return (
        f"\n{p.bold}Welcome, {info['user']}.{p.reset} This host gives you your own container.\n"
        + status(info, p)
        + f"\nConnect to it:   {p.bold}{connect_command(info)}{p.reset}\n"
        + help_text(info, p, brief=True)
    )


def help_text(info: Answer, p: Palette = PLAIN, brief: bool = False) -> str:
    port, user, host = info["port"], info["user"], info["host"]
    text = (
        f"Copy files:      scp -P {port} FILE {user}@{host}:\n"
        f"                 sftp -P {port} {user}@{host}\n"
        f"                 rsync -e 'ssh -p {port}' -a DIR/ {user}@{host}:DIR/\n"
        f"                 sshfs -p {port} {user}@{host}: MOUNTPOINT\n"
    )
    if brief:
        return text
    return text + (
        f"Web services (Jupyter, TensorBoard) in your container:\n"
        f"                 ssh -p {port} -L 8888:localhost:8888 {user}@{host}\n"
        f"An entry for ~/.ssh/config on your computer:\n"
        f"                 Host {host}-box\n"
        f"                     HostName {host}\n"
        f"                     Port {port}\n"
        f"                     User {user}\n"
        f"This host itself runs only this menu: no shell, no file copy, no forwarding.\n"
    )


def menu(p: Palette = PLAIN) -> str:
    rows = [
        f"  {p.bold}{n}{p.reset}) {word:<8} {p.dim}{what}{p.reset}" for n, (word, what) in enumerate(MENU, 1)
    ]
    return "\n" + "\n".join(rows) + "\n"
