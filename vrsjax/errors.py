"""The project's user-facing error: a problem the user can fix (a bad file, key, value or flag).

`vrsjax.cli.main` prints it as one line and exits 1; `--debug` shows the traceback. Rooms raise it (or a subclass)
with a message that names the file, key or value and says what to do.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix; the message names the file, key or value and what to do."""
