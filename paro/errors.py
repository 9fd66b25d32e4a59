"""The project's error type.

Library code raises :class:`ParoError` for anything a user can get wrong (a parameter, a file, a tool that
is missing). The message is one line that names the offending value and what is allowed; the CLI prints it
as ``paro: error: <message>`` and exits non-zero, never with a traceback.
"""

__all__ = ["ParoError"]


class ParoError(Exception):
    """A user-facing error with a one-line message naming the problem and the fix."""

    def __init__(self, message):
        if "\n" in message:
            raise ValueError("ParoError messages are one line")
        super().__init__(message)
