"""statushtml: the page draws the document, escapes every text in it and fetches nothing."""

from __future__ import annotations

import re
from typing import Any

from gpushell.core import statushtml
from gpushell.core.lending import Loan, LoanBook
from gpushell.core.registry import parse
from tests import statusday

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&'


def day(names: bool = False) -> dict[str, Any]:
    switch = "status_page: {names: true}\n" if names else ""
    reg = parse(
        f"hostname: gpu1\nlending: {{gpus: [1, 2]}}\n{switch}users:\n"
        "  ann: {port: 22001, ip: 10.0.3.2, idmap: 1000000}\n"
        "  ben: {port: 22002, ip: 10.0.3.3, idmap: 1065536, gpus: [0]}\n",
        "/etc/gpushell.yaml",
    )
    book = LoanBook([Loan("ann", 1, statusday.LAST - 60, statusday.LAST + 3600)])
    return statusday.replay(reg, book)[1]


def test_every_gpu_has_a_card_with_two_plots_and_the_host_its_figures() -> None:
    page = statushtml.render(day())
    for number in statusday.GPUS:
        card = re.search(rf'<article class="card gpu" id="gpu-{number}">(.*?)</article>', page)
        assert card is not None, number
        assert card[1].count("<svg") == 2
    for figure in ("host-cpu", "host-memory", "host-disk", "host-students"):
        assert f'id="{figure}"' in page
    cpu = statusday.DAY["host"]["cpu"][-1]  # the recorded use in the day's last minute
    assert f"CPU: {cpu}% (load 21.4 on 64 CPUs)" in page
    assert "2 of 2 containers running" in page and "1 logged in" in page
    assert "lent to 1 student until" in page and "assigned to 1 student" in page
    assert "no reading" in page  # GPU 3, lost


def test_names_appear_only_when_shown() -> None:
    assert "ann" not in statushtml.render(day()) and "ben" not in statushtml.render(day())
    shown = statushtml.render(day(names=True))
    assert "lent to ann until" in shown and "assigned to ben" in shown


def test_every_text_of_the_document_is_escaped() -> None:
    document = day(names=True)
    document["host"] = HOSTILE
    document["updated"] = HOSTILE
    document["gpus"][0].update(name=HOSTILE, names=[HOSTILE], state=HOSTILE)
    page = statushtml.render(document)
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_the_page_fetches_nothing_and_runs_no_script() -> None:
    page = statushtml.render(day())
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert f'content="{statushtml.POLICY}"' in page and "default-src 'none'" in statushtml.POLICY
    assert '<meta http-equiv="refresh" content="60">' in page


def test_a_plot_breaks_at_gaps_and_says_when_it_has_nothing() -> None:
    svg = statushtml.plot([0, 100, None, 50], "label")
    assert 'viewBox="0 0 4 40"' in svg
    assert re.search(r'd="M0\.5,38\.0h0\.01L1\.5,2\.0M3\.5,20\.0h0\.01"', svg), svg
    empty = statushtml.plot([None] * 288, "a <label>")
    assert "no readings yet" in empty and "<path" not in empty and "a &lt;label&gt;" in empty
