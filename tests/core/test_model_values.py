"""model.Value, the records' base: equality, replace(), and Node's order."""

from __future__ import annotations

import pytest

from gpushell.admin.leftovers import Leftover
from gpushell.core.model import Mount
from gpushell.gpu.gpudevices import Node


def test_replace_changes_only_the_fields_named_and_leaves_the_original() -> None:
    item = Leftover("/var/lib/lxc/eve", "container eve", "rmtree")
    fixed = item.replace(action="", fix="rm -rf it")
    assert fixed == Leftover("/var/lib/lxc/eve", "container eve", "", "rm -rf it")
    assert item == Leftover("/var/lib/lxc/eve", "container eve", "rmtree")
    assert fixed != item and hash(item) == hash(Leftover("/var/lib/lxc/eve", "container eve", "rmtree"))


def test_replace_refuses_a_field_the_record_does_not_have() -> None:
    with pytest.raises(TypeError, match="Mount has no field mode"):
        Mount("/nas", "/nas").replace(mode="rw")


def test_records_of_different_kinds_are_never_equal() -> None:
    assert Node("nvidia0", 195, 0) != ("nvidia0", 195, 0)


def test_nodes_sort_by_name_then_numbers() -> None:
    ordered = [Node("nvidia0", 195, 0), Node("nvidia0", 195, 9), Node("nvidia1", 195, 1)]
    ordered.append(Node("nvidiactl", 195, 255))
    assert sorted(reversed(ordered)) == ordered
