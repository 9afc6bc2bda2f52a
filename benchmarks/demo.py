"""The end of ``make demo``: benchmark and classify with every file the
export wrote, then a summary naming any file it refused.

Usage: ``python -m happysad.benchmarks.demo RUN_DIR EXPORT_STATUS``, where
EXPORT_STATUS is ``happysad-export``'s exit status. A refused file (one
that lost more than ``--max-drop`` on the validation split) does not stop
the demo: the files that passed are still benchmarked and used, and the
demo exits 1 at the end, naming it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from happysad.edge.dataset import read_split, split_items
from happysad.edge.device.verify import MANIFEST_NAME
from happysad.edge.errors import HappysadError
from happysad.edge.jsonfile import read_json

PROG = "make demo"
#: The files the demo benchmarks, in the order of the table.
BENCH_FILES = ("model_float32.tflite", "model_int8.tflite", "model_float32.onnx", "model_int8.onnx")
#: Test photos classified at the end: one in this many of the test split.
CLASSIFY_EVERY = 300


def _written(export_dir: Path) -> tuple[list[str], dict]:
    """(names of files this export wrote, refused files' records), from its manifest."""
    manifest = read_json(export_dir / MANIFEST_NAME, "manifest")
    return list(manifest.get("written", [])), dict(manifest.get("refused", {}))


def main(argv=None) -> int:
    """Entry point; returns 0, or 1 when the export failed or refused a file."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or not argv[1].lstrip("-").isdigit():
        print("usage: python -m happysad.benchmarks.demo RUN_DIR EXPORT_STATUS", file=sys.stderr)
        return 2
    run, status = Path(argv[0]), int(argv[1])
    export_dir = run / "export"
    try:
        written, refused = _written(export_dir)
    except HappysadError as exc:
        print(f"{PROG}: the export wrote no manifest ({exc}); nothing to benchmark", file=sys.stderr)
        return 1
    models = [str(export_dir / n) for n in BENCH_FILES if n in written]
    from happysad.benchmarks.cli import main as bench
    from happysad.edge.cli.parser import main as edge

    code = 0
    if models:
        code |= bench(
            [*models, "--split", str(run / "split.json"), "--json", str(run / "bench.json"), "--cold-runs", "0"]
        )
        pick = next(
            (m for m in models if m.endswith("int8.tflite")), next((m for m in models if "int8" in m), models[0])
        )
        photos = [str(p) for p, _ in split_items(read_split(run / "split.json"), "test")[::CLASSIFY_EVERY]]
        code |= edge(["classify", pick, *photos])
    print()
    if refused or status:
        for name, rec in refused.items():
            v = rec["verification"]
            print(
                f"{PROG}: REFUSED {name}: loses {v['drop_pp']:.2f} pp on the {v['split']} split "
                f"({v['float_accuracy']:.4f} -> {v['accuracy']:.4f}), over --max-drop by "
                f"{rec['missed_by_pp']:.2f} pp; not written",
                file=sys.stderr,
            )
        if status and not refused:
            print(f"{PROG}: the export failed (exit {status}); see its message above", file=sys.stderr)
        print(
            f"{PROG}: benchmarked and classified with the {len(models)} files that passed: "
            + ", ".join(Path(m).name for m in models),
            file=sys.stderr,
        )
        return 1
    return 1 if code else 0


if __name__ == "__main__":
    sys.exit(main())
