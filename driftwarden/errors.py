"""The one exception type that the command line turns into a one-line message."""


class UserError(Exception):
    """A mistake the user can fix: bad input, a wrong URL, a missing file.

    The command line prints ``str(error)`` on one line of stderr and exits
    with status 2, never a traceback. The message says what is wrong and what
    to do about it.
    """


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (ClickHouse's and HTTP clients' run to many), or its type's name
    when it has none: what a log line or an answer quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
