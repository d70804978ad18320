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
