"""banner: the text a student reads."""

from __future__ import annotations

import pytest

from gpushell.core.menu import LENDING_WORDS, offered
from gpushell.student.banner import (
    PLAIN,
    Palette,
    banner,
    connect_command,
    gpu_lines,
    gpu_row,
    help_text,
    menu,
    repaired,
    state_text,
    status,
)

INFO = {
    "user": "alice",
    "host": "gpu1",
    "port": 22001,
    "container": "alice",
    "ip": "10.0.3.2",
    "state": "RUNNING",
}
MARKS = Palette(bold="<B>", good="<G>", bad="<R>", dim="<D>", reset="</>")

COPY_LINES = [
    "Copy files:      scp -P 22001 FILE alice@gpu1:",
    "                 sftp -P 22001 alice@gpu1",
    "                 rsync -e 'ssh -p 22001' -a DIR/ alice@gpu1:DIR/",
    "                 sshfs -p 22001 alice@gpu1: MOUNTPOINT",
]


def test_connect_command():
    assert connect_command(INFO) == "ssh -p 22001 alice@gpu1"
    assert connect_command({**INFO, "port": 22999, "user": "bob", "host": "gpu2.example.org"}) == (
        "ssh -p 22999 bob@gpu2.example.org"
    )


def test_status_plain():
    assert status(INFO) == "Container alice: running, IP 10.0.3.2, port 22001\n"
    assert (
        status({**INFO, "state": "STOPPED"}, PLAIN) == "Container alice: stopped, IP 10.0.3.2, port 22001\n"
    )


def test_state_text():
    assert state_text(INFO, MARKS) == "<G>running</>"
    assert state_text({**INFO, "state": "STOPPED"}, MARKS) == "<R>stopped</>"
    assert state_text({}, PLAIN) == "unknown"
    assert state_text({}, MARKS) == "<R>unknown</>"


def test_status_with_markers():
    assert status(INFO, MARKS) == "Container <B>alice</>: <G>running</>, IP 10.0.3.2, port 22001\n"
    assert (
        status({**INFO, "state": "FROZEN"}, MARKS)
        == "Container <B>alice</>: <R>frozen</>, IP 10.0.3.2, port 22001\n"
    )


def test_help_text_brief():
    assert help_text(INFO, brief=True) == "\n".join(COPY_LINES) + "\n"


def test_help_text_full():
    lines = help_text(INFO).splitlines()
    assert lines[:4] == COPY_LINES
    assert lines[4:] == [
        "Web services in your container, through your ssh connection to it:",
        "  Jupyter        ssh -p 22001 -L 8888:localhost:8888 alice@gpu1",
        "                 then open http://localhost:8888 on your computer",
        "  TensorBoard    ssh -p 22001 -L 6006:localhost:6006 alice@gpu1",
        "An entry for ~/.ssh/config on your computer:",
        "                 Host gpu1-box",
        "                     HostName gpu1",
        "                     Port 22001",
        "                     User alice",
        "                 then: ssh gpu1-box, scp FILE gpu1-box:, ssh -L 8888:localhost:8888 gpu1-box",
        "Locked out of your container? Choose `keys` (or: ssh alice@gpu1 keys).",
        "This host itself runs only this menu: no shell, no file copy, no forwarding.",
    ]


def test_banner_plain():
    text = banner(INFO)
    assert text == (
        "\nWelcome, alice. This host gives you your own container.\n"
        "Container alice: running, IP 10.0.3.2, port 22001\n"
        "\nConnect to it:   ssh -p 22001 alice@gpu1\n" + "\n".join(COPY_LINES) + "\n"
    )


def test_banner_stopped_state_shown():
    assert "Container alice: stopped, IP 10.0.3.2, port 22001\n" in banner({**INFO, "state": "STOPPED"})


def test_banner_with_markers():
    text = banner(INFO, MARKS)
    assert "<B>Welcome, alice.</>" in text
    assert "<B>ssh -p 22001 alice@gpu1</>" in text
    assert "<G>running</>" in text
    assert "scp -P 22001 FILE alice@gpu1:" in text


def test_menu_plain():
    assert menu(offered=offered(LENDING_WORDS)) == (
        "\n"
        "   1) status          your container's state, CPU, memory and disk use\n"
        "   2) start           start your container\n"
        "   3) stop            stop your container\n"
        "   4) restart         restart your container\n"
        "   5) gpus            the GPUs, who uses them; end your GPU processes\n"
        "   6) snapshot        save a snapshot of your container\n"
        "   7) snapshots       list your snapshots\n"
        "   8) restore         put a snapshot back (replaces your container's files)\n"
        "   9) delete-snapshot delete one of your snapshots\n"
        "  10) rebuild         a fresh container from the current template\n"
        "  11) keys            locked out? re-copy your ssh keys, repair sshd\n"
        "  12) help            how to connect, copy files and reach Jupyter\n"
        "  13) quit            log out\n"
    )


def test_menu_leaves_out_what_the_admin_turned_off():
    text = menu(PLAIN, offered(("rebuild", "snapshot", "restore", *LENDING_WORDS)))
    words = [line.split()[1] for line in text.strip().splitlines()]
    assert words == ["status", "start", "stop", "restart", "gpus", "snapshots", "delete-snapshot", "keys",
                     "help", "quit"]  # fmt: skip
    assert text.splitlines()[-1] == "  10) quit            log out"


def test_menu_with_markers():
    lines = menu(MARKS, offered(LENDING_WORDS)).splitlines()
    assert lines[1] == "  <B> 1</>) status          <D>your container's state, CPU, memory and disk use</>"
    assert lines[13] == "  <B>13</>) quit            <D>log out</>"


def test_status_shows_what_the_helper_measured():
    measured = {
        **INFO,
        "cpu_ns": "12345000000",
        "memory_bytes": str(245 * 2**20),
        "disk_bytes": str(3 * 2**29),
    }
    assert status(measured) == (
        "Container alice: running, IP 10.0.3.2, port 22001\n"
        "Using:           CPU time 12.3 s, memory 245 MiB, disk 1.50 GiB (no quota)\n"
    )
    stopped = {**INFO, "state": "STOPPED", "disk_bytes": str(2**30)}
    assert status(stopped).endswith("Using:           disk 1.00 GiB (no quota)\n")
    held = {**stopped, "disk_limit_bytes": str(50 * 2**30), "disk_bytes": str(12 * 2**28)}
    assert status(held).endswith("Using:           disk 3.00 of 50 GiB\n")
    assert "Using" not in status({**INFO, "cpu_ns": "-1", "memory_bytes": "12x"})


def test_status_says_when_a_disk_count_is_a_floor_or_old():
    stopped = {**INFO, "state": "STOPPED", "disk_bytes": str(10 * 2**30)}
    partial = {**stopped, "disk_partial": "1"}
    assert status(partial).endswith(
        "Using:           disk at least 10.00 GiB (no quota; too many files to count them all)\n"
    )
    old = {**stopped, "disk_age_seconds": "250"}
    assert status(old).endswith("Using:           disk 10.00 GiB (no quota; counted 4 min ago)\n")
    both = {**partial, "disk_age_seconds": "3600"}
    assert status(both).endswith(
        "disk at least 10.00 GiB (no quota; too many files to count them all; counted 60 min ago)\n"
    )


def test_status_shows_use_against_the_limits_and_oom_kills():
    measured = {
        **INFO,
        "cpu_ns": "12345000000",
        "cpu_limit_millis": "4000",
        "memory_bytes": str(1288490189),
        "memory_limit_bytes": str(16 * 2**30),
        "pids": "35",
        "pids_limit": "4096",
        "oom_kills": "2",
    }
    assert status(measured) == (
        "Container alice: running, IP 10.0.3.2, port 22001\n"
        "Using:           CPU time 12.3 s (at most 4 CPUs), memory 1.2 of 16 GiB, processes 35 of 4096\n"
        "Out of memory:   2 processes were killed at your memory limit since the container started\n"
    )
    small = {
        **INFO,
        "memory_bytes": str(30 * 2**20),
        "memory_limit_bytes": str(256 * 2**20),
        "oom_kills": "0",
    }
    assert status(small).endswith("Using:           memory 30 MiB of 256 MiB\n")
    booted = {**INFO, "memory_bytes": str(45 * 2**20), "memory_limit_bytes": str(8 * 2**30)}
    assert status(booted).endswith("Using:           memory 45 MiB of 8 GiB\n")


def test_repaired_lists_each_line_and_how_to_try_again():
    info = {
        **INFO,
        "repaired": "2",
        "repaired0": "authorized_keys: 1 key copied",
        "repaired1": "sshd_config reset",
    }
    assert repaired(info) == (
        "  authorized_keys: 1 key copied\n  sshd_config reset\nTry again: ssh -p 22001 alice@gpu1\n"
    )
    assert repaired({**INFO, "repaired": "0"}).startswith("  nothing needed repair\n")


@pytest.mark.parametrize("render", [banner, status, help_text, lambda info, p: menu(p)])
def test_plain_has_no_escapes(render):
    for state in ("RUNNING", "STOPPED"):
        text = render({**INFO, "state": state}, PLAIN)
        assert "\x1b" not in text
        assert all(ch == "\n" or ch.isprintable() for ch in text)


def test_ansi_palette_uses_escapes():
    palette = Palette.ansi()
    assert palette.bold.startswith("\x1b[")
    assert palette.reset == "\x1b[0m"
    text = banner(INFO, palette)
    assert f"{palette.good}running{palette.reset}" in text
    assert f"{palette.bold}ssh -p 22001 alice@gpu1{palette.reset}" in text


# --- the GPU lines: the login answer's gpu_* keys, as gpucache writes them ---------

# Recorded: the snapshot taken from data/nvml_readings.json (test_gpustatus), as a login got it.
GPUS = {
    "gpu_state": "ok",
    "gpu_age": "3",
    "gpu_count": "3",
    "gpu.0": "0|87|12288|40960|61|2",
    "gpu.1": "1||2048|40960|38|1",
    "gpu.2.error": "2|GPU is lost",
}
GPU_ROWS = [
    "GPU 0   87%    12.0/40.0 GiB  61 C  2 students",
    "GPU 1     ?     2.0/40.0 GiB  38 C  1 student",
    "GPU 2  did not answer: GPU is lost",
]


def test_banner_shows_one_line_per_gpu_after_the_status_line():
    lines = banner({**INFO, **GPUS}).splitlines()
    assert lines[2] == "Container alice: running, IP 10.0.3.2, port 22001"
    assert lines[3:6] == GPU_ROWS
    assert lines[6:8] == ["", "Connect to it:   ssh -p 22001 alice@gpu1"]


def test_gpu_lines_say_how_old_a_reading_is_once_it_is_not_fresh():
    assert gpu_lines({**GPUS, "gpu_age": "5"}).splitlines() == GPU_ROWS
    assert gpu_lines({**GPUS, "gpu_age": "20"}).splitlines()[0] == GPU_ROWS[0] + "  (as of 20 s ago)"
    assert gpu_lines({**GPUS, "gpu_age": "600"}).splitlines()[0].endswith("(as of 10 min ago)")
    assert gpu_lines({**GPUS, "gpu_age": "90000"}).splitlines()[0].endswith("(as of 25 h ago)")
    assert gpu_lines({**GPUS, "gpu_age": "20"}).splitlines()[1:] == GPU_ROWS[1:]


@pytest.mark.parametrize(
    ("keys", "text"),
    [
        ({}, ""),  # a student without GPUs: the helper sends no gpu keys
        ({"gpu_state": "none"}, "GPU status: run `gpus`\n"),  # no snapshot yet
        ({"gpu_state": "no-driver", "gpu_age": "400"}, "GPUs: none on this host (no NVIDIA driver)\n"),
        ({"gpu_state": "error", "gpu_age": "1"}, "GPU status: the GPUs did not answer\n"),
        ({"gpu_state": "error", "gpu_age": "60"}, "GPU status: the GPUs did not answer  (as of 60 s ago)\n"),
        ({"gpu_state": "ok", "gpu_age": "0", "gpu_count": "0"}, "GPUs: none found on this host\n"),
        ({"gpu_state": "from-the-future"}, ""),
    ],
)
def test_gpu_lines_for_each_state(keys, text):
    assert gpu_lines(keys) == text
    assert banner({**INFO, **keys}) == banner(INFO).replace("port 22001\n", "port 22001\n" + text, 1)


@pytest.mark.parametrize(
    ("row", "shown"),
    [
        ("0|87|12288|40960|61|2", "GPU 0   87%    12.0/40.0 GiB  61 C  2 students"),
        ("7|100|81920|81920|90|0", "GPU 7  100%    80.0/80.0 GiB  90 C  0 students"),
        ("1|||||", "GPU 1     ?          ?/? GiB     ?  ? students"),
        ("x|-5|1e3|\x1b[2J|61|1", "GPU ?     ?          ?/? GiB  61 C  1 student"),
        ("0|87|12288", "GPU ?  unreadable reading"),
        ("", "GPU ?  unreadable reading"),
    ],
)
def test_gpu_row_shows_only_numbers_it_understood(row, shown):
    assert gpu_row(0, {"gpu.0": row}) == shown


def test_a_gpu_that_failed_is_one_row_and_its_text_is_made_printable():
    assert gpu_row(0, {"gpu.0.error": "3|GPU is lost"}) == "GPU 3  did not answer: GPU is lost"
    assert gpu_row(0, {"gpu.0.error": "|\x1b[2Jgone"}) == "GPU ?  did not answer: ?[2Jgone"
    assert gpu_row(0, {"gpu.0.error": "4|"}) == "GPU 4  did not answer: no reason"
    assert gpu_row(0, {"gpu.0.error": "4|x"}, MARKS) == "GPU 4  <R>did not answer: x</>"


def test_gpu_lines_bounded_and_missing_rows_are_unreadable():
    lines = gpu_lines({"gpu_state": "ok", "gpu_age": "0", "gpu_count": "99999"}).splitlines()
    assert len(lines) == 64
    assert set(lines) == {"GPU ?  unreadable reading"}
    negative = {"gpu_state": "ok", "gpu_age": "0", "gpu_count": "-1"}
    assert gpu_lines(negative) == "GPUs: none found on this host\n"


def test_gpu_lines_never_name_a_student():
    # The wire form has no field for a name: a number of students is all there is to show.
    text = banner({**INFO, **GPUS, "gpu.0": "0|87|12288|40960|61|bob"})
    assert "bob" not in text
    assert "GPU 0   87%    12.0/40.0 GiB  61 C  ? students" in text


def test_gpu_lines_with_markers_and_plain_without_escapes():
    marked = gpu_lines({**GPUS, "gpu_age": "20"}, MARKS)
    assert marked.splitlines()[0] == GPU_ROWS[0] + "  <D>(as of 20 s ago)</>"
    assert "<R>did not answer: GPU is lost</>" in marked
    assert gpu_lines({"gpu_state": "none"}, MARKS) == "GPU status: <D>run `gpus`</>\n"
    for keys in (GPUS, {"gpu_state": "none"}, {"gpu_state": "no-driver"}, {"gpu_state": "error"}):
        text = banner({**INFO, **keys}, PLAIN)
        assert "\x1b" not in text
        assert all(ch == "\n" or ch.isprintable() for ch in text)
