"""Scanning a labelled photo folder, reporting what is wrong with it, and
making a leak-free, stratified split.

Every image goes through :func:`edge.preprocess`, the function the device
runs, so the checks (and training) see exactly what the device will see.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge import HappysadError, preprocess
from edge.dataset import class_folders
from edge.images import IMAGE_SUFFIXES, decode_image, display_path, is_image_path, read_image_bytes

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
    candidates, skipped = [], []
    for root in roots:
        for idx, name in enumerate(labels):
            if name not in found[root]:
                continue
            for folder, dirs, files in os.walk(root / name):
                dirs.sort()
                for fname in sorted(files):
                    path = Path(folder) / fname
                    rel = os.path.relpath(path.resolve() if len(roots) > 1 else path, base)
                    rel = Path(rel).as_posix()
                    if is_image_path(path):
                        candidates.append((path, rel, idx))
                    else:
                        skipped.append({"path": rel, "reason": "not an image file (" + ", ".join(IMAGE_SUFFIXES) + ")"})
        for entry in sorted(root.iterdir()):
            if entry.is_file():
                skipped.append(
                    {
                        "path": Path(os.path.relpath(entry.resolve() if len(roots) > 1 else entry, base)).as_posix(),
                        "reason": "not inside a class folder",
                    }
                )
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
        is_gray = bool((image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all())
        rows.append(
            (
                rel,
                idx,
                hashlib.sha256(raw).hexdigest(),
                phash(gray),
                image.shape[:2],
                "gray" if is_gray else "color",
                float(gray.std()),
            )
        )
    if bar is not None:
        bar.close()
    return _assemble(base, labels, rows, skipped)


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


def data_report(s: Scan) -> dict:
    """Everything :func:`scan` found, as a JSON-ready dict.

    Keys: data_dir, labels, files_per_class and images (kept files),
    skipped, skipped_by_reason, sizes ("HxW": count) and color_modes (of
    kept files), exact_duplicates and near_duplicates (method, groups,
    files, list of path groups, over all decoded files), conflicts
    (byte-identical files under more than one label, left out),
    near_duplicates_across_labels (pairs, kept), near_blank (path and pixel
    standard deviation).
    """
    return {
        "data_dir": str(Path(s.data_dir).resolve()),
        "labels": s.labels,
        "files_per_class": {name: int(n) for name, n in zip(s.labels, np.bincount(s.y, minlength=len(s.labels)))},
        "images": len(s.paths),
        "skipped": s.skipped,
        "skipped_by_reason": dict(Counter(x["reason"] for x in s.skipped).most_common()),
        "sizes": dict(Counter(f"{h}x{w}" for h, w in s.sizes).most_common()),
        "color_modes": dict(Counter(s.colors).most_common()),
        "exact_duplicates": {
            "method": "sha256 of the file bytes",
            "groups": len(s.exact_groups),
            "files": sum(len(g) for g in s.exact_groups),
            "list": s.exact_groups,
        },
        "near_duplicates": {
            "method": f"64-bit pHash, Hamming distance <= {NEAR_DUPLICATE_DISTANCE}",
            "groups": len(s.near_groups),
            "files": sum(len(g) for g in s.near_groups),
            "list": s.near_groups,
        },
        "conflicts": s.conflicts,
        "near_duplicates_across_labels": {
            "note": "kept; check whether one label is wrong",
            "list": [list(p) for p in s.near_conflicts],
        },
        "near_blank": {"method": f"gray pixel standard deviation < {NEAR_BLANK_STD}", "list": s.near_blank},
    }


def report_summary(r: dict) -> str:
    """A few lines of :func:`data_report` for the terminal."""
    per_class = ", ".join(f"{n} {name}" for name, n in r["files_per_class"].items())
    lines = [f"data: {r['data_dir']}: {per_class} ({r['images']} images kept)"]
    if r["skipped"]:
        lines.append(
            f"skipped {len(r['skipped'])} files: "
            + "; ".join(f"{n} {why}" for why, n in r["skipped_by_reason"].items())
        )
    sizes = ", ".join(f"{k} ({v})" for k, v in list(r["sizes"].items())[:3])
    modes = ", ".join(f"{k} ({v})" for k, v in r["color_modes"].items())
    lines.append(f"sizes: {sizes}{', ...' if len(r['sizes']) > 3 else ''}; color modes: {modes}")
    e, n = r["exact_duplicates"], r["near_duplicates"]
    lines.append(
        f"exact duplicates: {e['groups']} groups ({e['files']} files); near-duplicates: "
        f"{n['groups']} more groups ({n['files']} files); each group stays within one part "
        "of the split"
    )
    for c in r["conflicts"]:
        lines.append(
            f"left out, same file under labels {'/'.join(c['labels'])}: " + ", ".join(map(display_path, c["paths"]))
        )
    across = r["near_duplicates_across_labels"]["list"]
    if across:
        lines.append(
            f"{len(across)} near-duplicate pairs under different labels (kept; check them): "
            + "; ".join(" ~ ".join(map(display_path, p)) for p in across[:3])
            + (" ..." if len(across) > 3 else "")
        )
    if r["near_blank"]["list"]:
        lines.append(
            "near-blank images: "
            + ", ".join(display_path(x["path"]) for x in r["near_blank"]["list"][:5])
            + (" ..." if len(r["near_blank"]["list"]) > 5 else "")
        )
    return "\n".join(lines)


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


def auxiliary(main: Scan, aux_dirs, size=(48, 48), color="gray", progress: bool = False) -> tuple[Scan, list]:
    """Scan auxiliary class folders and drop what would leak or double-count.

    An auxiliary image that is byte-identical to an image of ``main``, or a
    near-duplicate of one (pHash within :data:`NEAR_DUPLICATE_DISTANCE`
    bits), is left out: the copy under ``main``'s label is the one used, on
    whichever side of the split it fell, so no face is counted under two
    labels and none reaches training through the back door.

    Args:
        main: the scan of the model's own classes.
        aux_dirs: labelled folders (see :func:`scan`).

    Returns:
        (the auxiliary scan, kept files only; [{"path", "copy_of"}] left out).
    """
    aux = scan(list(aux_dirs), size, color, progress, min_classes=1)
    main_digests = {d: p for d, p in zip(main.sha256, main.paths)}
    dropped, keep = [], []
    near = {}
    if len(aux.paths) and len(main.paths):
        both = np.concatenate([main.phash, aux.phash])
        for a, b in hamming_pairs(both, NEAR_DUPLICATE_DISTANCE):
            if a < len(main.paths) <= b:
                near.setdefault(b - len(main.paths), main.paths[a])
    for i, (path, digest) in enumerate(zip(aux.paths, aux.sha256)):
        copy = main_digests.get(digest) or near.get(i)
        if copy is not None:
            dropped.append({"path": path, "copy_of": copy})
        else:
            keep.append(i)
    kept = Scan(
        aux.data_dir,
        aux.labels,
        paths=[aux.paths[i] for i in keep],
        y=aux.y[keep],
        sha256=[aux.sha256[i] for i in keep],
        phash=aux.phash[keep],
        sizes=[aux.sizes[i] for i in keep],
        colors=[aux.colors[i] for i in keep],
        skipped=aux.skipped,
        conflicts=aux.conflicts,
        groups=[aux.groups[i] for i in keep],
    )
    return kept, dropped
