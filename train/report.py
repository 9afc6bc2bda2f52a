"""The data report: what a scan found wrong with a folder, as JSON and as a
short printed summary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from happysad.edge.fileio import report_path, write_json
from happysad.edge.images import display_path

from .data import NEAR_BLANK_STD, NEAR_DUPLICATE_DISTANCE, Scan, scan


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
        "data_dir": report_path(s.data_dir),
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


def check_data(data_dir, report_path: Path, size=(48, 48), color="gray", classes=None) -> tuple[Scan, dict]:
    """Scan a folder (or several: :func:`train.data.scan`), write its data
    report (JSON) and print the summary.

    Returns:
        (scan, report dict).
    """
    s = scan(data_dir, size, color, progress=True, classes=classes)
    report = data_report(s)
    write_json(report_path, report)
    print(report_summary(report))
    print(f"data report: {report_path}")
    return s, report
