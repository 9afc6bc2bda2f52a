"""Labelled image folders and saved train/validation/test splits.

A labelled folder has one sub-folder per class (``happy/``, ``sad/``, and
any others); the labels are the sub-folder names, sorted, or the ones asked
for in the order asked. A split file
(``RUN_DIR/split.json``, written by happysad-train) lists each part's files
relative to its data folder, with each file's sha256.
"""

from __future__ import annotations

import os
from pathlib import Path

from happysad.edge.errors import HappysadError, UsageError
from happysad.edge.fileio import read_json
from happysad.edge.images import find_images

SPLIT_PARTS = ("train", "val", "test")


def class_folders(data_dir: str | os.PathLike, classes=None, minimum: int = 2, missing_ok: bool = False) -> list[str]:
    """The class names of a labelled folder: its sub-folders, sorted.

    Args:
        classes: keep only these names, in this order (each must be there);
            None keeps every sub-folder.
        minimum: the fewest classes accepted.
        missing_ok: a class of ``classes`` with no folder is left out
            instead of refused (photos of some of a model's classes only).

    Raises:
        HappysadError: the folder is missing, a class asked for is not
            there, or fewer than ``minimum`` classes remain; the message
            says how to lay one out.
    """
    data_dir = Path(data_dir)
    layout = f"lay out photos as {data_dir}/happy/*.jpg and {data_dir}/sad/*.jpg"
    if not data_dir.is_dir():
        raise UsageError(f"{data_dir}: no such data folder; {layout}")
    labels = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is not None:
        missing = [c for c in classes if c not in labels]
        if missing_ok:
            classes, missing = [c for c in classes if c in labels], []
        if missing:
            raise HappysadError(f"{data_dir}: no class folder {', '.join(missing)} (it has {', '.join(labels)})")
        labels = list(classes)
    if len(labels) < minimum:
        raise HappysadError(
            f"{data_dir}: found {len(labels)} class folders {labels}, need at least {minimum}; {layout}"
        )
    return labels


def labelled_images(data_dir: str | os.PathLike, classes=None) -> tuple[list[str], list[tuple[Path, int]]]:
    """All image files of a labelled folder with their class index
    (of the ``classes`` named, in that order, when given).

    With ``classes``, the labels returned are ``classes`` themselves, and a
    class with no sub-folder has no image (a happy/sad/neutral model
    measured on photos of happy and sad people); at least two of them must
    have a folder.

    Returns:
        (labels, [(path, class index), ...]) with paths sorted per class.

    Raises:
        HappysadError: see :func:`class_folders`.
    """
    present = class_folders(data_dir, classes, missing_ok=classes is not None)
    labels = list(classes) if classes is not None else present
    items = [(p, labels.index(name)) for name in present for p in find_images(Path(data_dir) / name)]
    return labels, items


def read_split(path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> dict:
    """Read a split file.

    Args:
        path: ``RUN_DIR/split.json``.
        data_dir: where the images are now, when not where training found them.

    Returns:
        the split dict, with ``data_dir`` set to the folder used.

    Raises:
        HappysadError: missing or malformed split file, or data folder absent.
    """
    split = read_json(path, "split file")
    if not all(isinstance(split.get(p), list) for p in SPLIT_PARTS) or not isinstance(split.get("labels"), list):
        raise HappysadError(f"{path}: not a happysad split file (needs labels, train, val, test)")
    root = Path(data_dir) if data_dir else Path(split.get("data_dir", ""))
    if not root.is_absolute() and not data_dir:
        root = (Path(path).parent / root).resolve()
        # Written relative to the split file, so a project folder moved whole
        # still reads; where only the run folder moved, the absolute path
        # recorded beside it still finds the images.
        absolute = split.get("data_dir_absolute")
        if not root.is_dir() and isinstance(absolute, str) and Path(absolute).is_dir():
            root = Path(absolute)
    if not root.is_dir():
        raise HappysadError(
            f"{root}: the split's data folder is not there; pass the folder that holds the images with --data-root"
        )
    split["data_dir"] = str(root)
    return split


def split_items(split: dict, part: str) -> list[tuple[Path, int]]:
    """The (absolute path, class index) pairs of one part of a split.

    A run trained on crowd votes (``happysad-train --votes``) records the
    model's classes as ``labels`` and each file's folder as its ``label``;
    a folder that is none of the model's classes (those are listed in
    ``folder_labels``) gets the index -1.

    Raises:
        HappysadError: an entry's label is neither a class nor a folder of the split.
    """
    root = Path(split["data_dir"])
    labels = split["labels"]
    folders = split.get("folder_labels") or []
    out = []
    for e in split[part]:
        if e["label"] in labels:
            out.append((root / e["path"], labels.index(e["label"])))
        elif e["label"] in folders:
            out.append((root / e["path"], -1))
        else:
            raise HappysadError(f"split file: {e['path']} has label {e['label']!r}, not one of {labels}")
    return out


def split_votes(split: dict, part: str):
    """The crowd votes recorded for each file of one part of a split.

    Returns:
        float64 (N, 10) FER+ counts in :data:`edge.votes.EMOTIONS` order, in
        the order of :func:`split_items`; NaN rows for files without votes.
        None when the split records no votes at all.
    """
    import numpy as np

    from happysad.edge.votes import EMOTIONS

    if not split.get("votes"):
        return None
    out = np.full((len(split[part]), len(EMOTIONS)), np.nan)
    for i, e in enumerate(split[part]):
        v = e.get("votes")
        if isinstance(v, list) and len(v) == len(EMOTIONS):
            out[i] = v
    return out
