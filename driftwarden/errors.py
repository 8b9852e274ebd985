"""The one exception type that the command line turns into a one-line message."""


class UserError(Exception):
    """A mistake the user can fix: bad input, a wrong URL, a missing file.

    The command line prints ``str(error)`` on one line of stderr and exits
    with status 2, never a traceback. The message says what is wrong and what
    to do about it.
    """
