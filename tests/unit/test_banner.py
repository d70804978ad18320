"""banner: the text a student reads."""

from __future__ import annotations

import pytest

from gpushell.banner import PLAIN, Palette, banner, connect_command, help_text, menu, state_text, status

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
        "Web services (Jupyter, TensorBoard) in your container:",
        "                 ssh -p 22001 -L 8888:localhost:8888 alice@gpu1",
        "An entry for ~/.ssh/config on your computer:",
        "                 Host gpu1-box",
        "                     HostName gpu1",
        "                     Port 22001",
        "                     User alice",
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
    assert menu() == (
        "\n"
        "  1) status   show your container's state and how to reach it\n"
        "  2) start    start your container\n"
        "  3) stop     stop your container\n"
        "  4) restart  restart your container\n"
        "  5) gpus     the GPUs, who uses them; end your GPU processes\n"
        "  6) help     how to connect and copy files\n"
        "  7) quit     log out\n"
    )


def test_menu_with_markers():
    lines = menu(MARKS).splitlines()
    assert lines[1] == "  <B>1</>) status   <D>show your container's state and how to reach it</>"
    assert lines[7] == "  <B>7</>) quit     <D>log out</>"


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


def test_plain_is_all_empty():
    assert Palette("", "", "", "", "") == PLAIN
