"""Adding and removing a user in the registry's text (pure).

Edits the text in place rather than re-dumping the parsed data, so the
administrator's comments, key order and layout survive every `add` and
`remove`.  The caller re-parses the result before writing it.
"""

from __future__ import annotations

import yaml

from .allocate import Allocation
from .errors import GpushellError

TYPE_CHECKING = False  # `typing` (~3 ms) for mypy only
if TYPE_CHECKING:
    from typing import Any


def _users_node(text: str) -> tuple[yaml.Node | None, yaml.Node | None]:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        raise GpushellError("the registry is not a mapping")
    for key, value in root.value:
        if key.value == "users":
            return key, value
    return None, None


def user_block(name: str, alloc: Allocation, extra: dict[str, Any] | None = None) -> list[str]:
    lines = [f"  {name}:", f"    port: {alloc.port}", f"    ip: {alloc.ip}", f"    idmap: {alloc.idmap}"]
    for key, value in (extra or {}).items():
        # Dumped inside a list so a scalar gets no end-of-document marker.
        flow = yaml.safe_dump([value], default_flow_style=True).strip()[1:-1]
        lines.append(f"    {key}: {flow}")
    return lines


def add_user(text: str, name: str, alloc: Allocation, extra: dict[str, Any] | None = None) -> str:
    """Text with a block for `name` appended to the `users:` mapping."""
    lines = text.splitlines()
    block = user_block(name, alloc, extra)
    key, users = _users_node(text)
    if key is None or users is None:
        body = [*lines, "users:", *block]
    elif isinstance(users, yaml.MappingNode) and users.value and users.flow_style is False:
        # Indent like the existing entries; insert after the last entry's last line.
        indent = users.value[0][0].start_mark.column
        block = [_reindent(line, indent) for line in block]
        end = _last_content_line(lines, users.end_mark.line, users.end_mark.column)
        body = lines[: end + 1] + block + lines[end + 1 :]
    elif _is_empty(users):
        # `users:` or `users: {}`: replace that line with a block mapping.
        line = key.start_mark.line
        comment = lines[line].split("#", 1)[1] if "#" in lines[line] else None
        head = "users:" + (f"  #{comment}" if comment else "")
        if isinstance(users, yaml.ScalarNode) and not users.value:
            head = lines[line]  # bare `users:`: the line stays exactly as written
        body = [*lines[:line], head, *block, *lines[line + 1 :]]
    else:
        raise GpushellError("cannot edit `users:` written in flow style; please use a block mapping")
    return "\n".join(body) + "\n"


def _is_empty(node: yaml.Node) -> bool:
    if isinstance(node, yaml.ScalarNode):
        return node.value in ("", "~", "null")
    return isinstance(node, yaml.MappingNode) and not node.value


def _reindent(line: str, indent: int) -> str:
    stripped = line.lstrip(" ")
    depth = len(line) - len(stripped)  # 2 for the name line, 4 for its keys
    return " " * (indent + depth - 2) + stripped


def _last_content_line(lines: list[str], end_line: int, end_column: int) -> int:
    """Index of the last line that belongs to a block ending at (end_line, end_column).

    PyYAML's end mark of a block mapping points at the start of the next
    token, after trailing comments and blank lines; walk back over those.
    """
    index = end_line if end_column > 0 else end_line - 1
    index = min(index, len(lines) - 1)
    while index > 0 and (not lines[index].strip() or lines[index].lstrip().startswith("#")):
        index -= 1
    return index


def remove_user(text: str, name: str) -> str:
    """Text without the `name` entry (its lines and nothing else)."""
    lines = text.splitlines()
    _, users = _users_node(text)
    if not isinstance(users, yaml.MappingNode):
        raise GpushellError(f"{name} is not registered")
    for index, (key, value) in enumerate(users.value):
        if key.value != name:
            continue
        if users.flow_style:
            raise GpushellError("cannot edit `users:` written in flow style; please use a block mapping")
        first = key.start_mark.line
        if index + 1 < len(users.value):
            stop = users.value[index + 1][0].start_mark.line  # the next user's name line
            last = _last_content_line(lines, stop, 0)
        else:
            last = _last_content_line(lines, value.end_mark.line, value.end_mark.column)
        remaining = lines[:first] + lines[last + 1 :]
        return "\n".join(remaining) + "\n"
    raise GpushellError(f"{name} is not registered")


def flow_value(value: Any) -> str:
    """One YAML value on one line: `[0, 2]`, `all`, `true`, `22005`."""
    # Dumped inside a list so a scalar gets no end-of-document marker.
    return str(yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1])


def user_value(text: str, name: str, key: str) -> Any:
    """The value of `key` in user `name`'s entry as YAML reads it; None when absent."""
    entries = (yaml.safe_load(text) or {}).get("users") or {}
    entry = entries.get(name) if isinstance(entries, dict) else None
    return entry.get(key) if isinstance(entry, dict) else None


def set_user_key(text: str, name: str, key: str, value: Any) -> str:
    """Text with `key: value` set in user `name`'s block: replaced if present, else added."""
    _, users = _users_node(text)
    if isinstance(users, yaml.MappingNode):
        for user_key, entry in users.value:
            if user_key.value == name:
                if users.flow_style or not isinstance(entry, yaml.MappingNode) or entry.flow_style:
                    raise GpushellError(
                        f"cannot edit {name}'s entry in flow style; please use a block mapping"
                    )
                return _set_in_mapping(text, entry, key, value)
    raise GpushellError(f"{name} is not registered")


def remove_user_key(text: str, name: str, key: str) -> str:
    """Text without `key` in user `name`'s block (its lines; comment lines kept); unchanged when absent."""
    _, users = _users_node(text)
    if isinstance(users, yaml.MappingNode):
        for user_key, entry in users.value:
            if user_key.value != name:
                continue
            if users.flow_style or not isinstance(entry, yaml.MappingNode) or entry.flow_style:
                raise GpushellError(f"cannot edit {name}'s entry in flow style; please use a block mapping")
            if len(entry.value) == 1 and entry.value[0][0].value == key:
                raise GpushellError(f"cannot remove {key}: it is all of {name}'s entry")
            lines = text.splitlines()
            for key_node, _value in entry.value:
                if key_node.value == key:
                    first = key_node.start_mark.line
                    last = _block_end(lines, first, key_node.start_mark.column)
                    return "\n".join(lines[:first] + lines[last + 1 :]) + "\n"
            return text
    raise GpushellError(f"{name} is not registered")


def set_setting(text: str, key: str, value: Any) -> str:
    """Text with the top-level `key: value` replaced, or added before `users:` (or at the end)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        raise GpushellError("the registry is not a block mapping")
    return _set_in_mapping(text, root, key, value)


def _set_in_mapping(text: str, mapping: yaml.MappingNode, key: str, value: Any) -> str:
    lines = text.splitlines()
    flow = flow_value(value)
    for key_node, value_node in mapping.value:
        if key_node.value != key:
            continue
        line = key_node.start_mark.line
        if isinstance(value_node, yaml.ScalarNode) and value_node.value == "" and not value_node.style:
            # `key:` with no value: write it after the colon, keep any comment.
            head, sep, comment = lines[line].partition("#")
            lines[line] = f"{head.rstrip()} {flow}" + (f"  {sep}{comment}" if sep else "")
            return "\n".join(lines) + "\n"
        if isinstance(value_node, yaml.ScalarNode) or value_node.flow_style:
            # The value's exact span: a comment after it on the line stays.
            start, end = value_node.start_mark.index, value_node.end_mark.index
            return text[:start] + flow + text[end:]
        # A block list or mapping: one line replaces it; its comment lines stay below.
        last = _block_end(lines, line, key_node.start_mark.column)
        comments = [_comment_of(c) for c in lines[line + 1 : last + 1] if "#" in c]
        indent = " " * key_node.start_mark.column
        body = [*lines[:line], f"{indent}{key}: {flow}", *comments, *lines[last + 1 :]]
        return "\n".join(body) + "\n"
    # Not there: add it after the mapping's last entry, indented like the others.
    if not mapping.value:
        raise GpushellError(f"cannot add {key}: the mapping is empty")
    first_key = mapping.value[0][0]
    indent = " " * first_key.start_mark.column
    if first_key.start_mark.column == 0:
        # Top level: before `users:` so the setting stays with the others.
        for key_node, _ in mapping.value:
            if key_node.value == "users":
                at = key_node.start_mark.line
                return "\n".join([*lines[:at], f"{key}: {flow}", *lines[at:]]) + "\n"
    end = _block_end(lines, mapping.value[-1][0].start_mark.line, first_key.start_mark.column)
    return "\n".join([*lines[: end + 1], f"{indent}{key}: {flow}", *lines[end + 1 :]]) + "\n"


def _block_end(lines: list[str], line: int, column: int) -> int:
    """Index of the last content line of the entry whose key is at (line, column).

    The entry goes on while lines are indented deeper than its key (or are
    blank or comments); trailing blank and comment lines belong to what follows.
    """
    last = line
    for index in range(line + 1, len(lines)):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(lines[index]) - len(lines[index].lstrip(" ")) <= column:
            break
        last = index
    return last


def _comment_of(line: str) -> str:
    """A line that will be replaced, reduced to its comment (kept, as a comment line)."""
    if line.lstrip().startswith("#"):
        return line
    indent = line[: len(line) - len(line.lstrip(" "))]
    return indent + "#" + line.split("#", 1)[1]
