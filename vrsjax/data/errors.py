"""Bad-input policy of the data room: one error type whose message names the dataset, video, expression and file,
and a skip log for `data.skip_bad_samples=true`, which counts every dropped sample by reason and reports them at
the end instead of raising. Nothing is dropped silently: a skip is always counted and its first messages kept.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from vrsjax.errors import UserError

log = logging.getLogger("vrsjax.data")

MAX_KEPT_MESSAGES = 20


class DataError(UserError, ValueError):
    """Bad dataset input: the message names dataset, video, expression and file, and says what to do."""


def data_error(
    problem: str,
    *,
    dataset: str,
    video: str | None = None,
    expression: str | None = None,
    file: str | None = None,
    fix: str = "",
    reason: str = "bad_input",
) -> DataError:
    """A DataError whose message reads `dataset 'revos', video 'v', expression '3', file '...': problem; fix`."""
    where = [f"dataset {dataset!r}"]
    if video is not None:
        where.append(f"video {video!r}")
    if expression is not None:
        where.append(f"expression {expression!r}")
    if file is not None:
        where.append(f"file {str(file)!r}")
    error = DataError(f"{', '.join(where)}: {problem}" + (f"; {fix}" if fix else ""))
    error.reason = reason
    return error


@dataclass
class SkipLog:
    """Counts of samples dropped under `skip_bad_samples`, by reason, with the first few messages."""

    dataset: str
    counts: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, error: DataError, samples: int = 1) -> None:
        """Record `samples` dropped expressions (a bad video drops all of its expressions)."""
        self.counts[getattr(error, "reason", "bad_input")] += samples
        if len(self.messages) < MAX_KEPT_MESSAGES:
            self.messages.append(str(error))
        log.warning("skipping %d sample(s): %s", samples, error)

    def merge(self, other: SkipLog) -> None:
        self.counts.update(other.counts)
        self.messages.extend(other.messages[: max(0, MAX_KEPT_MESSAGES - len(self.messages))])

    def report(self) -> str:
        """One line per reason, then the kept messages; '' when nothing was skipped."""
        if not self.total:
            return ""
        lines = [f"{self.dataset}: skipped {self.total} bad sample(s) (data.skip_bad_samples=true)"]
        lines += [f"  {reason}: {count}" for reason, count in sorted(self.counts.items())]
        lines += [f"  - {message}" for message in self.messages]
        return "\n".join(lines)


def raise_or_skip(error: DataError, skip_log: SkipLog | None, samples: int = 1) -> None:
    """Raise `error` unless a skip log is given (skip_bad_samples=true), in which case count it."""
    if skip_log is None:
        raise error
    skip_log.add(error, samples)
