"""A benchmark report as text: the stdout table, the Markdown tables and the CSV.

A report is the dict :func:`benchmarks.bench.run_bench` returns. Each table
is a list of column specs, (header, cell function of one result row), every
column defined once here and shared by the tables that show it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .timing import STAGES


def _num(fmt: str, value) -> str:
    return "n/a" if value is None else fmt.format(value)


def threads_label(row: dict) -> str:
    """A result's interpreter thread count as written: "default" for the interpreter's own."""
    return "default" if row["threads"] is None else str(row["threads"])


def _cold(row: dict, key: str):
    return row["cold_start"][key] if row.get("cold_start") else None


def _ratio(value) -> str:
    return "n/a" if value is None else f"{value:.1f}x"


def _vote_cell(row: dict, key: str) -> str:
    """A figure against the FER+ majority (0..1) as a percentage; n/a without votes."""
    v = (row.get("ferplus") or {}).get(key)
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _vote(key: str):
    """The cell function of a figure against the FER+ majority: a percentage,
    the score-vote MAE as a plain number (0..1); n/a without votes."""

    def cell(r):
        v = (r.get("ferplus") or {}).get(key)
        return f"{v:.3f}" if key == "vote_mae" and v is not None else _vote_cell(r, key)

    return cell


def _column(header: str, *keys: str, fmt: str | None = None) -> tuple:
    """A column spec: ``header`` over the row's value at ``keys`` (nested
    look-ups, e.g. ``"latency_ms", "p50"``), formatted with ``fmt``
    (:meth:`str.format`), or as it is when ``fmt`` is None."""

    def cell(row: dict):
        value = row
        for key in keys:
            value = value[key]
        return value if fmt is None else fmt.format(value)

    return header, cell


# The columns of more than one table.
_NAME = _column("model", "name", fmt="`{}`")
_RUNTIME = _column("runtime", "backend")
_THREADS = ("threads", threads_label)
_SIZE = _column("size MB", "size_mb", fmt="{:.3f}")
_LOAD = _column("load ms", "load_ms", fmt="{:.1f}")
_P50 = _column("p50 ms", "latency_ms", "p50", fmt="{:.3f}")
_P99 = _column("p99 ms", "latency_ms", "p99", fmt="{:.3f}")
_FPS = _column("FPS", "fps", fmt="{:.0f}")
_ACCURACY = _column("accuracy", "accuracy", fmt="{:.4f}")
_DROP = _column("drop pp", "drop_pp", fmt="{:+.2f}")
_AGREEMENT = _column("agreement", "agreement", fmt="{:.4f}")

#: Columns of the stdout table: (header, cell function).
CONSOLE_COLUMNS = [
    _column("model", "name"),
    _column("format", "format"),
    _RUNTIME,
    _THREADS,
    _SIZE,
    _LOAD,
    _P50,
    _P99,
    _FPS,
    _ACCURACY,
    _DROP,
    _AGREEMENT,
    ("FER+ forced", _vote("forced")),
    ("FER+ 3-way", _vote("three_way")),
    ("neutral called", _vote("neutral_called_expression")),
]

#: Columns of the Markdown latency-and-cost table.
COST_COLUMNS = [
    _NAME,
    _RUNTIME,
    _THREADS,
    _SIZE,
    ("params", lambda r: _num("{:,}", r["params"])),
    ("MMACs", lambda r: _num("{:.1f}", None if r["macs"] is None else r["macs"] / 1e6)),
    _LOAD,
    _column("first ms", "first_ms", fmt="{:.2f}"),
    _column("mean ms", "latency_ms", "mean", fmt="{:.3f}"),
    _column("std ms", "latency_ms", "std", fmt="{:.3f}"),
    _P50,
    _column("p90 ms", "latency_ms", "p90", fmt="{:.3f}"),
    _P99,
    ("pre / invoke / post p50 ms", lambda r: " / ".join(f"{r['stages_ms'][s]['p50']:.3f}" for s in STAGES)),
    _FPS,
    ("cold start ms", lambda r: _num("{:.0f}", _cold(r, "ms"))),
    ("peak RSS MB", lambda r: _num("{:.0f}", _cold(r, "peak_rss_mb"))),
    ("speed-up", lambda r: _ratio(r.get("speedup"))),
    ("memory", lambda r: _ratio(r.get("memory_ratio"))),
]

#: Columns of the Markdown accuracy table (one row per model file and test-time augmentation).
ACCURACY_COLUMNS = [
    _NAME,
    _ACCURACY,
    _column("balanced acc.", "balanced_accuracy", fmt="{:.4f}"),
    _column("precision", "precision", fmt="{:.4f}"),
    _column("recall", "recall", fmt="{:.4f}"),
    _column("F1", "f1", fmt="{:.4f}"),
    ("confusion matrix", lambda r: " / ".join(" ".join(map(str, row)) for row in r["confusion_matrix"])),
    ("reference", lambda r: f"`{Path(r['reference']).name}`"),
    _DROP,
    _AGREEMENT,
]

#: Columns of the Markdown table against crowd votes (runs trained with
#: ``--votes``; :func:`edge.metrics.vote_metrics`).
VOTE_COLUMNS = [
    _NAME,
    ("forced", _vote("forced")),
    ("three-way balanced", _vote("three_way")),
    ("neutral called an expression", _vote("neutral_called_expression")),
    ("majority accuracy", _vote("majority")),
    ("score-vote MAE", _vote("vote_mae")),
    ("faces with votes", lambda r: str((r.get("ferplus") or {}).get("n", "n/a"))),
]


def machine_line(report: dict) -> str:
    """One line: CPU, cores, OS, Python, runtime versions."""
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return f"{m['cpu']} ({m['cores']} cores, {m['machine']}), {m['os']}, Python {m['python']}; {versions}"


def settings_line(report: dict) -> str:
    """One line: what latency and accuracy were measured on."""
    s = report["settings"]
    timed = f"at least {s['runs']} timed runs" + (f" and {s['min_seconds']:g} s" if s["min_seconds"] else "")
    source = f"{s['images']} images of {s['source']}" + (f" ({s['part']})" if s.get("part") else "")
    cold = f"median of {s['cold_runs']} fresh processes after an untimed one" if s["cold_runs"] else "not measured"
    changed = ""
    if s.get("allow_changed"):
        changed = f"; --allow-changed: {len(s.get('changed_images') or [])} images changed since the split, scored"
    return (
        f"latency: one image, preprocess + invoke + postprocess, {s['warmup']} warm-up runs "
        f"excluded, {timed}; accuracy on {source}{changed}; cold start: {cold}"
    )


def format_table(report: dict) -> str:
    """The stdout table (columns aligned), then the settings and machine lines."""
    header = [name for name, _ in CONSOLE_COLUMNS]
    rows = [[cell(r) for _, cell in CONSOLE_COLUMNS] for r in report["results"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join(
        [
            line(header),
            *(line(r) for r in rows),
            settings_line(report) + "; drop pp: accuracy below the float reference",
            "machine: " + machine_line(report),
        ]
    )


def _md_table(columns, rows) -> str:
    head = "| " + " | ".join(name for name, _ in columns) + " |"
    rule = "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(columns))) + " |"
    body = ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def format_markdown(report: dict) -> str:
    """Two Markdown tables (latency and cost per model and thread count;
    accuracy per model file and ``--tta``) with the machine and settings, ending in a newline."""
    results = report["results"]
    # One accuracy row per file and test-time augmentation (the labels do
    # not depend on the thread count; they do on --tta flip).
    per_file = list({(r["model"], r.get("tta", "none")): r for r in reversed(results)}.values())[::-1]
    s = report["settings"]
    return "\n".join(
        [
            f"Measured {s['date']} on {machine_line(report)}; the run took {s['seconds']:.0f} s.",
            "",
            _md_table(COST_COLUMNS, results),
            "",
            _md_table(ACCURACY_COLUMNS, per_file),
            "",
            *(
                [
                    "Against the FER+ majority of ten crowd votes (forced: happy vs sad on faces whose "
                    "majority is one of them; three-way: happy / sad / neither, balanced, on faces whose "
                    "majority is happiness, sadness or neutral; MAE: scores against vote shares):",
                    "",
                    _md_table(VOTE_COLUMNS, per_file),
                    "",
                ]
                if any(r.get("ferplus") for r in per_file)
                else []
            ),
            settings_line(report) + "; confusion matrix: one row per true class, "
            f"predicted counts in label order ({', '.join(s.get('labels', []))}).",
            "",
        ]
    )


def flat_row(row: dict) -> dict:
    """One result as a flat dict of scalars (the CSV columns)."""
    out = {
        k: row[k]
        for k in (
            "name",
            "model",
            "format",
            "backend",
            "threads",
            "size_mb",
            "params",
            "macs",
            "load_ms",
            "first_ms",
            "fps",
            "accuracy",
            "balanced_accuracy",
            "precision",
            "recall",
            "f1",
            "drop_pp",
            "agreement",
            "speedup",
            "memory_ratio",
            "reference",
            "n",
        )
    }
    out.update({f"latency_{k}_ms": v for k, v in row["latency_ms"].items()})
    for stage in STAGES:
        out.update({f"{stage}_{k}_ms": row["stages_ms"][stage][k] for k in ("mean", "p50", "p99")})
    out["cold_start_ms"] = _cold(row, "ms")
    out["cold_start_peak_rss_mb"] = _cold(row, "peak_rss_mb")
    out["confusion_matrix"] = row["confusion_matrix"]
    return out


def format_csv(report: dict) -> str:
    """Every scalar figure, one row per model and thread count; the machine
    in ``#`` comment lines first."""
    buf = io.StringIO()
    buf.write(f"# machine: {machine_line(report)}\n# {settings_line(report)}\n")
    rows = [flat_row(r) for r in report["results"]]
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
