"""The one exception type users see, and the exit codes commands turn it into."""

from __future__ import annotations

EXIT_USAGE = 2  # bad usage or bad input: the user can fix the command line or the file
EXIT_FAILURE = 1  # anything else that went wrong


class EcgcapError(Exception):
    """A problem the user can act on, reported by commands as one line on stderr.

    Parameters
    ----------
    message : str
        What is wrong, in words a user understands.
    input : str, optional
        The input it concerns (a path, an option, a record name); put first in the message.
    exit_code : int
        ``EXIT_USAGE`` (2, default) for bad usage or input, ``EXIT_FAILURE`` (1) for other failures.

    Examples
    --------
    >>> str(EcgcapError("no such directory", input="--data-dir /nowhere"))
    '--data-dir /nowhere: no such directory'
    """

    def __init__(self, message: str, *, input: str | None = None, exit_code: int = EXIT_USAGE):
        self.message = message
        self.input = input
        self.exit_code = exit_code
        super().__init__(f"{input}: {message}" if input else message)
