"""nvidia-smi's CSV, as a cluster's `gpus` reads it from inside the student's container.

The text is written by hand in nvidia-smi's `--format=csv,noheader,nounits`
form (no machine here has an NVIDIA driver); the integration test runs the
whole path with a stand-in nvidia-smi inside a real container.
"""

from __future__ import annotations

from gpushell.core import gputable
from gpushell.gpu import smi
from gpushell.student import tables
from gpushell.student.banner import Palette

MIB = 1024 * 1024
LISTED = """\
0, GPU-5a1c0000-1111-2222-3333-444455556666, NVIDIA H100 PCIe, 37, 1024, 81559, 45
1, GPU-77aa0000-1111-2222-3333-444455556666, NVIDIA H100 PCIe, [N/A], 0, 81559, [Not Supported]
--
GPU-5a1c0000-1111-2222-3333-444455556666, 4242, 1000, /opt/conda/bin/python3
GPU-5a1c0000-1111-2222-3333-444455556666, 4343, [N/A], train, with a comma
"""


def test_both_listings_become_the_one_host_readings() -> None:
    first, second = smi.parse(LISTED)
    assert first == {
        "uuid": "GPU-5a1c0000-1111-2222-3333-444455556666",
        "index": 0, "name": "NVIDIA H100 PCIe", "util": 37, "mem_used": 1024 * MIB, "mem_total": 81559 * MIB,
        "temp": 45,
        "procs": [("you", 4242, "python3", 1000 * MIB), ("you", 4343, "train, with a comma", None)],
    }  # fmt: skip
    assert (second["util"], second["temp"], second["procs"]) == (None, None, [])


def test_what_does_not_parse_is_left_out() -> None:
    garbage = (
        "x, GPU-a, Fake, 1, 1, 1, 1\n"  # no index
        "0, , Fake, 1, 1, 1, 1\n"  # no UUID
        "0, GPU-a, Fake, -5, 99999999999999999999, 1, 1\n"  # a negative and a huge figure: unknown
        "--\n"
        "GPU-other, 1, 1, elsewhere\n"  # a GPU not listed
        "GPU-a, pid, 1, python\n"
    )
    (only,) = smi.parse(garbage)
    assert (only["util"], only["mem_used"], only["procs"]) == (None, None, [])
    assert smi.parse("") == [] and smi.parse("0, GPU-a, Fake, 1, 1, 1, 1")[0]["procs"] == []
    assert len(smi.parse("".join(f"{n}, GPU-{n}, Fake, 1, 1, 1, 1\n" for n in range(500)))) == smi.MAX_GPUS


def test_the_command_writes_both_listings_or_fails() -> None:
    argv = smi.command("/run/figures")
    assert argv[:2] == ["sh", "-c"]
    assert f"--query-gpu={smi.QUERY_GPUS} --format=csv,noheader,nounits > /run/figures &&" in argv[2]
    listing = f"--query-compute-apps={smi.QUERY_APPS} --format=csv,noheader,nounits >> /run/figures"
    assert argv[2].endswith(listing)


def test_the_table_says_the_figures_come_from_inside_the_container() -> None:
    answer = {key: str(value) for key, value in gputable.encode(smi.parse(LISTED)).items()}
    shown = tables.gpu_table({**answer, "seen_from": gputable.SEEN_FROM_CONTAINER}, Palette())
    assert "[1] you: pid 4242 python3 1000 MiB" in shown and "[2] you: pid 4343" in shown
    assert shown.rstrip().endswith(gputable.SEEN_FROM_CONTAINER_TEXT)
    assert gputable.SEEN_FROM_CONTAINER_TEXT not in tables.gpu_table(answer, Palette())  # one host
    empty = {"state": "ok", "gpus": "0", "seen_from": gputable.SEEN_FROM_CONTAINER}
    assert tables.gpu_table(empty, Palette()) == "no GPUs in your container\n"
