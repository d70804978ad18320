"""Names read without `re` on apply's path agree with the patterns they replace."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gpushell.gpudevices import gpu_number, is_nvidia_name
from gpushell.leftovers import is_staging

# The patterns as they were; `re` costs apply ~5 ms to import.
STAGING = re.compile(r"\.([A-Za-z0-9][A-Za-z0-9_.-]{0,62})-[a-z0-9_]{8}")
GPU_NODE = re.compile(r"nvidia(\d+)")


def staging_like() -> st.SearchStrategy[str]:
    name = st.text(alphabet="aZ9_.-", min_size=0, max_size=66)
    suffix = st.text(alphabet="ab9_-X.", min_size=6, max_size=10)
    return st.builds(lambda dot, n, dash, s: dot + n + dash + s, st.sampled_from([".", "", "x"]), name,
                     st.sampled_from(["-", "", "_"]), suffix)  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(staging_like())
def test_staging_names_as_the_pattern_reads_them(entry: str) -> None:
    assert is_staging(entry) == (STAGING.fullmatch(entry) is not None)


def test_staging_names_at_the_edges() -> None:
    assert is_staging(".alice-ab_9xyz0")
    assert is_staging(".a-" + "0" * 8) and is_staging("." + "a" * 63 + "-" + "0" * 8)
    assert not is_staging("." + "a" * 64 + "-" + "0" * 8)  # longer than a container name
    assert not is_staging("._alice-ab_9xyz0") and not is_staging(".alice-AB_9XYZ0")
    assert not is_staging("alice-ab_9xyz0") and not is_staging(".alice-ab_9xyz")


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="nvidia0123-uctlm", max_size=12))
def test_gpu_node_names_as_the_pattern_reads_them(name: str) -> None:
    match = GPU_NODE.fullmatch(name)
    assert gpu_number(name) == (int(match[1]) if match else None)
    assert is_nvidia_name(name) == (match is not None or name in ("nvidiactl", "nvidia-uvm",
                                    "nvidia-uvm-tools", "nvidia-modeset"))  # fmt: skip


def test_only_ascii_digits_number_a_gpu() -> None:
    assert gpu_number("nvidia12") == 12 and gpu_number("nvidia") is None
    assert gpu_number("nvidia\u0663") is None  # an Arabic-Indic three: no device is named so
