"""hotdog.core.progress: what long work shows, in a log and on a terminal."""

import io
import sys

from hotdog.core.progress import tracked


def test_a_log_gets_a_line_per_tenth_after_each_is_done(capsys):
    heard = []
    for item in tracked(range(20), 20, "work", on_tenth=lambda share: heard.append(share)):
        heard.append(item)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"work: batch {i}/20" for i in range(2, 21, 2)]
    # Every item passes through, in order, and a tenth is told only once its items are used.
    assert [h for h in heard if isinstance(h, int)] == list(range(20))
    assert heard[:4] == [0, 1, 0.1, 2] and heard[-1] == 1.0


def test_an_uneven_total_still_ends_at_the_whole(capsys):
    assert list(tracked(iter("abcdefghijklm"), 13, "decode test", "image")) == list("abcdefghijklm")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[0] == "decode test: image 2/13" and lines[-1] == "decode test: image 13/13"
    # Fewer items than tenths: a line each.
    assert list(tracked(range(3), 3, "few")) == [0, 1, 2]
    assert capsys.readouterr().out.splitlines() == ["few: batch 1/3", "few: batch 2/3", "few: batch 3/3"]


def test_no_desc_shows_nothing(capsys):
    heard = []
    assert list(tracked(range(5), 5, None, on_tenth=heard.append)) == list(range(5))
    assert capsys.readouterr() == ("", "") and heard == []


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_and_no_lines(capsys, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    heard = []
    assert list(tracked(range(20), 20, "work", on_tenth=heard.append)) == list(range(20))
    assert capsys.readouterr().out == ""
    assert "work:" in terminal.getvalue() and "/20" in terminal.getvalue()
    assert len(heard) == 10  # the events for the Prefect UI go out either way
