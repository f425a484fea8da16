"""The one progress bar of the package: tqdm's redrawn bar on a terminal; when stdout or the bar's stream is not a
terminal (CI, `make demo > log`), a plain line every `PLAIN_INTERVAL` seconds and a last one at the end, so a log
holds a few lines per loop instead of thousands of carriage-return redraws.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

PLAIN_INTERVAL = 10.0  # seconds between two plain lines
_PLAIN_FORMAT = "{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class PlainLines(tqdm):
    """tqdm that writes whole lines, at most one per `mininterval` seconds, and the final state when closed."""

    def display(self, msg=None, pos=None):
        if msg is not None:  # tqdm passes a message only to clear or hide a redrawn bar: nothing to undo in a log
            return True
        closing = self.disable  # close() disables the bar before its last display
        now = time.monotonic()
        if not closing and now - getattr(self, "_line_time", -float("inf")) < self.mininterval:
            return True
        self._line_time = now
        self.fp.write(self.__str__() + ("" if closing else "\n"))  # close() ends the last line itself
        self.fp.flush()
        return True


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """`tqdm(iterable, **kwargs)` on a terminal, `PlainLines` otherwise (see the module docstring)."""
    stream = kwargs.get("file") or sys.stderr
    if _is_terminal(sys.stdout) and _is_terminal(stream):
        return tqdm(iterable, **kwargs)
    plain = {"mininterval": PLAIN_INTERVAL, "bar_format": _PLAIN_FORMAT, "leave": True, "dynamic_ncols": False}
    return PlainLines(iterable, **{**kwargs, **plain})


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False
