"""The auxiliary classes' folders (``--aux``), scanned with every copy or
near-copy of an image of the model's own classes left out."""

from __future__ import annotations

import numpy as np

from .data import NEAR_DUPLICATE_DISTANCE, Scan, hamming_pairs, scan


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
