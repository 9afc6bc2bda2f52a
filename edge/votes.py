"""Crowd votes as labels: the FER+ table of ten votes per face.

FER+ (Barsoum, Zhang, Canton Ferrer and Zhang, "Training Deep Networks for
Facial Expression Recognition with Crowd-Sourced Label Distribution", ACM
ICMI 2016) asked ten people to label each FER2013 face as one of
:data:`EMOTIONS`. The table read here is tab-separated with a header: a
``path`` column (the image, relative to a data root) and one integer column
per emotion; a row whose counts are all empty has no votes (an unmatched
file). Other columns are ignored.

Numpy only: the device, the trainer and the benchmark share it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path, PurePosixPath

import numpy as np

from happysad.edge.errors import HappysadError
from happysad.edge.reading import read_regular

#: The ten vote columns of FER+, in its order.
EMOTIONS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
#: Votes that name no expression: "unknown" (the person could not tell) and
#: "NF" (not a face). They are left out of every target and share.
NOT_AN_EXPRESSION = ("unknown", "NF")
#: Votes per face in FER+.
VOTES_PER_FACE = 10
#: Class (folder) names as this project spells them -> FER+ emotion.
CLASS_TO_EMOTION = {
    "happy": "happiness",
    "sad": "sadness",
    "neutral": "neutral",
    "angry": "anger",
    "surprise": "surprise",
    "disgust": "disgust",
    "fear": "fear",
    "contempt": "contempt",
}
#: The name of the trained-but-never-shipped output that collects the votes
#: for every expression the model does not answer.
OTHER = "other"


def emotion_of(label: str) -> str:
    """The FER+ emotion a class name stands for ("happy" -> "happiness");
    an emotion's own name is accepted too.

    Raises:
        HappysadError: the name is neither.
    """
    if label in CLASS_TO_EMOTION:
        return CLASS_TO_EMOTION[label]
    if label in EMOTIONS and label not in NOT_AN_EXPRESSION:
        return label
    known = ", ".join(sorted(CLASS_TO_EMOTION))
    raise HappysadError(f"class {label!r} has no FER+ vote column; votes can label {known}")


def majority(counts) -> str | None:
    """FER+'s majority rule for one face: drop emotions with a single vote,
    then the top emotion if it holds more than half of the votes left.

    Args:
        counts: the ten vote counts, in :data:`EMOTIONS` order (NaN: no votes).

    Returns:
        the emotion (possibly "unknown" or "NF"), "unknown" when none
        holds a majority, or None for a face without votes.
    """
    c = np.asarray(counts, dtype=np.float64)
    if not np.all(np.isfinite(c)):
        return None
    c = np.where(c > 1, c, 0.0)
    total = c.sum()
    if total <= 0:
        return "unknown"
    top = int(np.argmax(c))
    if c[top] * 2 <= total:
        return "unknown"
    return EMOTIONS[top]


def majorities(votes: np.ndarray) -> list:
    """:func:`majority` of each row of a (N, 10) vote array."""
    return [majority(row) for row in np.asarray(votes, dtype=np.float64).reshape(-1, len(EMOTIONS))]


def shares(votes: np.ndarray, labels, other: bool = False) -> np.ndarray:
    """Each face's share of the expression votes that go to each class.

    Votes for "unknown" and "NF" are left out. Without ``other``, votes for
    expressions not among ``labels`` are left out too, so a row is the
    vote distribution over the model's own classes; with it, they are
    gathered in one last column.

    Args:
        votes: float (N, 10) counts in :data:`EMOTIONS` order, NaN rows for
            faces without votes.
        labels: class names (:func:`emotion_of` each).
        other: add the column of every other expression.

    Returns:
        float32 (N, len(labels) [+1]): rows summing to 1, or NaN rows where
        no vote fell on any column (or the face has no votes).
    """
    v = np.asarray(votes, dtype=np.float64).reshape(-1, len(EMOTIONS))
    cols = [EMOTIONS.index(emotion_of(lab)) for lab in labels]
    out = v[:, cols]
    if other:
        rest = [i for i, e in enumerate(EMOTIONS) if i not in cols and e not in NOT_AN_EXPRESSION]
        out = np.concatenate([out, v[:, rest].sum(axis=1, keepdims=True)], axis=1)
    total = out.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(total > 0, out / np.where(total > 0, total, 1.0), np.nan)
    return s.astype(np.float32)


def read_votes(path: str | os.PathLike, root: str | os.PathLike | None = None) -> dict:
    """Read a votes table.

    Args:
        path: the TSV file (see the module's docstring).
        root: the folder the ``path`` column is relative to; default: the
            folder above the one holding the table (``data/ferplus/votes.tsv``
            describes ``data/...``).

    Returns:
        {absolute resolved image path (str): float64 (10,) counts, NaN for
        an unmatched row}.

    Raises:
        HappysadError: the file is missing or unreadable, has no ``path`` or
            no vote column, or a row is bad: the wrong number of columns,
            a count that is not a non-negative integer, counts summing to 0
            or to more than 10 (a face with fewer than ten votes is kept),
            a path that is absolute or climbs out of the root, a path
            listed twice, or a path with no file under the root. The
            message names the file, the line and what to fix.
    """
    path = Path(path)
    root = Path(root) if root is not None else path.resolve().parent.parent
    if not os.path.lexists(path):
        raise HappysadError(f"--votes {path}: no such file; give a votes table such as ferplus/votes.tsv")
    try:  # through the regular-file gate: a FIFO, device or folder is refused, never waited on
        text = read_regular(path, "votes").decode("utf-8")
    except HappysadError as exc:
        raise HappysadError(f"--votes {exc}") from None
    except UnicodeDecodeError as exc:
        raise HappysadError(f"--votes {path}: cannot be read as UTF-8 text ({exc})") from None
    rows = list(csv.reader(text.splitlines(), delimiter="\t"))
    if not rows:
        raise HappysadError(f"--votes {path}: empty; the first line must name the columns (path, neutral, ...)")
    header = rows[0]
    missing = [c for c in ("path", *EMOTIONS) if c not in header]
    if missing:
        raise HappysadError(
            f"--votes {path}: line 1 lacks the column(s) {', '.join(missing)}; "
            f"a votes table has path and the ten FER+ vote counts ({', '.join(EMOTIONS)})"
        )
    at = header.index("path")
    cols = [header.index(e) for e in EMOTIONS]
    root_abs = root.resolve()
    out: dict = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or row == [""]:
            continue
        where = f"--votes {path}, line {line}"
        if len(row) != len(header):
            raise HappysadError(f"{where}: {len(row)} columns, the header has {len(header)}; fix or remove that row")
        out[_row_path(row[at], root, root_abs, where, out)] = _row_counts([row[c] for c in cols], where)
    return out


def _row_path(rel: str, root: Path, root_abs: Path, where: str, seen: dict) -> str:
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts:
        raise HappysadError(f"{where}: path {rel!r} must be relative to {root} and stay inside it")
    full = (root_abs / p).resolve()
    if not full.is_file():
        raise HappysadError(f"{where}: {rel!r} is not a file under {root}; pass the folder it is relative to")
    key = str(full)
    if key in seen:
        raise HappysadError(f"{where}: {rel!r} is listed twice; keep one row per image")
    return key


def _row_counts(cells: list, where: str) -> np.ndarray:
    if all(c.strip() == "" for c in cells):
        return np.full(len(EMOTIONS), np.nan)
    try:
        counts = [int(c) for c in cells]
    except ValueError:
        bad = next(c for c in cells if not c.strip().lstrip("-").isdigit())
        raise HappysadError(f"{where}: vote count {bad!r} is not an integer; counts are whole numbers 0..10") from None
    # FER+ asked ten people per face; a few faces got fewer votes (one row
    # of the shipped table sums to 9), never more.
    if min(counts) < 0 or not 0 < sum(counts) <= VOTES_PER_FACE:
        raise HappysadError(
            f"{where}: vote counts {counts} must be non-negative and sum to 1..{VOTES_PER_FACE} "
            "(leave all ten empty for a face without votes)"
        )
    return np.array(counts, dtype=np.float64)


def votes_for(table: dict, paths) -> np.ndarray:
    """The votes of each image path (NaN rows for images not in the table).

    Args:
        table: from :func:`read_votes`. paths: image paths (any form;
            resolved before the look-up).

    Returns:
        float64 (N, 10).
    """
    out = np.full((len(paths), len(EMOTIONS)), np.nan)
    for i, p in enumerate(paths):
        row = table.get(str(Path(p).resolve()))
        if row is not None:
            out[i] = row
    return out
