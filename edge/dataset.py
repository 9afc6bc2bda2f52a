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
from happysad.edge.images import find_images
from happysad.edge.jsonfile import check_fields, json_type, read_json, type_ok
from happysad.edge.reading import shown

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


#: The top-level fields of a split file read here, and their types.
SPLIT_FIELDS = {
    "labels": list,
    "train": list,
    "val": list,
    "test": list,
    "folder_labels?": list,
    "data_dir?": str,
    "data_dir_absolute?": str,
    "votes?": dict,
    "image?": dict,
}
#: The fields of one entry of a split's part (``sha256``: 64 hex digits, when recorded).
ENTRY_FIELDS = {"path": str, "label": str, "sha256?": str, "votes?": list}


def read_split(path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> dict:
    """Read a split file (through :func:`edge.jsonfile.read_json`: a
    regular file of at most 64 MiB, nested at most 64 deep).

    Args:
        path: ``RUN_DIR/split.json``.
        data_dir: where the images are now, when not where training found them.

    Returns:
        the split dict, with ``data_dir`` set to the folder used and
        ``split_file`` to ``path`` (for messages).

    Raises:
        UsageError: no such split file (exit status 2).
        HappysadError: malformed split file (a field of the wrong type, a
            label that is not a string: one line naming the field), or data
            folder absent.
    """
    split = read_json(path, "split")
    if not all(p in split for p in (*SPLIT_PARTS, "labels")):
        raise HappysadError(f"{path}: not a happysad split file (needs labels, train, val, test)")
    check_fields(split, SPLIT_FIELDS, f"{path}: split file")
    for name in ("labels", "folder_labels"):
        for i, label in enumerate(split.get(name) or []):
            if not isinstance(label, str) or not label:
                raise HappysadError(f"{path}: split file {name}[{i}] is {json_type(label)}, expected a name")
    root = Path(data_dir) if data_dir else Path(split.get("data_dir") or "")
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
    split["split_file"] = shown(path)
    return split


def split_entries(split: dict, part: str, root: str | os.PathLike | None = None, name: str | None = None) -> list:
    """The entries of one part of a split, each checked: an object with a
    ``path`` and a ``label`` (strings) and, where recorded, a ``sha256``
    of 64 hex digits; its path relative and, resolved (symbolic links
    followed), inside the data folder.

    Args:
        root: the data folder (default ``split["data_dir"]``).
        name: where the part is, in messages (default ``part``; ``auxiliary.test``).

    Returns:
        [(absolute path under ``root``, entry dict), ...] in the split's order.

    Raises:
        HappysadError: an entry of another type, a field missing or of the
            wrong type, or a path that leads out of the data folder; one
            line naming the split file and the entry's index.
    """
    root = Path(root if root is not None else split["data_dir"])
    inside = os.path.realpath(root)
    source = split.get("split_file", "split file")
    out = []
    for i, e in enumerate(split[part]):
        where = f"{source}: {name or part}[{i}]"
        if not isinstance(e, dict):
            raise HappysadError(f"{where} is {json_type(e)}, expected an object with a path and a label")
        check_fields(e, ENTRY_FIELDS, where)
        digest = e.get("sha256")
        if digest is not None and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
            raise HappysadError(f"{where} field 'sha256' is not 64 hex digits")
        try:
            real = os.path.realpath(root / e["path"])
        except ValueError:  # a NUL in the name
            real = ""
        if not e["path"] or not real or os.path.commonpath([inside, real]) != inside:
            raise HappysadError(
                f"{where}: path {shown(e['path'])} leads outside the data folder {shown(root)}; "
                "a split names files inside its data folder only"
            )
        out.append((root / e["path"], e))
    return out


def split_items(split: dict, part: str) -> list[tuple[Path, int]]:
    """The (absolute path, class index) pairs of one part of a split, each
    entry checked by :func:`split_entries`.

    A run trained on crowd votes (``happysad-train --votes``) records the
    model's classes as ``labels`` and each file's folder as its ``label``;
    a folder that is none of the model's classes (those are listed in
    ``folder_labels``) gets the index -1.

    Raises:
        HappysadError: a malformed entry (see :func:`split_entries`), or an
            entry's label is neither a class of the model nor a folder of
            the split.
    """
    labels = split["labels"]
    folders = split.get("folder_labels") or []
    out = []
    for i, (path, e) in enumerate(split_entries(split, part)):
        if e["label"] in labels:
            out.append((path, labels.index(e["label"])))
        elif e["label"] in folders:
            out.append((path, -1))
        else:
            raise HappysadError(
                f"{split.get('split_file', 'split file')}: {part}[{i}] ({shown(e['path'])}) has label "
                f"{shown(e['label'])!r}, not one of the model's labels ({', '.join(labels)}) "
                "nor a folder of the split"
            )
    return out


def split_digests(split: dict, part: str) -> list:
    """The sha256 (hex) recorded for each file of one part of a split, in the
    order of :func:`split_items`; None for an entry without one (call
    :func:`split_items` first: it checks the entries)."""
    return [e.get("sha256") if isinstance(e, dict) else None for e in split[part]]


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
        v = e.get("votes") if isinstance(e, dict) else None
        if isinstance(v, list) and len(v) == len(EMOTIONS) and all(type_ok(x, float) for x in v):
            out[i] = v
    return out
