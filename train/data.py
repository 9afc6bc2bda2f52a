"""Scanning a labelled photo folder, reporting what is wrong with it, and
making a leak-free, stratified split.

Every image goes through :func:`edge.runtime.preprocess`, the function the device
runs, so the checks (and training) see exactly what the device will see.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from happysad.edge import HappysadError, preprocess
from happysad.edge.dataset import class_folders
from happysad.edge.images import IMAGE_SUFFIXES, decode_image, is_image_path, read_image_bytes

#: Hamming distance at or below which two 64-bit pHashes mark a
#: near-duplicate. Chosen by looking at random FER2013 pairs: at distance 2
#: and 4 every sampled pair was the same photo (re-cropped, re-encoded or
#: retouched); at 6 about half were different people, at 8 most were.
NEAR_DUPLICATE_DISTANCE = 4
#: Standard deviation of the gray pixels (0..255) below which an image is
#: reported as near-blank: a flat field with no face to learn from.
NEAR_BLANK_STD = 8.0


@dataclass
class Scan:
    """Result of :func:`scan`: one entry per kept file, in the same order.

    Attributes:
        data_dir: the folder scanned.
        labels: class names (sorted sub-folder names).
        paths: kept files, relative to data_dir (posix style).
        y: int64 (N,) class index per kept file.
        sha256: hex digest of each kept file's bytes.
        phash: uint64 (N,) perceptual hash of each kept image.
        sizes: (height, width) of each kept image as stored.
        colors: "gray" or "color" per kept image (gray: all channels equal).
        skipped: [{"path", "reason"}] files that were not used.
        conflicts: [{"paths", "labels"}] byte-identical files filed under
            more than one label; all of them are left out of ``paths``.
        near_conflicts: [(path, path)] near-duplicate pairs under different
            labels: kept, and reported for a person to check.
        groups: group id per kept file: files that are exact or near
            duplicates of each other share one, and the split keeps a group
            within one part.
        exact_groups, near_groups: path lists of byte-identical files, and of
            near-duplicate groups that are not all byte-identical, among all
            decoded files (conflicts included).
        near_blank: [{"path", "std"}] decoded images whose gray pixels have a
            standard deviation below :data:`NEAR_BLANK_STD`.
    """

    data_dir: Path
    labels: list[str]
    paths: list[str] = field(default_factory=list)
    y: np.ndarray = None
    sha256: list[str] = field(default_factory=list)
    phash: np.ndarray = None
    sizes: list[tuple[int, int]] = field(default_factory=list)
    colors: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    conflicts: list[dict] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    exact_groups: list[list[str]] = field(default_factory=list)
    near_groups: list[list[str]] = field(default_factory=list)
    near_blank: list[dict] = field(default_factory=list)
    near_conflicts: list = field(default_factory=list)


def phash(gray: np.ndarray) -> np.uint64:
    """64-bit perceptual hash (pHash) of a gray image.

    The DCT hash of Zauner, "Implementation and Benchmarking of Perceptual
    Image Hash Functions" (2010), as the ``imagehash`` package computes it:
    shrink to 32x32, 2-D DCT, keep the 8x8 lowest frequencies, set a bit
    where a coefficient exceeds their median. Robust to re-encoding, small
    crops, brightness and contrast changes.

    Args:
        gray: uint8 (H, W) or (H, W, 1).

    Returns:
        the 64 bits as numpy uint64.
    """
    g = gray.reshape(gray.shape[0], gray.shape[1]).astype(np.float32)
    low = cv2.dct(cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA))[:8, :8].ravel()
    return np.packbits(low > np.median(low)).view(">u8")[0].astype(np.uint64)


def hamming_pairs(hashes: np.ndarray, max_distance: int, block: int = 512) -> list[tuple[int, int]]:
    """All index pairs (i < j) whose 64-bit hashes differ in at most ``max_distance`` bits.

    Exhaustive and blockwise: O(N^2) XOR-popcounts, about a second for 12,000
    images, with memory bounded by ``block`` x N.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    popcount = getattr(np, "bitwise_count", None)
    pairs = []
    for start in range(0, len(hashes), block):
        x = hashes[start : start + block, None] ^ hashes[None, :]
        if popcount is not None:
            d = popcount(x)
        else:  # numpy < 2.0
            d = np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=2).sum(axis=2)
        rows, cols = np.nonzero(d <= max_distance)
        rows = rows + start
        keep = rows < cols
        pairs.extend(zip(rows[keep].tolist(), cols[keep].tolist()))
    return pairs


def _union_find_groups(n: int, pairs) -> list[int]:
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    # tqdm disables itself when stderr is not a terminal (disable=None).
    return tqdm(total=total, desc="scanning", unit="img", disable=None, leave=False)


def scan(data_dir, size=(48, 48), color="gray", progress: bool = False, classes=None, min_classes: int = 2) -> Scan:
    """Read every image of one or more labelled folders through the edge preprocessing.

    Files without an image suffix, and files that do not decode, are skipped
    with a reason. Exact duplicates (same sha256) and near-duplicates of the
    same label (pHash within :data:`NEAR_DUPLICATE_DISTANCE` bits) are
    grouped. Byte-identical files under different labels are left out and
    listed in ``conflicts``, since one of the labels must be wrong.

    Args:
        data_dir: folder with one sub-folder per class, or a list of such
            folders: a class is the union of its sub-folders in each, and
            paths are kept relative to the folders' common parent.
        size: (height, width) of the model input.
        color: "gray" or "rgb".
        progress: show a progress bar on a terminal.
        classes: the class names to use, in this order; None: every
            sub-folder, sorted.
        min_classes: the fewest classes accepted (1 for auxiliary folders).

    Raises:
        HappysadError: no such folder, fewer than two classes, a class
            asked for in no folder, or a class with no usable image.
    """
    roots = [Path(d) for d in ([data_dir] if isinstance(data_dir, (str, os.PathLike)) else data_dir)]
    base = roots[0] if len(roots) == 1 else Path(os.path.commonpath([r.resolve() for r in roots]))
    found = {r: class_folders(r, minimum=1 if len(roots) > 1 else min_classes) for r in roots}
    everything = sorted({name for names in found.values() for name in names})
    labels = list(classes) if classes else everything
    missing = [c for c in labels if c not in everything]
    if missing:
        raise HappysadError(
            f"no class folder {', '.join(missing)} in {', '.join(map(str, roots))} "
            f"(classes there: {', '.join(everything)})"
        )
    if len(labels) < min_classes:
        raise HappysadError(f"{', '.join(map(str, roots))}: {len(labels)} class {labels}, need at least {min_classes}")
    candidates, skipped = _candidates(roots, labels, found, base)
    rows = _read_rows(candidates, skipped, size, progress)
    return _assemble(base, labels, rows, skipped)


def _candidates(roots: list[Path], labels: list[str], found: dict, base: Path) -> tuple[list, list]:
    """([(path, path relative to ``base``, class index)], skipped entries) of
    the class folders ``found`` in each root; files without an image suffix,
    and files beside the class folders, are skipped with a reason."""

    def rel_of(path: Path) -> str:
        return Path(os.path.relpath(path.resolve() if len(roots) > 1 else path, base)).as_posix()

    candidates, skipped = [], []
    for root in roots:
        for idx, name in enumerate(labels):
            if name not in found[root]:
                continue
            for folder, dirs, files in os.walk(root / name):
                dirs.sort()
                for fname in sorted(files):
                    path = Path(folder) / fname
                    rel = rel_of(path)
                    if is_image_path(path):
                        candidates.append((path, rel, idx))
                    else:
                        skipped.append({"path": rel, "reason": "not an image file (" + ", ".join(IMAGE_SUFFIXES) + ")"})
        for entry in sorted(root.iterdir()):
            if entry.is_file():
                skipped.append({"path": rel_of(entry), "reason": "not inside a class folder"})
    return candidates, skipped


def _read_rows(candidates: list, skipped: list, size, progress: bool) -> list[tuple]:
    """One row per candidate that decodes: (relative path, class, sha256,
    pHash, (height, width), "gray" or "color", gray standard deviation);
    the others are appended to ``skipped`` with the reason."""
    rows = []
    bar = _progress(len(candidates), progress)
    for path, rel, idx in candidates:
        if bar is not None:
            bar.update()
        try:
            # One read through the edge input gate (regular files only, size
            # cap): the bytes are hashed and decoded from memory.
            data = read_image_bytes(path)
            raw = data.tobytes()
            image = decode_image(data, path)
        except HappysadError as exc:
            skipped.append({"path": rel, "reason": str(exc).split(": ", 1)[-1]})
            continue
        gray = preprocess(image, size, "gray")
        # The hash is taken at the image's own size, not the model's, so the
        # near-duplicate groups (and so the split) do not change with
        # --img-size; for FER2013's 48x48 faces it is the 48 px hash.
        own = preprocess(image, image.shape[:2], "gray")
        is_gray = bool((image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all())
        rows.append(
            (
                rel,
                idx,
                hashlib.sha256(raw).hexdigest(),
                phash(own),
                image.shape[:2],
                "gray" if is_gray else "color",
                float(gray.std()),
            )
        )
    if bar is not None:
        bar.close()
    return rows


def _assemble(data_dir, labels, rows, skipped) -> Scan:
    digests = [r[2] for r in rows]
    hashes = np.array([r[3] for r in rows], dtype=np.uint64)
    by_digest = defaultdict(list)
    for i, d in enumerate(digests):
        by_digest[d].append(i)
    exact = [(g[0], j) for g in by_digest.values() for j in g[1:]]
    near = hamming_pairs(hashes, NEAR_DUPLICATE_DISTANCE)
    # Near-duplicates are grouped only within a label: across labels they are
    # reported for a person to check, never dropped (two photos of one
    # person, smiling and not, can hash alike).
    same_label = [(a, b) for a, b in near if rows[a][1] == rows[b][1]]
    cross_label = [(a, b) for a, b in near if rows[a][1] != rows[b][1] and digests[a] != digests[b]]
    groups = _union_find_groups(len(rows), exact + same_label)
    members = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    conflicts, bad = [], set()
    for idx in members.values():
        classes = {rows[i][1] for i in idx}
        if len(classes) > 1:  # byte-identical files under different labels
            bad.update(idx)
            conflicts.append({"paths": sorted(rows[i][0] for i in idx), "labels": sorted(labels[c] for c in classes)})
    keep = [i for i in range(len(rows)) if i not in bad]
    exact_groups = sorted(sorted(rows[i][0] for i in g) for g in by_digest.values() if len(g) > 1)
    near_groups = sorted(
        sorted(rows[i][0] for i in idx) for idx in members.values() if len({digests[i] for i in idx}) > 1
    )
    s = Scan(
        Path(data_dir),
        labels,
        paths=[rows[i][0] for i in keep],
        y=np.array([rows[i][1] for i in keep], dtype=np.int64),
        sha256=[digests[i] for i in keep],
        phash=hashes[keep] if keep else np.zeros(0, np.uint64),
        sizes=[tuple(int(v) for v in rows[i][4]) for i in keep],
        colors=[rows[i][5] for i in keep],
        skipped=skipped,
        conflicts=sorted(conflicts, key=lambda c: c["paths"]),
        groups=[groups[i] for i in keep],
        exact_groups=exact_groups,
        near_groups=near_groups,
        near_blank=[{"path": r[0], "std": round(r[6], 2)} for r in rows if r[6] < NEAR_BLANK_STD],
        near_conflicts=sorted(sorted((rows[a][0], rows[b][0])) for a, b in cross_label),
    )
    counts = np.bincount(s.y, minlength=len(labels))
    for name, count in zip(labels, counts):
        if count == 0:
            raise HappysadError(f"{data_dir / name}: no usable images; add .jpg/.png photos of {name!r} faces")
    return s
