"""Does int8 hold for any model a machine trains? Train a short run per
seed, export it, and measure each int8 file against its float32 twin on the
validation and test splits.

``make quant-check`` (or ``python -m happysad.benchmarks.quant_check DATA``) trains
``--seeds`` runs of ``--epochs`` epochs with ``--deterministic``, exports
each with the gate opened (``--max-drop 100``: every file is written and
measured here instead), and prints one row per seed: the float32 TFLite
accuracy and the int8 TFLite and int8 ONNX drops (percentage points, float
minus int8, positive when int8 is worse) on both splits. Where
``qemu-x86_64`` is installed (Debian: ``apt-get install qemu-user``) the
int8 ONNX file is also run on an emulated Haswell CPU (AVX2, no VNNI),
where onnxruntime's int8 kernels take the saturating path the 7-bit weights
guard against. Exit status 3 when a drop exceeds ``--max-drop`` (0.5 pp).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from happysad.edge import Classifier, load_image, preprocess
from happysad.edge.console import ArgumentParser, positive_int, run_main
from happysad.edge.dataset import read_split, split_items
from happysad.edge.fileio import write_bytes, write_json
from happysad.edge.metrics import decide

PROG = "python -m happysad.benchmarks.quant_check"
EXIT_GATE = 3
#: The CPU model qemu emulates for the AVX2 column: AVX2 and FMA, no AVX-512, no VNNI.
EMULATED_CPU = "Haswell"
PARTS = ("val", "test")


def split_pixels(split: dict, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (N, H, W, C) preprocessed images, int64 (N,) labels) of one part."""
    items = split_items(split, part)
    size, color = tuple(split["image"]["size"]), split["image"]["color"]
    return (
        np.stack([preprocess(load_image(p), size, color) for p, _ in items]),
        np.array([y for _, y in items], np.int64),
    )


def file_accuracy(path: Path, pixels: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``labels`` a model file gets right, one image per invoke, through :class:`edge.Classifier`."""
    clf = Classifier(path)
    predicted = np.array([clf.predict_index(clf.scores(x)) for x in pixels])
    return float(np.mean(predicted == labels))


def onnx_batch_accuracy(path: Path, pixels: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float:
    """The same figure as :func:`file_accuracy` for an ONNX file, batched
    (:func:`export.validate.onnx_probabilities`): under emulation one image
    per run would take an hour."""
    from happysad.export.validate import onnx_probabilities

    return float(np.mean(decide(onnx_probabilities(path, pixels), threshold) == labels))


def emulated_accuracy(path: Path, split_json: Path, part: str) -> float | None:
    """The accuracy of an ONNX file run under ``qemu-x86_64 -cpu Haswell``, or None without qemu."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        return None
    res = subprocess.run(
        [
            qemu,
            "-cpu",
            EMULATED_CPU,
            sys.executable,
            "-m",
            "happysad.benchmarks.quant_check",
            "--eval",
            str(path),
            str(split_json),
            part,
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if res.returncode != 0:
        print(f"emulated run failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return float(res.stdout.strip().splitlines()[-1])


def _run(cmd: list, log: Path) -> None:
    with open(log, "ab") as fh:
        res = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise SystemExit(f"{PROG}: {' '.join(map(str, cmd[1:4]))} failed (exit {res.returncode}); see {log}")


def check_seed(data: str, out: Path, seed: int, epochs: int, emulate: bool) -> dict:
    """Train, export and measure one seed; returns its row."""
    run = out / f"seed{seed}"
    log = out / f"seed{seed}.log"
    log.unlink(missing_ok=True)
    py = sys.executable
    _run(
        [
            py,
            "-m",
            "happysad.train",
            data,
            "--out",
            str(run),
            "--epochs",
            str(epochs),
            "--seed",
            str(seed),
            "--deterministic",
            "--overwrite",
        ],
        log,
    )
    _run(
        [
            py,
            "-m",
            "happysad.export",
            str(run),
            "--max-drop",
            "100",
            "--formats",
            "tflite-float32,tflite-int8,onnx-float32,onnx-int8",
        ],
        log,
    )
    split = read_split(run / "split.json")
    export = run / "export"
    row = {"seed": seed, "weights_sha256": json.loads((run / "metrics.json").read_text())["weights_sha256"]}
    for part in PARTS:
        pixels, labels = split_pixels(split, part)
        acc = {
            name: file_accuracy(export / name, pixels, labels)
            for name in ("model_float32.tflite", "model_int8.tflite", "model_float32.onnx", "model_int8.onnx")
        }
        row[part] = {
            "float32_tflite": acc["model_float32.tflite"],
            "tflite_int8_drop_pp": round((acc["model_float32.tflite"] - acc["model_int8.tflite"]) * 100, 2),
            "onnx_int8_drop_pp": round((acc["model_float32.onnx"] - acc["model_int8.onnx"]) * 100, 2),
        }
        if emulate:
            em = emulated_accuracy(export / "model_int8.onnx", run / "split.json", part)
            row[part]["onnx_int8_avx2_drop_pp"] = (
                None if em is None else round((acc["model_float32.onnx"] - em) * 100, 2)
            )
    return row


def format_rows(rows: list, emulate: bool) -> str:
    """The Markdown table, one row per seed."""
    head = ["seed", "float32 val / test", "int8 TFLite drop pp val / test", "int8 ONNX drop pp val / test"]
    if emulate:
        head.append(f"int8 ONNX on emulated {EMULATED_CPU} (AVX2) drop pp val / test")
    lines = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]

    def pair(key):
        vals = [r[p].get(key) for p in PARTS]
        return " / ".join("n/a" if v is None else f"{v:+.2f}" for v in vals)

    for r in rows:
        cells = [
            str(r["seed"]),
            f"{r['val']['float32_tflite']:.4f} / {r['test']['float32_tflite']:.4f}",
            pair("tflite_int8_drop_pp"),
            pair("onnx_int8_drop_pp"),
        ]
        if emulate:
            cells.append(pair("onnx_int8_avx2_drop_pp"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def worst_drop(rows: list) -> float:
    """The largest drop of any int8 file on any split and seed, pp."""
    return max(v for r in rows for p in PARTS for k, v in r[p].items() if k.endswith("drop_pp") and v is not None)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("data", metavar="DATA_DIR", help="photos, one sub-folder per class")
    p.add_argument("--out", default="runs/quant-check", help="where the runs and the table go")
    p.add_argument("--seeds", type=positive_int, default=10, help="how many seeds (0..N-1)")
    p.add_argument("--epochs", type=positive_int, default=8, help="epochs per short run")
    p.add_argument("--max-drop", type=float, default=0.5, metavar="PP", help="largest drop allowed, pp")
    p.add_argument("--no-emulation", action="store_true", help="skip the emulated AVX2 column")
    return p


def _body(argv) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    emulate = not args.no_emulation and shutil.which("qemu-x86_64") is not None
    if not args.no_emulation and not emulate:
        print("note: qemu-x86_64 not found; no emulated AVX2 column (apt-get install qemu-user)", file=sys.stderr)
    rows = []
    for seed in range(args.seeds):
        print(f"seed {seed}: training {args.epochs} epochs, exporting, measuring", file=sys.stderr, flush=True)
        rows.append(check_seed(args.data, out, seed, args.epochs, emulate))
        table = format_rows(rows, emulate)
        write_json(out / "quant_check.json", {"epochs": args.epochs, "rows": rows})
        write_bytes(out / "quant_check.md", (table + "\n").encode())
        print(table.splitlines()[-1], flush=True)
    print(format_rows(rows, emulate))
    worst = worst_drop(rows)
    if worst > args.max_drop:
        print(f"{PROG}: an int8 file lost {worst:.2f} pp, more than --max-drop {args.max_drop:g}", file=sys.stderr)
        return EXIT_GATE
    print(f"every int8 file within {args.max_drop:g} pp of float (worst {worst:+.2f})", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    """Entry point; with ``--eval MODEL SPLIT_JSON PART`` (used under qemu)
    prints one accuracy and exits."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--eval"]:
        model, split_json, part = argv[1:4]
        threshold = Classifier(model).metadata.threshold
        print(onnx_batch_accuracy(Path(model), *split_pixels(read_split(split_json), part), threshold))
        return 0
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
