"""What a benchmark report becomes: tables, CSV, Markdown, a plot, gates and
a comparison with an earlier run.

A report is the dict :func:`benchmarks.bench.run_bench` returns. Every
function here is pure over it, except the writers, which write atomically.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from happysad.edge import HappysadError
from happysad.edge.fileio import read_json, write_bytes

from .timing import STAGES


def _num(fmt: str, value) -> str:
    return "n/a" if value is None else fmt.format(value)


def _threads(row: dict) -> str:
    return "default" if row["threads"] is None else str(row["threads"])


def _cold(row: dict, key: str):
    return row["cold_start"][key] if row.get("cold_start") else None


def _ratio(value) -> str:
    return "n/a" if value is None else f"{value:.1f}x"


def _vote_cell(row: dict, key: str) -> str:
    """A figure against the FER+ majority (0..1) as a percentage; n/a without votes."""
    v = (row.get("ferplus") or {}).get(key)
    return "n/a" if v is None else f"{100 * v:.2f}%"


#: Columns of the stdout table: (header, cell function).
CONSOLE_COLUMNS = [
    ("model", lambda r: r["name"]),
    ("format", lambda r: r["format"]),
    ("runtime", lambda r: r["backend"]),
    ("threads", _threads),
    ("size MB", lambda r: f"{r['size_mb']:.3f}"),
    ("load ms", lambda r: f"{r['load_ms']:.1f}"),
    ("p50 ms", lambda r: f"{r['latency_ms']['p50']:.3f}"),
    ("p99 ms", lambda r: f"{r['latency_ms']['p99']:.3f}"),
    ("FPS", lambda r: f"{r['fps']:.0f}"),
    ("accuracy", lambda r: f"{r['accuracy']:.4f}"),
    ("drop pp", lambda r: f"{r['drop_pp']:+.2f}"),
    ("agreement", lambda r: f"{r['agreement']:.4f}"),
    ("FER+ forced", lambda r: _vote_cell(r, "forced")),
    ("FER+ 3-way", lambda r: _vote_cell(r, "three_way")),
    ("neutral called", lambda r: _vote_cell(r, "neutral_called_expression")),
]

#: Columns of the Markdown latency-and-cost table.
COST_COLUMNS = [
    ("model", lambda r: f"`{r['name']}`"),
    ("runtime", lambda r: r["backend"]),
    ("threads", _threads),
    ("size MB", lambda r: f"{r['size_mb']:.3f}"),
    ("params", lambda r: _num("{:,}", r["params"])),
    ("MMACs", lambda r: _num("{:.1f}", None if r["macs"] is None else r["macs"] / 1e6)),
    ("load ms", lambda r: f"{r['load_ms']:.1f}"),
    ("first ms", lambda r: f"{r['first_ms']:.2f}"),
    ("mean ms", lambda r: f"{r['latency_ms']['mean']:.3f}"),
    ("std ms", lambda r: f"{r['latency_ms']['std']:.3f}"),
    ("p50 ms", lambda r: f"{r['latency_ms']['p50']:.3f}"),
    ("p90 ms", lambda r: f"{r['latency_ms']['p90']:.3f}"),
    ("p99 ms", lambda r: f"{r['latency_ms']['p99']:.3f}"),
    ("pre / invoke / post p50 ms", lambda r: " / ".join(f"{r['stages_ms'][s]['p50']:.3f}" for s in STAGES)),
    ("FPS", lambda r: f"{r['fps']:.0f}"),
    ("cold start ms", lambda r: _num("{:.0f}", _cold(r, "ms"))),
    ("peak RSS MB", lambda r: _num("{:.0f}", _cold(r, "peak_rss_mb"))),
    ("speed-up", lambda r: _ratio(r.get("speedup"))),
    ("memory", lambda r: _ratio(r.get("memory_ratio"))),
]

#: Columns of the Markdown accuracy table (one row per model file and test-time augmentation).
ACCURACY_COLUMNS = [
    ("model", lambda r: f"`{r['name']}`"),
    ("accuracy", lambda r: f"{r['accuracy']:.4f}"),
    ("balanced acc.", lambda r: f"{r['balanced_accuracy']:.4f}"),
    ("precision", lambda r: f"{r['precision']:.4f}"),
    ("recall", lambda r: f"{r['recall']:.4f}"),
    ("F1", lambda r: f"{r['f1']:.4f}"),
    ("confusion matrix", lambda r: " / ".join(" ".join(map(str, row)) for row in r["confusion_matrix"])),
    ("reference", lambda r: f"`{Path(r['reference']).name}`"),
    ("drop pp", lambda r: f"{r['drop_pp']:+.2f}"),
    ("agreement", lambda r: f"{r['agreement']:.4f}"),
]


def _vote(key: str):
    def cell(r):
        v = (r.get("ferplus") or {}).get(key)
        return f"{v:.3f}" if key == "vote_mae" and v is not None else _vote_cell(r, key)

    return cell


#: Columns of the Markdown table against crowd votes (runs trained with
#: ``--votes``; :func:`edge.metrics.vote_metrics`).
VOTE_COLUMNS = [
    ("model", lambda r: f"`{r['name']}`"),
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
    return (
        f"latency: one image, preprocess + invoke + postprocess, {s['warmup']} warm-up runs "
        f"excluded, {timed}; accuracy on {source}; cold start: {cold}"
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
        who = f"{r['name']} (threads {_threads(r)})"
        if max_drop is not None and r["drop_pp"] > max_drop:
            reasons.append(f"{who}: accuracy drop {r['drop_pp']:.2f} pp exceeds --max-drop {max_drop:g}")
        if max_p50_ms is not None and r["latency_ms"]["p50"] > max_p50_ms:
            reasons.append(f"{who}: p50 {r['latency_ms']['p50']:.3f} ms exceeds --max-p50-ms {max_p50_ms:g}")
        if min_accuracy is not None and r["accuracy"] < min_accuracy:
            reasons.append(f"{who}: accuracy {r['accuracy']:.4f} is below --min-accuracy {min_accuracy:g}")
    return reasons


def read_report(path: str | os.PathLike) -> dict:
    """An earlier ``--json`` report.

    Raises:
        HappysadError: missing, not JSON, or not a happysad-bench report.
    """
    old = read_json(path, "benchmark report")
    if not isinstance(old.get("results"), list) or not all(
        isinstance(r, dict) and "latency_ms" in r and "accuracy" in r for r in old["results"]
    ):
        raise HappysadError(f"{path}: not a happysad-bench report; write one with --json")
    return old


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
        who = f"{r['name']} (threads {_threads(r)})"
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
    names = [f"{r['name']}\n{r['backend']}, threads {_threads(r)}" for r in results]
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
