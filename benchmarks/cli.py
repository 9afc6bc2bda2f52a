"""``happysad-bench``: latency, cost and accuracy of model files, side by side."""

from __future__ import annotations

import argparse
import sys

from happysad.edge.console import ArgumentParser, float_range, non_negative_int, positive_int, run_main
from happysad.edge.errors import HappysadError
from happysad.edge.faces import DEFAULT_DETECTOR, DETECTORS
from happysad.edge.fileio import write_json

PROG = "happysad-bench"
#: Exit status when a model misses a gate or regressed against --compare.
EXIT_GATE = 3

EPILOG = f"""exit status: 0 all good; 1 bad input (message says what to do); 2 usage
error; {EXIT_GATE} a model missed a gate (--max-drop, --max-p50-ms,
--min-accuracy) or regressed against --compare (each reason on stderr; the
table and files are still written)."""


def thread_list(text: str) -> list[int]:
    """argparse type: thread counts to sweep, ``4`` or ``1,2,4``."""
    try:
        return [positive_int(part.strip()) for part in text.split(",")]
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}; give counts like 1,2,4") from None


non_negative_float = float_range(0.0)
fraction = float_range(0.0, 1.0, hint="0.9 for 90%")
#: --max-drop, as happysad-export takes it: negative asks a model to beat its reference.
percentage_points = float_range(-100.0, 100.0, unit="percentage points")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__, epilog=EPILOG)
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help=".tflite or .onnx files, and a .keras model where TensorFlow is installed",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="DIR", help="labelled images: one sub-folder per class")
    src.add_argument("--split", metavar="SPLIT_JSON", help="RUN_DIR/split.json from happysad-train")
    p.add_argument("--part", choices=("train", "val", "test"), default="test", help="which part of --split")
    p.add_argument(
        "--data-root", metavar="DIR", default=None, help="where the split's images are now, if the folder moved"
    )
    p.add_argument(
        "--allow-changed",
        action="store_true",
        help="score --split images whose sha256 differs from the split's (else refused); reported in the settings",
    )
    _photo_and_latency_args(p)
    _output_and_gate_args(p)
    return p


def _photo_and_latency_args(p) -> None:
    f = p.add_argument_group("whole photos (--pipeline)")
    f.add_argument(
        "--pipeline",
        action="store_true",
        help="measure the photo path per face detector on --data (photos of any size): faces "
        "found, accuracy where found and over all photos, abstentions, detect/crop/classify ms",
    )
    f.add_argument(
        "-d",
        "--detector",
        default=None,
        metavar="NAME[,NAME...]",
        help="face detector for images larger than the model input, of "
        + ", ".join(DETECTORS)
        + f" (default {DEFAULT_DETECTOR}); with --pipeline a comma-separated list to compare "
        "(default: all)",
    )
    p.add_argument(
        "--tta",
        choices=("none", "flip"),
        default="none",
        help="flip: also measure each file averaging every face with its mirror image (2 inferences), "
        "in rows of their own; their drop is against the same file without it (minus the gain)",
    )
    t = p.add_argument_group("latency")
    t.add_argument(
        "-t",
        "--threads",
        type=thread_list,
        default=None,
        metavar="N[,N...]",
        help="interpreter threads; several, comma-separated, are swept (None: the interpreter's own)",
    )
    t.add_argument("--runs", type=positive_int, default=200, help="least timed single-image runs per model")
    t.add_argument(
        "--min-seconds",
        type=non_negative_float,
        default=0.0,
        metavar="S",
        help="least timed seconds per model; runs go on past --runs until reached",
    )
    t.add_argument("--warmup", type=non_negative_int, default=20, help="untimed runs before timing")
    t.add_argument(
        "--cold-runs",
        type=non_negative_int,
        default=3,
        metavar="N",
        help="fresh processes per model for cold start and peak memory, after one untimed (0: skip)",
    )


def _output_and_gate_args(p) -> None:
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", default=None, help="every figure, the machine and the settings")
    o.add_argument("--csv", metavar="FILE", default=None, help="every scalar figure, one row per model and threads")
    o.add_argument("--markdown", metavar="FILE", default=None, help="the latency/cost and accuracy tables")
    o.add_argument(
        "--plot",
        metavar="PNG",
        default=None,
        help="latency distributions and accuracy against latency (needs matplotlib)",
    )
    g = p.add_argument_group("gates (exit status 3 when a model misses one)")
    g.add_argument(
        "--max-drop",
        type=percentage_points,
        default=None,
        metavar="PP",
        help="most accuracy drop against the float reference, percentage points",
    )
    g.add_argument(
        "--max-p50-ms", type=non_negative_float, default=None, metavar="MS", help="slowest median latency, ms"
    )
    g.add_argument("--min-accuracy", type=fraction, default=None, metavar="A", help="least accuracy, 0..1")
    g.add_argument(
        "--compare",
        metavar="OLD_JSON",
        default=None,
        help="an earlier --json report from this machine; flag regressions against it",
    )
    g.add_argument(
        "--tolerance",
        type=non_negative_float,
        default=20.0,
        metavar="PCT",
        help="--compare: p50 growth allowed, percent",
    )
    g.add_argument(
        "--tolerance-pp",
        type=non_negative_float,
        default=0.5,
        metavar="PP",
        help="--compare: accuracy fall allowed, percentage points",
    )


def _detectors(text: str, parser) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in DETECTORS]
    if bad or not names:
        parser.error(
            f"argument --detector: unknown detector {', '.join(bad) or repr(text)}; choose from {', '.join(DETECTORS)}"
        )
    return names


def _pipeline(args, parser) -> int:
    from .pipeline import format_pipeline, run_pipeline

    names = _detectors(args.detector or ",".join(DETECTORS), parser)
    if not args.data or len(args.models) != 1:
        parser.error("--pipeline measures one model on --data DIR (photos in one sub-folder per class)")
    report = run_pipeline(args.models[0], args.data, names, (args.threads or [None])[0])
    table = format_pipeline(report)
    print(table, flush=True)
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.markdown:
        from .report import write_text

        write_text(args.markdown, table + "\n")
        print(f"wrote {args.markdown}", file=sys.stderr)
    return 0


def _options(args, detector: str, **more):
    """The BenchOptions of the models and latency flags (both modes), plus ``more``."""
    from .bench import BenchOptions

    return BenchOptions(
        models=args.models,
        threads=args.threads or [None],
        runs=args.runs,
        warmup=args.warmup,
        min_seconds=args.min_seconds,
        cold_runs=args.cold_runs,
        detector=detector,
        **more,
    )


def _latency_only(args, detector: str) -> int:
    """No --data or --split: latency and memory on a synthetic input, as benchmark_model does."""
    import tempfile
    from pathlib import Path

    from .latency_only import format_latency_only, run_latency_only

    if args.max_drop is not None or args.min_accuracy is not None:
        raise HappysadError("--max-drop and --min-accuracy need labelled data: give --data DIR or --split FILE")
    opts = _options(args, detector)
    with tempfile.TemporaryDirectory(prefix="happysad-bench-") as work:
        report = run_latency_only(opts, Path(work))
    print(format_latency_only(report), flush=True)
    reasons = [
        f"{r['name']} (threads {r['threads'] or 'default'}): p50 {r['latency_ms']['p50']:.3f} ms exceeds "
        f"--max-p50-ms {args.max_p50_ms:g}"
        for r in report["results"]
        if args.max_p50_ms is not None and r["latency_ms"]["p50"] > args.max_p50_ms
    ]
    report["gates"] = {"max_p50_ms": args.max_p50_ms, "failed": reasons}
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}", file=sys.stderr)
    for reason in reasons:
        print(f"{PROG}: gate failed: {reason}", file=sys.stderr)
    return EXIT_GATE if reasons else 0


def _body(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pipeline:
        return _pipeline(args, parser)
    detector = _detectors(args.detector or DEFAULT_DETECTOR, parser)
    if len(detector) > 1:
        parser.error("argument --detector: one detector, unless --pipeline compares several")
    if not args.data and not args.split:
        return _latency_only(args, detector[0])
    return _labelled(args, detector[0])


def _labelled(args, detector: str) -> int:
    """Accuracy and latency on labelled images, the gates and the comparison; returns the exit code."""
    from .bench import run_bench
    from .report import check_gates, compare_reports, format_table, import_pyplot, read_report

    # Fail on a missing tool or file before minutes of measuring, not after.
    if args.plot:
        import_pyplot()
    old = read_report(args.compare) if args.compare else None
    report = run_bench(
        _options(
            args,
            detector,
            data=args.data,
            split=args.split,
            part=args.part,
            data_root=args.data_root,
            tta=None if args.tta == "none" else args.tta,
            allow_changed=args.allow_changed,
        )
    )
    print(format_table(report), flush=True)
    reasons = check_gates(report, args.max_drop, args.max_p50_ms, args.min_accuracy)
    regressions = compare_reports(report, old, args.tolerance, args.tolerance_pp) if old else []
    report["gates"] = {
        "max_drop_pp": args.max_drop,
        "max_p50_ms": args.max_p50_ms,
        "min_accuracy": args.min_accuracy,
        "failed": reasons,
    }
    if old is not None:
        report["compare"] = {
            "against": args.compare,
            "tolerance_pct": args.tolerance,
            "tolerance_pp": args.tolerance_pp,
            "regressions": regressions,
        }
    _write_outputs(args, report)
    return _verdict(args, report, old, reasons, regressions)


def _write_outputs(args, report: dict) -> None:
    """The --json, --csv, --markdown and --plot files asked for, each tried:
    one that cannot be written (a FIFO with no reader, a folder, a full
    disk) does not keep the others from being written.

    Raises:
        HappysadError: the last output that could not be written (exit 1),
            once all were tried; the errors of those before it printed first.
    """
    from .report import format_csv, format_markdown, write_plot, write_text

    failed: list[HappysadError] = []
    for path, write in (
        (args.json, lambda p: write_json(p, report)),
        (args.csv, lambda p: write_text(p, format_csv(report))),
        (args.markdown, lambda p: write_text(p, format_markdown(report))),
        (args.plot, lambda p: write_plot(report, p)),
    ):
        if path:
            try:
                write(path)
            except HappysadError as exc:
                failed.append(exc)
                continue
            print(f"wrote {path}", file=sys.stderr)
    for exc in failed[:-1]:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
    if failed:
        raise failed[-1]


def _verdict(args, report: dict, old, reasons: list, regressions: list) -> int:
    """Say what failed (gates, regressions) on stderr; the exit code."""
    if old is not None and old.get("machine", {}).get("cpu") != report["machine"]["cpu"]:
        print(
            f"note: {args.compare} was measured on {old.get('machine', {}).get('cpu')}, this run on "
            f"{report['machine']['cpu']}; latency compares only on one machine",
            file=sys.stderr,
        )
    if old is not None and not regressions:
        print(f"no regression against {args.compare}", file=sys.stderr)
    for reason in reasons:
        print(f"{PROG}: gate failed: {reason}", file=sys.stderr)
    for reason in regressions:
        print(f"{PROG}: regression: {reason}", file=sys.stderr)
    return EXIT_GATE if reasons or regressions else 0


def main(argv=None) -> int:
    """Entry point of ``happysad-bench``; returns the exit code."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
