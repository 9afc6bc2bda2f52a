"""``happysad-train``: train the happy/sad classifier on a folder of photos."""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields

from happysad.edge.console import ArgumentParser, float_range, positive_int, require_workstation, run_main

from . import ARCHS, DEFAULT_ARCH, STRATEGIES
from .budget import PRECISIONS
from .split import parse_ratios
from .trainer import TrainOptions

PROG = "happysad-train"
#: Every setting's default, as :class:`train.trainer.TrainOptions` defines it.
DEFAULTS = {f.name: f.default for f in fields(TrainOptions) if f.default is not MISSING}


def _ratios(text: str):
    try:
        return parse_ratios(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_lr = float_range(0.0, 1.0, open_lo=True, open_hi=True)
_unit = float_range(0.0, 1.0)
_minutes = float_range(0.0, None, open_lo=True, unit="minutes", hint="15 for a quarter of an hour")


def _classes(text: str) -> tuple:
    names = tuple(x.strip() for x in text.split(","))
    if len(names) < 2 or not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give two or more distinct class names, comma-separated")
    if "uncertain" in names:
        raise argparse.ArgumentTypeError("'uncertain' is the label of low-confidence predictions; rename that class")
    return names


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description=__doc__,
        epilog="DATA_DIR holds one sub-folder per class, e.g. DATA_DIR/happy/*.jpg "
        "and DATA_DIR/sad/*.jpg; labels are the folder names, sorted.",
    )
    p.add_argument(
        "data_dir",
        metavar="DATA_DIR",
        nargs="+",
        help="folder with one sub-folder of photos per class; with several, a class is its sub-folders in all of them",
    )
    p.add_argument(
        "--classes",
        type=_classes,
        default=None,
        metavar="A,B[,C...]",
        help="train on these classes only, in this output order (with --votes: the model's answers, "
        "each a FER+ expression, default happy,sad,neutral; else default: every class folder, "
        "sorted); e.g. happy,sad,neutral",
    )
    p.add_argument(
        "--aux",
        metavar="AUX_DIR",
        action="append",
        default=[],
        help="folder of auxiliary classes, trained on beside DATA_DIR's (one softmax over all) and "
        "left out of the shipped model; split like DATA_DIR, its train part trained on, copies of "
        "DATA_DIR images left out (repeatable)",
    )
    p.add_argument(
        "--votes",
        metavar="VOTES_TSV",
        default=None,
        help="train on crowd votes (e.g. ../shared/data/ferplus/votes.tsv): each face's share of ten votes "
        "over --classes (default happy,sad,neutral), whatever folder it sits in; the split stays DATA_DIR's",
    )
    p.add_argument(
        "--votes-root",
        metavar="DIR",
        default=None,
        help="the folder the votes table's paths are relative to (default: the folder above the table's)",
    )
    _run_args(p)
    _model_args(p)
    _training_args(p)
    _budget_args(p)
    return p


def _run_args(p) -> None:
    p.add_argument("-o", "--out", metavar="RUN_DIR", default=None, help="run folder to write (required unless --check)")
    p.add_argument(
        "--check",
        action="store_true",
        help="only scan DATA_DIR and write its data report (RUN_DIR/data_report.json, "
        "or ./data_report.json without --out); no training",
    )


def _model_args(p) -> None:
    p.add_argument("-a", "--arch", choices=ARCHS, default=DEFAULT_ARCH, help="model architecture")
    p.add_argument(
        "-e",
        "--epochs",
        type=positive_int,
        default=DEFAULTS["epochs"],
        help="most epochs (early stopping may end sooner)",
    )
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of the split, weights and augmentation")
    p.add_argument("--img-size", type=positive_int, default=DEFAULTS["img_size"], help="input height and width, pixels")
    p.add_argument("--color", choices=("gray", "rgb"), default=DEFAULTS["color"], help="input color mode")
    p.add_argument(
        "--split-ratios",
        type=_ratios,
        default=DEFAULTS["ratios"],
        metavar="TRAIN,VAL,TEST",
        help="fractions of the stratified split",
    )
    p.add_argument("--batch-size", type=positive_int, default=DEFAULTS["batch_size"], help="images per training step")
    p.add_argument("--lr", type=_lr, default=DEFAULTS["lr"], help="peak learning rate (warm-up, then cosine decay)")
    p.add_argument(
        "--patience",
        type=positive_int,
        default=DEFAULTS["patience"],
        help="epochs without a better validation loss before early stopping",
    )


def _budget_args(p) -> None:
    """How long, in what arithmetic, and what the shipped model averages."""
    p.add_argument(
        "--time-budget",
        type=_minutes,
        default=None,
        metavar="MIN",
        help="train as many epochs as fit MIN minutes (at most --epochs), the learning rate "
        "annealed over them; the count then depends on the machine's speed",
    )
    p.add_argument(
        "--flip-average",
        action="store_true",
        help="ship the model averaged with its mirror image, inside the graph: every runtime gets the "
        "flip's gain from the file itself, for twice the multiply-accumulates",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULTS["precision"],
        help="arithmetic of training: bfloat16 mixed precision is faster where the "
        "processor has it natively (auto: there, on one device, without teachers, from 5,000 training images); "
        "files are float32 either way",
    )


def _training_args(p) -> None:
    p.add_argument(
        "--tune-threshold",
        action="store_true",
        help="choose the decision threshold on the validation split (best balanced accuracy)",
    )
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=DEFAULTS["strategy"],
        help="mirrored: tf.distribute.MirroredStrategy over this machine's GPUs; multi-worker: "
        "MultiWorkerMirroredStrategy across the processes TF_CONFIG lists, one per machine, each given "
        "the same command (only the chief, worker 0, writes RUN_DIR; a lost worker's run resumes from "
        "RUN_DIR/checkpoint; docs/tools.md)",
    )
    p.add_argument(
        "--cache",
        choices=("disk", "memory"),
        default=DEFAULTS["cache"],
        help="where decoded images are cached between epochs",
    )
    p.add_argument(
        "--augment",
        choices=("basic", "camera"),
        default=DEFAULTS["augment"],
        help="training augmentation: basic (flip, rotation, shift, zoom, brightness, contrast) or "
        "camera (basic with more crop jitter, plus low resolution, blur, noise, gamma, JPEG)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a trained run already in RUN_DIR")
    p.add_argument(
        "--teacher",
        metavar="MODEL.keras",
        action="append",
        default=[],
        help="distil from this trained model: the targets mix the true labels with its outputs; "
        "repeat for an ensemble (outputs averaged); with --aux, a --aux run's model_full.keras "
        "or a two-class model.keras",
    )
    p.add_argument(
        "--teacher-tta",
        choices=("none", "flip"),
        default="none",
        help="flip: each teacher's output is the mean over the image and its mirror",
    )
    p.add_argument(
        "--distill-alpha",
        type=_unit,
        default=DEFAULTS["distill_alpha"],
        metavar="A",
        help="weight of the true labels in the distillation targets, 0..1 (the teachers': 1 - A)",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="bit-identical weights from two runs with the same seed on the same machine "
        "(TensorFlow's op determinism; training may run slower)",
    )


def _dirs(dirs: list):
    """One folder as itself (its split records paths as before), several as a list."""
    return dirs[0] if len(dirs) == 1 else list(dirs)


def _check_combinations(parser, args) -> None:
    """Flags that do not go together: a usage error (one line, exit 2)."""
    if args.strategy == "multi-worker" and (args.time_budget or args.precision == "bfloat16"):
        parser.error(
            "--time-budget and --precision bfloat16 train on one machine: leave them out with --strategy multi-worker"
        )
    if args.teacher and args.precision == "bfloat16":
        parser.error("--precision bfloat16 does not go with --teacher: teachers answer in float32")
    if args.votes and args.teacher:
        parser.error("--votes and --teacher do not go together: distillation mixes folder labels with the teacher's")


def _body(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.check:
        from pathlib import Path

        from .report import check_data

        report = Path(args.out or ".") / "data_report.json"
        check_data(_dirs(args.data_dir), report, (args.img_size, args.img_size), args.color, args.classes)
        return 0
    if not args.out:
        parser.error("the following arguments are required: -o/--out")
    _check_combinations(parser, args)
    if args.votes and args.classes:
        from happysad.edge.votes import emotion_of

        for name in args.classes:
            emotion_of(name)  # a class with no vote column: one line, before anything is read
    require_workstation()
    from .trainer import TrainOptions, train

    train(
        TrainOptions(
            data_dir=_dirs(args.data_dir),
            out=args.out,
            arch=args.arch,
            epochs=args.epochs,
            seed=args.seed,
            img_size=args.img_size,
            color=args.color,
            ratios=args.split_ratios,
            batch_size=args.batch_size,
            lr=args.lr,
            patience=args.patience,
            tune_threshold=args.tune_threshold,
            strategy=args.strategy,
            cache=args.cache,
            deterministic=args.deterministic,
            augment=args.augment,
            overwrite=args.overwrite,
            classes=args.classes,
            aux_dirs=tuple(args.aux),
            teachers=tuple(args.teacher),
            distill_alpha=args.distill_alpha,
            teacher_flip=args.teacher_tta == "flip",
            votes=args.votes,
            votes_root=args.votes_root,
            time_budget=args.time_budget,
            flip_average=args.flip_average,
            precision=args.precision,
            verbose=1 if sys.stdout.isatty() else 2,
        )
    )
    return 0


def main(argv=None) -> int:
    """Entry point of ``happysad-train``; returns the exit code."""
    return run_main(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
