"""gpushell's modules import each other in one direction: no cycle, not even through a lazy import."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gpushell"


def module_name(path: Path) -> str:
    """`pkg.mod` for gpushell/pkg/mod.py."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The gpushell modules a file imports anywhere in it (top level or inside a function)."""
    here = module_name(path).split(".")[:-1]  # the file's package, as parts
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
            elif (node.module or "").startswith("gpushell."):
                base = []
            else:
                continue
            module = (node.module or "").removeprefix("gpushell.") if not node.level else node.module or ""
            origin = ".".join([*base, *module.split(".")]) if module else ".".join(base)
            # `from pkg import mod` names modules; `from pkg.mod import name` names one.
            candidates = {f"{origin}.{alias.name}" if origin else alias.name for alias in node.names}
            found.update(candidates & known or {origin} & known)
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix("gpushell.") for a in node.names if a.name.startswith("gpushell.")
            )
    return found & known


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.glob("**/*.py") if path.stem != "__init__"}
    return {name: imports_of(path, set(modules)) for name, path in modules.items()}


def packages(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The role packages' graph: an arrow where a module of one imports a module of another."""
    found: dict[str, set[str]] = {}
    for name, targets in edges.items():
        role = name.split(".")[0]
        found.setdefault(role, set()).update(t.split(".")[0] for t in targets if t.split(".")[0] != role)
    return found


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path of module names, or None (depth-first, colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_finder_finds_a_cycle_and_passes_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_itself_back() -> None:
    edges = graph()
    assert len(edges) > 40  # the package was really read
    assert sum(map(len, edges.values())) > 100  # and its imports resolved
    assert find_cycle(edges) is None


def test_the_role_packages_depend_one_way() -> None:
    roles = packages(graph())
    assert {"core", "system", "containers", "helper", "admin"} <= set(roles)
    assert not roles["core"]  # the pure core imports nothing of gpushell's outside it
    assert find_cycle(roles) is None


# LXC's own words: its tools, its config keys, the rootfs directory of its layout.
LXC_WORDS = re.compile(r"^lxc-[a-z]+$|\blxc\.[a-z]+\.[a-z]|(^|/)rootfs(/|$)")


def lxc_strings_outside_the_backend() -> list[str]:
    """String constants (docstrings aside) naming LXC's tools, keys or layout, outside containers/."""
    found = []
    for path in sorted(PACKAGE.glob("**/*.py")):
        if path.parent.name == "containers":
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and id(node) not in docstrings and LXC_WORDS.search(node.value):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
            if isinstance(node, ast.Import) and any(alias.name == "lxc" for alias in node.names):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: import lxc")
    return found


def test_the_guard_sees_lxc_words() -> None:
    assert LXC_WORDS.search("lxc-attach") and LXC_WORDS.search("lxc.hook.mount = x")
    assert LXC_WORDS.search("rootfs") and LXC_WORDS.search("c-ann/rootfs/etc")
    assert not LXC_WORDS.search("gpushell-admin") and not LXC_WORDS.search("the rootfsck tool")


def test_lxc_lives_only_in_the_container_backend_package() -> None:
    assert lxc_strings_outside_the_backend() == []
