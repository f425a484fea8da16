"""Progress bars write plain lines, not carriage-return redraws, when the output is not a terminal."""

import io

from vrsjax import progress


def test_plain_lines_when_the_stream_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 3600.0)  # no periodic line within this test: first and last only
    stream = io.StringIO()
    with progress.progress_bar(total=500, desc="steps", file=stream) as bar:
        for i in range(500):
            bar.update()
            bar.set_postfix(loss=i)  # set_postfix refreshes on every call; a log must not get a line each time
    lines = stream.getvalue().split("\n")
    assert "\r" not in stream.getvalue()
    assert lines[0].startswith("steps: 0/500") and lines[1].startswith("steps: 500/500") and lines[2:] == [""]
    assert "loss=499" in lines[1]


def test_a_bar_that_is_not_left_still_ends_its_line():
    stream = io.StringIO()
    for _ in progress.progress_bar(range(3), desc="tokenize", leave=False, file=stream):
        pass
    lines = stream.getvalue().split("\n")
    assert "\r" not in stream.getvalue() and lines[-2].startswith("tokenize: 3/3") and lines[-1] == ""
