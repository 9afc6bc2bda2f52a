"""The exception types the command-line tools turn into one-line errors."""


class HappysadError(Exception):
    """A problem the user can fix: a corrupt file, a model that does not load.

    The message is one line that says what went wrong and what to do. The
    command-line tools print it as ``<prog>: error: <message>`` and exit with
    :attr:`exit_code`, with no traceback.
    """

    exit_code = 1


class UsageError(HappysadError):
    """A command line that cannot work as given: a path that does not exist.

    Exits with status 2, like argparse's own usage errors.
    """

    exit_code = 2
