"""student/loans.py: the loan lines a student reads, from the helper's `loans=` and `now=` keys."""

from __future__ import annotations

from gpushell.student.banner import PLAIN, Palette
from gpushell.student.loans import decode, lines, outcome

MARKS = Palette(bold="<B>", good="<G>", bad="<!>", dim="<D>", reset="</>")
NOW = 1_800_000_000


def test_each_loan_with_its_time_left_the_warned_one_marked() -> None:
    info = {"now": str(NOW), "loans": f"0:{NOW + 7 * 3600 + 59 * 60 + 30}:0,3:{NOW + 14 * 60}:1"}
    assert lines(info, MARKS) == (
        "Borrowed GPU 0: 7h 59m left\n"
        "<!>Borrowed GPU 3: 14m left; it goes back then (extend 3 2h for more)</>\n"
    )


def test_a_place_in_line() -> None:
    assert lines({"now": str(NOW), "queue_place": "2"}, PLAIN) == "Waiting for a GPU: place 2 in line\n"


def test_malformed_loans_are_skipped_not_shown() -> None:
    info = {"now": str(NOW), "loans": f"x:1:0,1:{NOW}:0:9,2:-5:0,\x1b[2J:1:1,4:{NOW + 60}:0"}
    assert decode(info) == [(4, NOW + 60, False)]
    assert lines({"loans": "", "queue_place": "1;rm"}, PLAIN) == ""


def test_outcomes() -> None:
    lent = {"now": str(NOW), "lent": "1,2", "loans": f"1:{NOW + 3600}:0,2:{NOW + 3600}:0"}
    assert outcome("borrow", lent, PLAIN) == (
        "You have GPU 1, 2 now.\nBorrowed GPU 1: 1h left\nBorrowed GPU 2: 1h left\n"
    )
    assert outcome("return", {"returned": "1"}, PLAIN) == "Returned GPU 1.\nYou have no borrowed GPUs.\n"
    assert outcome("borrow", {"queue_place": "1"}, PLAIN) == "Waiting for a GPU: place 1 in line\n"


def test_a_return_that_restarted_the_container_says_so() -> None:
    said = outcome("return", {"returned": "1", "restarted": "1"}, PLAIN)
    assert said == (
        "Returned GPU 1.\nYour container restarted to end the processes on it.\nYou have no borrowed GPUs.\n"
    )


def test_a_return_its_server_saw_unused_keeps_the_container_running_and_says_so() -> None:
    said = outcome("return", {"returned": "1", "watched": "1"}, PLAIN)
    assert said == (
        "Returned GPU 1.\n"
        "No process of yours was on it: your container keeps running (it restarts if one was).\n"
        "You have no borrowed GPUs.\n"
    )
