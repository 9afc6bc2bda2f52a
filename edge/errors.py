"""The one exception type the command-line tools turn into a one-line error."""


class HappysadError(Exception):
    """A problem the user can fix: a bad path, a corrupt file, a wrong flag.

    The message is one line that says what went wrong and what to do. The
    command-line tools print it as ``error: <message>`` and exit with
    status 1, with no traceback.
    """
