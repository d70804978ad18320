"""nftgen.parse_reply on replies recorded from this kernel's nf_tables."""

from __future__ import annotations

from gpushell.system import nftgen

# A real NFT_MSG_GETGEN reply: generation 0xdd0, then the process id and name.
RECORDED = bytes.fromhex(
    "300000000f0a0000010000000000000000000000"
    "08000100" "00000dd0"
    "08000200" "00001e25"
    "0c000300" "707974686f6e3300"
)  # fmt: skip


def test_generation_from_a_recorded_reply() -> None:
    assert nftgen.parse_reply(RECORDED) == 0xDD0


def test_error_reply_and_short_data_give_none() -> None:
    error = bytes.fromhex("24000000020000000100000000000000ffffffff") + bytes(16)
    assert nftgen.parse_reply(error) is None
    assert nftgen.parse_reply(b"") is None
    assert nftgen.parse_reply(RECORDED[:20]) is None


def test_reply_without_the_generation_attribute_gives_none() -> None:
    without = RECORDED[:20] + RECORDED[28:]
    header = len(without).to_bytes(4, "little") + without[4:]
    assert nftgen.parse_reply(header) is None


def test_live_generation_moves_when_the_ruleset_changes() -> None:
    import os
    import subprocess

    import pytest

    if os.geteuid() != 0:
        pytest.skip("reading nf_tables needs root (make test runs as root)")
    before = nftgen.generation()
    assert before is not None
    subprocess.run(["iptables", "-t", "nat", "-N", "GPTGENUNIT"], check=True)
    subprocess.run(["iptables", "-t", "nat", "-X", "GPTGENUNIT"], check=True)
    after = nftgen.generation()
    assert after is not None and after >= before + 2
