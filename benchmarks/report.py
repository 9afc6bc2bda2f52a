"""What a benchmark report becomes: tables, CSV, Markdown, a plot, gates and
a comparison with an earlier run.

A report is the dict :func:`benchmarks.bench.run_bench` returns. Every
function here is pure over it, except the writers, which write atomically.
The tables, the Markdown and the CSV are made in :mod:`benchmarks.report_tables`
(and importable from here).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from happysad.edge import HappysadError
from happysad.edge.fileio import write_bytes
from happysad.edge.jsonfile import check_fields, json_type, read_json

# The tables, the Markdown and the CSV, importable from here as before.
from .report_tables import ACCURACY_COLUMNS as ACCURACY_COLUMNS
from .report_tables import CONSOLE_COLUMNS as CONSOLE_COLUMNS
from .report_tables import COST_COLUMNS as COST_COLUMNS
from .report_tables import VOTE_COLUMNS as VOTE_COLUMNS
from .report_tables import flat_row as flat_row
from .report_tables import format_csv as format_csv
from .report_tables import format_markdown as format_markdown
from .report_tables import format_table as format_table
from .report_tables import machine_line as machine_line
from .report_tables import settings_line as settings_line
from .report_tables import threads_label


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically."""
    write_bytes(path, text.encode())


def check_gates(
    report: dict, max_drop: float | None = None, max_p50_ms: float | None = None, min_accuracy: float | None = None
) -> list[str]:
    """The reasons any model misses a shipping gate (empty: all pass).

    Args:
        max_drop: most accuracy drop allowed, percentage points.
        max_p50_ms: slowest median latency allowed, ms.
        min_accuracy: least accuracy allowed, 0..1.
    """
    reasons = []
    for r in report["results"]:
        who = f"{r['name']} (threads {threads_label(r)})"
        if max_drop is not None and r["drop_pp"] > max_drop:
            reasons.append(f"{who}: accuracy drop {r['drop_pp']:.2f} pp exceeds --max-drop {max_drop:g}")
        if max_p50_ms is not None and r["latency_ms"]["p50"] > max_p50_ms:
            reasons.append(f"{who}: p50 {r['latency_ms']['p50']:.3f} ms exceeds --max-p50-ms {max_p50_ms:g}")
        if min_accuracy is not None and r["accuracy"] < min_accuracy:
            reasons.append(f"{who}: accuracy {r['accuracy']:.4f} is below --min-accuracy {min_accuracy:g}")
    return reasons


#: The fields of a report's result row that :func:`compare_reports` reads, and their types.
RESULT_FIELDS = {"model": str, "latency_ms": dict, "accuracy": float, "threads?": int, "tta?": str}


def read_report(path: str | os.PathLike) -> dict:
    """An earlier ``--json`` report, each field :func:`compare_reports` reads type-checked.

    Raises:
        UsageError: no such file (exit status 2).
        HappysadError: not a regular file, too large or deep, not JSON, or
            not a happysad-bench report: one line naming the file and the
            field (``(results[2] field 'accuracy' is a string, expected a number)``).
    """
    old = read_json(path, "report")
    try:
        _check_report(old)
    except HappysadError as exc:
        raise HappysadError(f"{path}: not a happysad-bench report; write one with --json ({exc})") from None
    return old


def _check_report(old: dict) -> None:
    """Raise a HappysadError naming the first field of a report of the wrong type (``results[2] field 'accuracy'``)."""
    check_fields(old, {"results": list, "machine?": dict}, "the report")
    for i, r in enumerate(old["results"]):
        if not isinstance(r, dict):
            raise HappysadError(f"results[{i}] is {json_type(r)}, expected an object")
        check_fields(r, RESULT_FIELDS, f"results[{i}]")
        check_fields(r["latency_ms"], {"p50": float}, f"results[{i}].latency_ms")
        if not r["latency_ms"]["p50"] > 0:
            raise HappysadError(f"results[{i}].latency_ms field 'p50' is {r['latency_ms']['p50']}, not above 0")


def _key(row: dict) -> tuple:
    return Path(row["model"]).name, row.get("threads"), row.get("tta", "none")


def compare_reports(new: dict, old: dict, tolerance_pct: float = 20.0, tolerance_pp: float = 0.5) -> list[str]:
    """Regressions of ``new`` against ``old``, matched by file name and threads.

    A model regresses when its p50 latency grew by more than
    ``tolerance_pct`` percent, or its accuracy fell by more than
    ``tolerance_pp`` percentage points. Models in only one report are left
    out. Latency is only comparable on the same machine (pycoral keeps one
    reference file per device for this reason).

    Returns:
        one reason per regression (empty: none).
    """
    before = {_key(r): r for r in old["results"]}
    reasons = []
    for r in new["results"]:
        o = before.get(_key(r))
        if o is None:
            continue
        who = f"{r['name']} (threads {threads_label(r)})"
        p50, p50_old = r["latency_ms"]["p50"], o["latency_ms"]["p50"]
        if p50 > p50_old * (1 + tolerance_pct / 100):
            reasons.append(
                f"{who}: p50 {p50:.3f} ms vs {p50_old:.3f} ms before "
                f"(+{(p50 / p50_old - 1) * 100:.0f}%, tolerance {tolerance_pct:g}%)"
            )
        drop = (o["accuracy"] - r["accuracy"]) * 100
        if drop > tolerance_pp:
            reasons.append(
                f"{who}: accuracy {r['accuracy']:.4f} vs {o['accuracy']:.4f} before "
                f"(-{drop:.2f} pp, tolerance {tolerance_pp:g} pp)"
            )
    return reasons


def import_pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or say how to install it.

    Raises:
        HappysadError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise HappysadError(
            "--plot needs matplotlib: pip install 'happysad[train]' (the train extra), or leave out --plot"
        ) from None
    return plt


def write_plot(report: dict, path: str | os.PathLike) -> None:
    """A PNG: latency distribution per model and thread count (box plot, ms,
    log scale) beside each file's accuracy drop against its float reference
    (bars, pp, values written on them)."""
    plt = import_pyplot()
    results = report["results"]
    names = [f"{r['name']}\n{r['backend']}, threads {threads_label(r)}" for r in results]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 0.45 * len(results) + 3), gridspec_kw={"width_ratios": [3, 2]})
    ax1.boxplot([r["samples_ms"] for r in results], vert=False, showfliers=True, flierprops={"markersize": 2})
    ax1.set_yticks(range(1, len(results) + 1), names, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xscale("log")
    ax1.set_xlabel("latency per image, ms (log scale)")
    ax1.set_title("latency distribution (box: p25-p75, whiskers: 1.5 IQR)")
    # Accuracy is per file (threads do not change labels): one bar per file,
    # the drop against its float reference in percentage points, the
    # figure that decides shipping, with the accuracy written beside it.
    files = list({(r["model"], r.get("tta", "none")): r for r in results}.values())
    drops = [r.get("drop_pp", 0.0) for r in files]
    colors = ["#c0392b" if d > 0 else "#27ae60" for d in drops]
    ax2.barh(range(len(files)), drops, color=colors)
    ax2.set_yticks(range(len(files)), [r["name"] for r in files], fontsize=7)
    ax2.invert_yaxis()
    ax2.axvline(0, color="black", linewidth=0.8)
    span = max([abs(d) for d in drops] + [0.1])
    ax2.set_xlim(-span * 1.2, span * 2.2)
    for i, (r, d) in enumerate(zip(files, drops)):
        ax2.text(
            max(d, 0.0) + span * 0.05, i, f"{d:+.2f} pp (acc. {r['accuracy']:.4f})", va="center", ha="left", fontsize=7
        )
    ax2.set_xlabel("accuracy drop against the float reference, pp (positive: worse)")
    ax2.set_title(f"accuracy drop on {report['settings']['images']} images")
    ax2.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, buf.getvalue())
