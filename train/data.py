"""Scanning a labelled photo folder and making a leak-free, stratified split.

Every image goes through :func:`edge.preprocess`, the function the device
runs, so training sees exactly what the device will see.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge import HappysadError, load_image, preprocess
from edge.dataset import class_folders
from edge.images import is_image_path


@dataclass
class Scan:
    """Result of :func:`scan`.

    Attributes:
        data_dir: the folder scanned.
        labels: class names (sorted sub-folder names).
        paths: kept files, relative to data_dir (posix style).
        y: int64 (N,) class index per kept file.
        sha256: hex digest per kept file.
        pixels: uint8 (N, H, W, C), the preprocessed images.
        skipped: [{"path", "reason"}] files that were not used.
        conflicts: [{"sha256", "paths"}] identical files found under both
            labels; all of them are left out.
    """

    data_dir: Path
    labels: list[str]
    paths: list[str] = field(default_factory=list)
    y: np.ndarray = None
    sha256: list[str] = field(default_factory=list)
    pixels: np.ndarray = None
    skipped: list[dict] = field(default_factory=list)
    conflicts: list[dict] = field(default_factory=list)

    def duplicate_groups(self) -> int:
        """Number of groups of byte-identical kept files (size >= 2)."""
        return sum(1 for c in Counter(self.sha256).values() if c > 1)


def scan(data_dir: str | os.PathLike, size=(48, 48), color="gray", progress=None) -> Scan:
    """Read every image of a labelled folder through the edge preprocessing.

    Files without an image suffix, and files that do not decode, are skipped
    with a reason. Byte-identical files filed under both labels are left out
    (listed in ``conflicts``), since either label would be wrong for one of them.

    Args:
        data_dir: folder with one sub-folder per class.
        size: (height, width) of the model input.
        color: "gray" or "rgb".
        progress: optional callable(done, total).

    Raises:
        HappysadError: no such folder, not two class folders, or a class
            with no usable image.
    """
    data_dir = Path(data_dir)
    labels = class_folders(data_dir)
    candidates = []
    skipped = []
    for idx, name in enumerate(labels):
        for root, dirs, files in os.walk(data_dir / name):
            dirs.sort()
            for fname in sorted(files):
                path = Path(root) / fname
                rel = path.relative_to(data_dir).as_posix()
                if is_image_path(path):
                    candidates.append((path, rel, idx))
                else:
                    skipped.append({"path": rel, "reason": "not an image file "
                                    "(.jpeg, .jpg, .png or .bmp)"})
    for entry in data_dir.iterdir():
        if entry.is_file():
            skipped.append({"path": entry.name, "reason": "not inside a class folder"})
    kept, digests, ys, arrays = [], [], [], []
    for n, (path, rel, idx) in enumerate(candidates):
        try:
            raw = path.read_bytes()
        except OSError as exc:
            skipped.append({"path": rel, "reason": f"cannot read ({exc.strerror or exc})"})
            continue
        try:
            image = load_image(path)
        except HappysadError as exc:
            skipped.append({"path": rel, "reason": str(exc).split(": ", 1)[-1]})
            continue
        kept.append(rel)
        digests.append(hashlib.sha256(raw).hexdigest())
        ys.append(idx)
        arrays.append(preprocess(image, size, color))
        if progress:
            progress(n + 1, len(candidates))
    # Identical bytes under both labels: leave every copy out.
    by_hash = defaultdict(set)
    for d, yy in zip(digests, ys):
        by_hash[d].add(yy)
    bad = {d for d, s in by_hash.items() if len(s) > 1}
    conflicts = [{"sha256": d, "paths": [p for p, dd in zip(kept, digests) if dd == d]} for d in sorted(bad)]
    keep = [i for i, d in enumerate(digests) if d not in bad]
    result = Scan(data_dir, labels, [kept[i] for i in keep], np.array([ys[i] for i in keep], dtype=np.int64),
                  [digests[i] for i in keep],
                  np.stack([arrays[i] for i in keep]) if keep else np.zeros((0, *size, 1), np.uint8),
                  skipped, conflicts)
    counts = np.bincount(result.y, minlength=len(labels))
    for name, count in zip(labels, counts):
        if count == 0:
            raise HappysadError(f"{data_dir / name}: no usable images; add .jpg/.png photos of {name!r} faces")
    return result


def make_split(y: np.ndarray, groups: list[str], ratios=(0.7, 0.2, 0.1), seed: int = 0) -> np.ndarray:
    """Assign each image to train (0), validation (1) or test (2).

    Stratified: each class is divided in the given ratios on its own. Grouped:
    images with the same group key (their sha256, so byte-identical copies)
    always land in the same part, so no test image has a copy in training.
    Seeded: the same inputs and seed give the same assignment.

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
            fraction = done / total
            p = int(np.searchsorted(bounds, fraction, side="right"))
            part[members[k]] = p
            done += len(members[k])
    return part


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse "0.7,0.2,0.1" into three fractions that sum to 1.

    Raises:
        ValueError: not three non-negative numbers summing to 1 with train
            and test above zero.
    """
    parts = [float(x) for x in text.split(",")]
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6 \
            or parts[0] <= 0 or parts[2] <= 0:
        raise ValueError("give three fractions train,val,test summing to 1, e.g. 0.7,0.2,0.1")
    return tuple(parts)
