"""The one exception the command line turns into a one-line message and a non-zero exit."""


class GeepError(Exception):
    """A user-facing error: bad input, a missing file, an unreachable target.

    The CLI prints ``error: <message>`` on one line and exits with status 2; library callers get
    the exception. Raise it only for things the user can fix; bugs should stay tracebacks.
    """
