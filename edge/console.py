"""What every happysad command line shares: one-line errors and exit codes.

Exit codes: 0 success, 1 a problem with an input (message names it),
2 a usage error (unknown flag, bad value, a path that does not exist),
130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import Callable, Sequence

from happysad.edge.errors import HappysadError

#: Packages only the workstation extra (``happysad[train]``) installs.
WORKSTATION_MODULES = ("tensorflow", "keras", "tf2onnx", "onnx", "matplotlib", "tensorboard", "sympy")


def log(msg: str) -> None:
    """One progress or status line, logged at INFO on the ``happysad`` logger:
    on stderr, flushed at once, in a command (:func:`install_log_handler`;
    stdout stays for results: tables, JSON lines); routed or silenced like
    any logging in a program that uses the API."""
    import logging

    logging.getLogger("happysad").info(msg)


def progress(total: int, desc: str, stream=None):
    """A one-line counter (tqdm's) on stderr, drawn only when stderr is a
    terminal (a log file or a pipe gets nothing) and there is more than one
    item, at most ten times a second; erased when closed.

    Args:
        total: items to go through. desc: what they are ("images").
        stream: where to draw; ``sys.stderr`` by default.

    Returns:
        a ``tqdm.tqdm``: ``update(n)`` per item, ``clear()`` before printing a
        line of one's own (the counter redraws after it), ``close()`` at the end.
    """
    from tqdm import tqdm

    stream = stream if stream is not None else sys.stderr
    shown = total > 1 and bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(total=total, desc=desc, file=stream, disable=not shown, leave=False, mininterval=0.1, unit="")


def _needs_workstation(module: str) -> str:
    return (
        f"needs {module}, which the edge install leaves out; on a workstation "
        "install it with: pip install 'happysad[train]'"
    )


def require_workstation() -> None:
    """Fail at once, before any work, where TensorFlow and Keras are not installed.

    Raises:
        HappysadError: one of them is missing (an edge-only install).
    """
    import importlib.util

    for name in ("tensorflow", "keras"):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise HappysadError(_needs_workstation(name))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only when it has one worth reading: not for
    on/off switches, and not "None" for a default decided later (the help
    text says what happens then)."""

    def _get_help_string(self, action):
        # Identity, not equality: a default of 0 or 0.0 is worth showing.
        if (
            action.default is None
            or action.default is False
            or action.default is argparse.SUPPRESS
            or isinstance(action, argparse._VersionAction)
        ):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with defaults shown in --help and one-line usage errors."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        if kwargs.get("add_help", True):  # subcommand parsers are built with add_help too; one --version is enough
            from happysad.edge import __version__

            self.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def float_range(
    lo: float | None = None,
    hi: float | None = None,
    *,
    open_lo: bool = False,
    open_hi: bool = False,
    unit: str = "",
    hint: str = "",
):
    """An argparse type: a finite number within [lo, hi] (an end that is
    None is unbounded; ``open_lo``/``open_hi`` exclude that end). The one
    validator of every float flag, so all say alike what is wrong.

    Args:
        unit: what the number counts ("percentage points"), named in messages.
        hint: an example shown after a range error ("0.9 for 90%").

    Returns:
        a function str -> float raising ``argparse.ArgumentTypeError`` with
        a one-line reason.
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number" + (f" of {unit}" if unit else "")) from None
        low_ok = lo is None or (value > lo if open_lo else value >= lo)
        high_ok = hi is None or (value < hi if open_hi else value <= hi)
        if math.isfinite(value) and low_ok and high_ok:
            return value
        if hi is None:
            reason = f"more than {lo:g}" if open_lo else f"{lo:g} or more"
        else:
            reason = f"between {lo:g} and {hi:g}" + (f" {unit}" if unit else "")
        raise argparse.ArgumentTypeError(f"{value:g} must be {reason}" + (f" ({hint})" if hint else ""))

    return parse


#: The packages whose loggers a command's stderr shows.
LOGGERS = ("happysad",)


def install_log_handler(stream=None) -> None:
    """Show the packages' log records on stderr as bare lines (``%(message)s``),
    INFO and above: what a command-line user sees. Library code logs through
    :mod:`logging` (``logging.getLogger(__name__)``), so a program using the
    API routes or silences it; only the commands install this handler.
    Installing twice does not duplicate lines."""
    import logging

    class StderrHandler(logging.StreamHandler):
        """Writes to whatever ``sys.stderr`` is at the time (a test may swap it)."""

        _happysad = True

        @property
        def stream(self):
            return stream or sys.stderr

        @stream.setter
        def stream(self, value):
            pass

    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(getattr(h, "_happysad", False) for h in logger.handlers):
            handler = StderrHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _os_error(prog: str, exc: OSError) -> int:
    """A path the operating system refuses where no step expected it (a name
    over 255 bytes, a symlink loop, a permission): one line naming it, as for
    every other bad input; exit code 1."""
    from happysad.edge.images import display_path

    where = f"{display_path(exc.filename)}: " if exc.filename is not None else ""
    print(f"{prog}: error: {where}{exc.strerror or exc}; check the path", file=sys.stderr)
    return 1


def run_main(prog: str, body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a command's body, turning known failures into one-line errors.

    Returns:
        the exit code: the body's; the error's ``exit_code`` for a
        :class:`HappysadError` (1, or 2 for a :class:`UsageError`); 130 on
        Ctrl-C or SIGTERM, which unwind the same way, so temporary files are
        removed and nothing is left half-written under a final name.
    """
    install_log_handler()
    terminated = []

    def terminate(signum, frame):
        terminated.append(signum)
        raise KeyboardInterrupt  # unwinds like Ctrl-C: temporary files are removed

    def interrupted() -> int:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread
        previous = None
    try:
        code = body(argv)
        # A library that swallowed the KeyboardInterrupt let the body run on.
        return interrupted() if terminated else code
    except HappysadError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return interrupted()
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
    except OSError as exc:
        return interrupted() if terminated else _os_error(prog, exc)
    except ModuleNotFoundError as exc:
        # An edge-only install has happysad-train and happysad-export on the
        # PATH too; they need the workstation's packages.
        if (exc.name or "").split(".")[0] in WORKSTATION_MODULES:
            print(f"{prog}: error: {_needs_workstation(exc.name)}", file=sys.stderr)
            return 1
        raise
    except Exception:
        # A library that caught the interrupt and raised its own error
        # (a converter calling back into Python) is still an interruption.
        if terminated:
            return interrupted()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
