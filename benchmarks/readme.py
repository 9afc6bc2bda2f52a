"""Put a Markdown file between two marker comments of another, in place.

``make bench`` uses it to put its results into the README, between
``<!-- bench:start -->`` and ``<!-- bench:end -->``; the rest of the README
is left byte for byte as it was. A ``.json`` block (``happysad-bench
--json``) is set as the one summary table of :mod:`.summary`; any other
file is inserted as it is.

    python -m happysad.benchmarks.readme runs/demo/bench/bench.json README.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from happysad.edge import HappysadError
from happysad.edge.console import ArgumentParser, run_main
from happysad.edge.errors import UsageError
from happysad.edge.fileio import write_bytes

PROG = "python -m happysad.benchmarks.readme"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def replace_between_markers(text: str, block: str, start: str = START, end: str = END) -> str:
    """``text`` with everything between ``start`` and ``end`` replaced by ``block``.

    The markers stay, each on its own line; ``block`` is set between them
    with one trailing newline.

    Raises:
        HappysadError: either marker is missing, appears twice, or ``end``
            comes before ``start``.
    """
    for marker in (start, end):
        if text.count(marker) != 1:
            raise HappysadError(
                f"the marker {marker} must appear exactly once (found "
                f"{text.count(marker)}); put {start} and {end} around the table"
            )
    head, rest = text.split(start)
    if end not in rest:
        raise HappysadError(f"{end} comes before {start}; put the start marker first")
    _, tail = rest.split(end)
    return f"{head}{start}\n{block.rstrip()}\n{end}{tail}"


def _summary(path: str) -> str:
    """The summary table of a happysad-bench JSON report (one-line error when it is not one)."""
    from happysad.edge.jsonfile import read_json

    from .summary import format_summary

    try:
        return format_summary(read_json(path, "report"))
    except (KeyError, TypeError, AttributeError):
        raise HappysadError(f"{path}: not a happysad-bench --json report; run make bench again") from None


def _body(argv) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("block", help="happysad-bench --json report (its summary table), or a Markdown file to insert")
    p.add_argument("target", help="file with the two markers, e.g. README.md")
    args = p.parse_args(argv)
    try:
        block = Path(args.block).read_text()
        text = Path(args.target).read_text()
        if args.block.endswith(".json"):
            block = _summary(args.block)
    except FileNotFoundError as exc:
        raise UsageError(f"{exc.filename}: no such file; check the path") from None
    except OSError as exc:
        raise HappysadError(f"{exc.filename}: cannot read ({exc.strerror})") from None
    try:
        new = replace_between_markers(text, block)
    except HappysadError as exc:
        raise HappysadError(f"{args.target}: {exc}") from None
    if new != text:
        write_bytes(args.target, new.encode())
    print(f"updated {args.target} from {args.block}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    """Entry point; returns the exit code."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
