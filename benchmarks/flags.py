"""Every flag of the four tools, as a markdown page made from their own parsers.

``make docs`` writes ``docs/flags.md`` with it, and a test checks that the
committed page is what the parsers say, so the tables cannot drift from
the code:

    python -m happysad.benchmarks.flags docs/flags.md
"""

from __future__ import annotations

import argparse
import sys

from happysad.edge.console import ArgumentParser, run_main
from happysad.edge.fileio import write_bytes

PROG = "python -m happysad.benchmarks.flags"


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """(name, parser) of each tool and each ``happysad-edge`` command."""
    from happysad.benchmarks.cli import build_parser as bench
    from happysad.edge.cli.parser import build_parser as edge
    from happysad.export.cli import build_parser as export
    from happysad.train.cli import build_parser as train

    out = [("happysad-train", train()), ("happysad-export", export())]
    for action in edge()._actions:
        if isinstance(action, argparse._SubParsersAction):
            out += [(f"happysad-edge {name}", sub) for name, sub in action.choices.items()]
    out.append(("happysad-bench", bench()))
    return out


def _default(action: argparse.Action) -> str:
    """The default as a user would type it; empty where none applies (None,
    False, or a flag that only switches something on)."""
    value = action.default
    if value is None or value is False or value is argparse.SUPPRESS or action.nargs == 0:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) if value else ""
    return str(value)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def table(name: str, parser: argparse.ArgumentParser) -> str:
    """One tool's (or command's) flags: flag, default, choices, what."""
    lines = [f"## `{name}`", "", "| flag | default | what |", "| --- | --- | --- |"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        flag = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.metavar or action.dest}`"
        what = action.help or ""
        if action.choices and not isinstance(action.choices, dict):
            what += f" (one of: {', '.join(map(str, action.choices))})"
        default = _default(action)
        lines.append(f"| {flag} | {_cell(f'`{default}`' if default else '')} | {_cell(what)} |")
    return "\n".join(lines)


def page() -> str:
    """The whole page: a short note, then one table per tool and command."""
    head = (
        "# Every flag\n\n"
        "Made from the tools' own parsers by `make docs` (`python -m happysad.benchmarks.flags`); "
        "a test fails when this page and the code disagree. An empty default means none is set "
        "(the tool chooses, or the flag only switches something on). [Back to the README](../README.md).\n"
    )
    return head + "\n" + "\n\n".join(table(name, parser) for name, parser in _parsers()) + "\n"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("out", metavar="FILE.md", nargs="?", default=None, help="write the page here (else print it)")
    return p


def _body(argv) -> int:
    args = build_parser().parse_args(argv)
    text = page()
    if args.out:
        write_bytes(args.out, text.encode())
    else:
        sys.stdout.write(text)
    return 0


def main(argv=None) -> int:
    """Entry point; returns the exit code."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
