"""``happysad-bench``: latency and accuracy of model files, side by side."""
from __future__ import annotations

import sys

from edge.cli_util import ArgumentParser, positive_int, non_negative_int, run_main
from edge.fileio import write_json

PROG = "happysad-bench"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("models", nargs="+", metavar="MODEL", help=".tflite or .onnx files")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR", help="labelled images: one sub-folder per class")
    src.add_argument("--split", metavar="SPLIT_JSON", help="RUN_DIR/split.json from happysad-train")
    p.add_argument("--part", choices=("train", "val", "test"), default="test", help="which part of --split")
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="where the split's images are now, if the folder moved")
    p.add_argument("-t", "--threads", type=positive_int, default=None,
                   help="interpreter threads (default: the interpreter's own)")
    p.add_argument("--runs", type=positive_int, default=200, help="timed single-image runs per model")
    p.add_argument("--warmup", type=non_negative_int, default=20, help="untimed runs before timing")
    p.add_argument("--json", metavar="FILE", default=None, help="also write every figure as JSON")
    return p


def _body(argv) -> int:
    args = build_parser().parse_args(argv)
    from .bench import BenchOptions, format_table, run_bench
    report = run_bench(BenchOptions(args.models, args.data, args.split, args.part, args.data_root,
                                    args.threads, args.runs, args.warmup))
    print(format_table(report))
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    """Entry point of ``happysad-bench``; returns the exit code."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
