"""How a model treats faces of classes it does not know (``python -m happysad.benchmarks.neither``).

A happy/sad model shown a neutral, angry, fearful or surprised face still
answers happy or sad. This measures how: for each foreign class, the share
of faces given each label, the share set aside as ``uncertain`` at a
minimum confidence, and a histogram of the confidence. Faces come from a
labelled folder (``--data``) or, for a model trained with ``--aux``, from
the auxiliary classes' test part of its split (``--split``), which the
model never trained on.

    python -m happysad.benchmarks.neither MODEL --split RUN_DIR/split.json [--min-confidence auto]
    python -m happysad.benchmarks.neither MODEL --data ../shared/data/fer2013-other
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from happysad.edge import Classifier, load_image
from happysad.edge.console import ArgumentParser, progress, run_main
from happysad.edge.dataset import labelled_images, split_entries
from happysad.edge.errors import HappysadError
from happysad.edge.fileio import write_json
from happysad.edge.jsonfile import check_fields, read_json
from happysad.edge.runtime.metadata import UNCERTAIN

PROG = "benchmarks.neither"
#: Confidence histogram bin edges: the best class's score, 0..1.
BINS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0001)


def foreign_faces(data: str | None, split: str | None, part: str = "test") -> dict[str, list[Path]]:
    """{class name: image paths} of the faces to measure.

    Raises:
        HappysadError: neither source given, or the split has no auxiliary classes.
    """
    if split:
        s = read_json(split, "split")
        aux = s.get("auxiliary")
        if not isinstance(aux, dict) or not isinstance(aux.get(part), list):
            raise HappysadError(
                f"{split}: no auxiliary classes in this split (train with --aux); use --data DIR instead"
            )
        check_fields(aux, {"data_dir": str, "data_dir_absolute?": str}, f"{split}: split file auxiliary")
        root = Path(split).parent / aux["data_dir"]
        if not root.is_dir() and isinstance(aux.get("data_dir_absolute"), str):
            root = Path(aux["data_dir_absolute"])
        out: dict[str, list[Path]] = {}
        # Each entry checked as the main parts' are: an object, its path inside the folder.
        for path, e in split_entries({**aux, "split_file": split}, part, root, f"auxiliary.{part}"):
            out.setdefault(e["label"], []).append(path)
        return dict(sorted(out.items()))
    if data:
        labels, items = labelled_images(data)
        return {name: [p for p, i in items if i == k] for k, name in enumerate(labels)}
    raise HappysadError("give the faces with --data DIR or --split RUN_DIR/split.json")


def measure(clf: Classifier, faces: dict[str, list[Path]]) -> dict:
    """Per foreign class: n, ``share`` of each label (``uncertain`` included
    when ``clf`` has a minimum confidence), mean confidence and the
    confidence histogram (counts per :data:`BINS` bin); shares 0..1."""
    out = {}
    total = sum(len(v) for v in faces.values())
    bar = progress(total, "classified")
    for name, paths in faces.items():
        labels, conf = [], []
        for path in paths:
            bar.update()
            p = clf.classify_image(load_image(path))
            labels.append(p.label)
            conf.append(p.confidence)
        names = [*clf.labels, *([UNCERTAIN] if clf.min_confidence > 0 else [])]
        hist, _ = np.histogram(conf, bins=BINS)
        out[name] = {
            "n": len(paths),
            "share": {k: labels.count(k) / max(1, len(paths)) for k in names},
            "mean_confidence": float(np.mean(conf)) if conf else None,
            "confidence_histogram": {
                f"{lo:.1f}-{min(hi, 1.0):.1f}": int(c) for lo, hi, c in zip(BINS[:-1], BINS[1:], hist)
            },
        }
    bar.close()
    return out


def format_markdown(result: dict, labels, min_confidence: float) -> str:
    """The table of :func:`measure`'s figures, one row per foreign class."""
    names = [*labels, *([UNCERTAIN] if min_confidence > 0 else [])]
    bins = list(next(iter(result.values()))["confidence_histogram"]) if result else []
    head = ["class", "n", *names, "mean confidence", *(f"conf. {b}" for b in bins)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in result.items():
        hist = r["confidence_histogram"]
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    str(r["n"]),
                    *(f"{r['share'][k]:.1%}" for k in names),
                    f"{r['mean_confidence']:.3f}",
                    *(f"{hist[b] / max(1, r['n']):.0%}" for b in bins),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL", help="a .tflite or .onnx file from happysad-export")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR", help="folder with one sub-folder per foreign class")
    src.add_argument("--split", metavar="SPLIT_JSON", help="a --aux run's split.json: its auxiliary test part")
    p.add_argument(
        "--min-confidence",
        default="auto",
        metavar="P|auto",
        help="also count faces set aside as uncertain under P (auto: the model's suggestion; 0: off)",
    )
    p.add_argument("--json", metavar="FILE", default=None, help="write the figures as JSON")
    return p


def _body(argv) -> int:
    args = build_parser().parse_args(argv)
    mc = args.min_confidence
    try:
        mc = mc if mc == "auto" else float(mc)
        clf = Classifier(args.model, min_confidence=mc)
    except ValueError:
        build_parser().error(f"argument --min-confidence: {args.min_confidence!r} is not 'auto' or 0..1")
    result = measure(clf, foreign_faces(args.data, args.split))
    print(f"{args.model}: labels {', '.join(clf.labels)}; min confidence {clf.min_confidence:.3f}")
    print(format_markdown(result, clf.labels, clf.min_confidence))
    if args.json:
        write_json(
            args.json,
            {
                "model": str(args.model),
                "labels": list(clf.labels),
                "min_confidence": clf.min_confidence,
                "classes": result,
            },
        )
    return 0


def main(argv=None) -> int:
    """Entry point; returns the exit code."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
