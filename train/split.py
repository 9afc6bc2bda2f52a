"""The leak-free, stratified, grouped split of a run's images, the auxiliary
classes' images beside it, and the record of both in ``split.json``."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from happysad.edge.console import log as _log
from happysad.edge.errors import HappysadError
from happysad.edge.fileio import write_json
from happysad.edge.votes import OTHER, read_votes, shares, votes_for

from .auxiliary import auxiliary as auxiliary
from .data import Scan
from .report import check_data

#: The classes a run on votes answers unless ``--classes`` says otherwise.
DEFAULT_VOTE_CLASSES = ("happy", "sad", "neutral")


def make_split(y: np.ndarray, groups: list, ratios=(0.7, 0.2, 0.1), seed: int = 0) -> np.ndarray:
    """Assign each image to train (0), validation (1) or test (2).

    Stratified: each class is divided in the given ratios on its own. Grouped:
    images with the same group key (exact or near duplicates) always land in
    the same part, so no test image has a copy in training. Seeded: the same
    inputs and seed give the same assignment.

    Args:
        y: int (N,) class index per image.
        groups: group key per image.
        ratios: train, validation, test fractions, summing to 1.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        int8 (N,) part index per image.
    """
    rng = np.random.default_rng(seed)
    part = np.zeros(len(y), dtype=np.int8)
    members = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    bounds = np.cumsum(ratios)[:2]
    for cls in np.unique(y):
        keys = sorted({groups[i] for i in np.flatnonzero(y == cls)})
        keys = [keys[i] for i in rng.permutation(len(keys))]
        total = sum(len(members[k]) for k in keys)
        done = 0
        for k in keys:
            # A group goes to the part in which its first image would fall.
            p = int(np.searchsorted(bounds, done / total, side="right"))
            part[members[k]] = p
            done += len(members[k])
    return part


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse "0.7,0.2,0.1" into three fractions that sum to 1.

    Raises:
        ValueError: not three non-negative numbers summing to 1 with train
            and test above zero.
    """
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6 or parts[0] <= 0 or parts[2] <= 0:
        raise ValueError("give three fractions train,val,test summing to 1, e.g. 0.7,0.2,0.1")
    return tuple(parts)


def _entry(s: Scan, i: int, votes) -> dict:
    """One file's record in ``split.json``: path, folder label, sha256, and
    its ten crowd votes where known."""
    e = {"path": s.paths[i], "label": s.labels[s.y[i]], "sha256": s.sha256[i]}
    if votes is not None and np.all(np.isfinite(votes[i])):
        e["votes"] = [int(v) for v in votes[i]]
    return e


def split_record(s: Scan, part: np.ndarray, opts, votes=None) -> dict:
    """The contents of ``split.json``: every kept file's part, label and
    sha256 (and votes, float (N, 10) or None)."""
    entries = {name: [] for name in ("train", "val", "test")}
    for i, p in enumerate(part):
        entries[("train", "val", "test")[p]].append(_entry(s, i, votes))
    data_dir = Path(s.data_dir).resolve()
    return {
        "data_dir": os.path.relpath(data_dir, Path(opts.out).resolve()),
        "data_dir_absolute": str(data_dir),
        "labels": s.labels,
        "seed": opts.seed,
        "ratios": list(opts.ratios),
        "image": {"size": [opts.img_size, opts.img_size], "color": opts.color},
        "grouped_by": "exact (sha256) and near (pHash) duplicates",
        **entries,
        "skipped": s.skipped,
        "excluded": s.conflicts,
    }


def auxiliary_part(s: Scan, opts, size, split: dict, table=None) -> tuple[Scan, np.ndarray]:
    """Scan and split the auxiliary folders; record them in ``split``.

    Split like the model's own classes: only the train part is trained on;
    the test part measures, unseen, how the shipped model treats faces of
    the auxiliary classes (benchmarks/neither.py).
    """
    aux, dropped = auxiliary(s, opts.aux_dirs, size, opts.color, progress=True)
    aux_part = make_split(aux.y, aux.groups, opts.ratios, opts.seed)
    votes = None if table is None else votes_for(table, [Path(aux.data_dir) / p for p in aux.paths])
    parts = {
        name: [_entry(aux, i, votes) for i in np.flatnonzero(aux_part == k)]
        for k, name in enumerate(("train", "val", "test"))
    }
    root = Path(aux.data_dir).resolve()
    split["auxiliary"] = {
        "data_dir": os.path.relpath(root, Path(opts.out).resolve()),
        "data_dir_absolute": str(root),
        "labels": aux.labels,
        **parts,
        "left_out_as_copies": dropped,
    }
    _log(
        f"auxiliary classes {', '.join(aux.labels)}: {len(aux.paths)} images, "
        f"{int(np.sum(aux_part == 0))} in the train part (trained on); {len(dropped)} left out as copies "
        f"or near-copies of {', '.join(s.labels)} images"
    )
    return aux, aux_part


@dataclass
class RunData:
    """A run's images: the model's own classes split, and what it trains on.

    Attributes:
        scan: the model's own classes. part: int8 (N,) part per image (0
        train, 1 val, 2 test). paths: absolute path per image. labels:
        every class trained on (own first, then auxiliary). train_paths,
        train_y: the training images (own train part, then the auxiliary
        train part) and their class indices into ``labels``, or with votes
        float32 (N, len(labels)) vote shares. shipped: the classes the
        saved model answers (the first ones of ``labels``). val_paths,
        val_y: the validation images and targets, as for training. votes:
        float64 (N, 10) FER+ counts per image of ``scan`` (NaN: none), or
        None for a run on folder labels. aux_test_paths, aux_test_votes: the
        auxiliary folders' test part with its votes (votes runs only).
    """

    scan: Scan
    part: np.ndarray
    paths: np.ndarray
    labels: list
    train_paths: np.ndarray
    train_y: np.ndarray
    shipped: list = None
    val_paths: np.ndarray = None
    val_y: np.ndarray = None
    votes: np.ndarray = None
    aux_test_paths: np.ndarray = None
    aux_test_votes: np.ndarray = None

    def __post_init__(self):
        if self.shipped is None:
            self.shipped = list(self.scan.labels)
        if self.val_paths is None:
            va = self.indices(1)
            self.val_paths, self.val_y = self.paths[va], self.scan.y[va]

    @property
    def soft(self) -> bool:
        """Whether the targets are vote shares (float (N, C)) rather than class indices."""
        return self.votes is not None

    def indices(self, p: int) -> np.ndarray:
        """Image indices of part ``p`` (0 train, 1 validation, 2 test)."""
        return np.flatnonzero(self.part == p)


def prepare_data(opts, out: Path, size) -> RunData:
    """Scan, report and split the data (and the auxiliary folders); write ``split.json``."""
    if getattr(opts, "votes", None):
        return prepare_vote_data(opts, out, size)
    s, _ = check_data(opts.data_dir, out / "data_report.json", size, opts.color, opts.classes)
    part = make_split(s.y, s.groups, opts.ratios, opts.seed)
    split = split_record(s, part, opts)
    aux = aux_part = None
    if opts.aux_dirs:
        aux, aux_part = auxiliary_part(s, opts, size, split)
    write_json(out / "split.json", split)
    _log(
        "split: "
        + ", ".join(f"{name} {len(split[name])}" for name in ("train", "val", "test"))
        + f" (seed {opts.seed}) -> {out / 'split.json'}"
    )
    paths = np.array([Path(s.data_dir) / p for p in s.paths])
    tr = np.flatnonzero(part == 0)
    labels = list(s.labels) + ([c for c in aux.labels if c not in s.labels] if aux else [])
    train_paths, train_y = paths[tr], s.y[tr]
    if aux is not None and np.any(aux_part == 0):
        aux_tr = np.flatnonzero(aux_part == 0)
        aux_y = np.array([labels.index(aux.labels[c]) for c in aux.y[aux_tr]], np.int64)
        train_paths = np.concatenate([train_paths, [Path(aux.data_dir) / aux.paths[i] for i in aux_tr]])
        train_y = np.concatenate([train_y, aux_y])
    return RunData(s, part, paths, labels, train_paths, train_y)


def _soft_targets(paths, votes, shipped: list) -> tuple[np.ndarray, np.ndarray]:
    """(paths, float32 (N, len(shipped) + 1) vote shares) of the images that
    have at least one vote for an expression ("unknown" and "NF" votes left
    out; the last column gathers every expression the model does not answer)."""
    t = shares(votes, shipped, other=True)
    keep = np.all(np.isfinite(t), axis=1)
    return np.asarray(paths)[keep], t[keep]


def prepare_vote_data(opts, out: Path, size) -> RunData:
    """:func:`prepare_data` for a run on crowd votes (``--votes``).

    The split is made on the folder labels exactly as without votes (the
    same test faces); every file of ``data_dir`` and the ``--aux`` folders
    that has votes is trained on (train parts) or validated on (validation
    parts) with the vote shares as its target, whatever folder it sits in.
    Files without votes (or only "unknown"/"NF" votes) are left out of
    training and validation, and logged. Faces whose votes go mostly to
    expressions the model does not answer are kept: leaving out those with
    over 70% there (a fifth of the training faces) scored lower on every
    figure (docs/accuracy.md).

    Raises:
        HappysadError: the votes table is bad (:func:`edge.votes.read_votes`),
            or no training image of ``data_dir`` has votes.
    """
    table = read_votes(opts.votes, opts.votes_root)
    shipped = list(opts.classes or DEFAULT_VOTE_CLASSES)
    s, _ = check_data(opts.data_dir, out / "data_report.json", size, opts.color, None)
    part = make_split(s.y, s.groups, opts.ratios, opts.seed)
    paths = np.array([Path(s.data_dir) / p for p in s.paths])
    votes = votes_for(table, paths)
    split = _vote_split_record(s, part, opts, votes, shipped)
    aux_paths, aux_votes, aux_part = _auxiliary_votes(s, opts, size, split, table)
    write_json(out / "split.json", split)

    def gather(k):
        both_paths = np.concatenate([paths[part == k], aux_paths[aux_part == k]])
        both_votes = np.concatenate([votes[part == k], aux_votes[aux_part == k]])
        return _soft_targets(both_paths, both_votes, shipped)

    train_paths, train_y = gather(0)
    val_paths, val_y = gather(1)
    if not len(train_paths):
        raise HappysadError(
            f"--votes {opts.votes}: no training image has votes; pass --votes-root, the folder its paths start from"
        )
    n_train = int(np.sum(part == 0) + np.sum(aux_part == 0))
    _log_vote_split(opts, out, split, shipped, n_train, len(train_paths), len(val_paths))
    te = aux_part == 2
    return RunData(
        s,
        part,
        paths,
        shipped + [OTHER],
        train_paths,
        train_y,
        shipped=shipped,
        val_paths=val_paths,
        val_y=val_y,
        votes=votes,
        aux_test_paths=aux_paths[te],
        aux_test_votes=aux_votes[te],
    )


def _vote_split_record(s: Scan, part: np.ndarray, opts, votes, shipped: list) -> dict:
    """:func:`split_record` for a run on votes: ``labels`` the classes it
    ships, ``folder_labels`` the folders', and the votes table it read."""
    split = split_record(s, part, opts, votes)
    split["labels"] = shipped
    split["folder_labels"] = list(s.labels)
    split["votes"] = {
        "file": str(Path(opts.votes).resolve()),
        "trained_as": shipped + [OTHER],
        "left_out": "unknown and NF votes; files without votes",
    }
    return split


def _auxiliary_votes(s: Scan, opts, size, split: dict, table: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``--aux`` folders of a run on votes, split and recorded in
    ``split`` (:func:`auxiliary_part`): (image paths, float64 (N, 10)
    FER+ counts (NaN: none), int8 (N,) parts); empty without ``--aux``."""
    if not opts.aux_dirs:
        return np.zeros(0, object), np.zeros((0, 10)), np.zeros(0, np.int8)
    aux, aux_part = auxiliary_part(s, opts, size, split, table)
    aux_paths = np.array([Path(aux.data_dir) / p for p in aux.paths])
    return aux_paths, votes_for(table, aux_paths), aux_part


def _log_vote_split(opts, out: Path, split: dict, shipped: list, n_train: int, n_trained: int, n_val: int) -> None:
    """Say how a run on votes was split, and how many images it trains and validates on."""
    _log(
        f"split: train {len(split['train'])}, val {len(split['val'])}, test {len(split['test'])} "
        f"(seed {opts.seed}) -> {out / 'split.json'}; on votes: {n_trained} of {n_train} train-part images "
        f"trained on (those with expression votes), {n_val} validation images; classes {', '.join(shipped)} "
        f"(+ {OTHER}, trained, not shipped)"
    )
