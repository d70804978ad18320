"""The helper's answer to the login shell: `key=value` lines (pure).

A line format instead of JSON keeps `json` (and the `re` it pulls in) out
of every student login; values never hold a newline, the encoder
makes sure of it.
"""

from __future__ import annotations

Answer = dict[str, str]


def encode(answer: dict[str, object]) -> str:
    lines = []
    for key, value in answer.items():
        text = str(value)
        if "=" in key or "\n" in key or "\n" in text or "\r" in text:
            raise ValueError(f"cannot encode {key!r}={text!r} on one line")
        lines.append(f"{key}={text}\n")
    return "".join(lines)


def decode(text: str) -> Answer:
    """The answer in text; lines without `=` (stray output) are ignored."""
    answer: Answer = {}
    for line in text.splitlines():
        key, equals, value = line.partition("=")
        if equals:
            answer[key] = value
    return answer


# A request to the resident helper (helper/server.py): the verb on the first
# line, then what `sudo gpushell-helper VERB` would read on its stdin.
MAX_REQUEST = 1024  # bytes: a verb and its few `key=value` lines (verbs.MAX_REQUEST of them)


def request(verb: str, stdin: bytes = b"") -> bytes:
    return verb.encode() + b"\n" + stdin


def split_request(data: bytes) -> tuple[str, str]:
    """The verb and the rest of a request; ValueError for one that is not (attacker input)."""
    verb, newline, rest = data.partition(b"\n")
    if not newline or len(data) > MAX_REQUEST:
        raise ValueError("not a request")
    return verb.decode("ascii"), rest.decode("utf-8")
