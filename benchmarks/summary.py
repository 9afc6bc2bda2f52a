"""The README's one results table, from a ``happysad-bench --json`` report:
per model file its size, its p50 latency at the fewest threads measured,
its figures against the FER+ majority and its drop against the float
reference, then a row for the peer's published figure.

``make bench`` writes it between the README's markers
(``python -m happysad.benchmarks.readme runs/demo/bench/bench.json README.md``);
the full tables stay in ``bench.md``.
"""

from __future__ import annotations

from .report_tables import machine_line

#: The mark to beat (docs/accuracy.md): the ``fer`` package's quantized
#: mini-Xception (seven expressions, 64x64 gray) restricted to happy vs sad,
#: on FER2013's official test faces (not this split): 93.0%.
PEER_ROW = "| `fer` package, mini-Xception int8 (peer) | TFLite | n/a | n/a | 93.0%¹ | n/a | n/a | n/a |"
PEER_NOTE = (
    "¹ the peer's happy-vs-sad accuracy on FER2013's official test faces (folder labels), "
    "not this split; it has no neutral answer."
)
HEADER = (
    "| model | runtime | size MB | p50 ms | FER+ forced | FER+ three-way | neutral called happy/sad | drop pp |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _row(r: dict) -> str:
    votes = r.get("ferplus") or {}
    drop = "n/a" if r.get("drop_pp") is None else f"{r['drop_pp']:+.2f}"
    cells = [
        f"`{r['name']}`",
        r["backend"],
        f"{r['size_mb']:.3f}",
        f"{r['latency_ms']['p50']:.3f}",
        _pct(votes.get("forced")),
        _pct(votes.get("three_way")),
        _pct(votes.get("neutral_called_expression")),
        drop,
    ]
    return "| " + " | ".join(cells) + " |"


def format_summary(report: dict) -> str:
    """One Markdown table: a row per model file (at its fewest threads), the
    peer's row, and one line on the machine and the faces; ends in a newline.

    Args:
        report: a ``happysad-bench --json`` report ({"results", "settings", "machine"}).

    Raises:
        KeyError: the report lacks a field every report has (not one of happysad-bench's).
    """
    results = report["results"]
    fewest: dict[str, dict] = {}
    for r in results:
        best = fewest.get(r["name"])
        if best is None or (r.get("threads") or 0) < (best.get("threads") or 0):
            fewest[r["name"]] = r
    counts = sorted({r["threads"] for r in fewest.values() if r.get("threads")})
    threads = f"{', '.join(map(str, counts)) or 'default'} thread(s)" + (
        "; Keras: TensorFlow's own" if any(not r.get("threads") for r in fewest.values()) and counts else ""
    )
    s = report["settings"]
    votes = next((r["ferplus"].get("n") for r in fewest.values() if r.get("ferplus")), None)
    faces = f"{s['images']} test faces" + (f", {votes} of them with FER+ votes" if votes else "")
    return "\n".join(
        [
            *HEADER,
            *(_row(r) for r in fewest.values()),
            PEER_ROW,
            "",
            f"Measured {s['date']} by `make bench` on {faces}; p50: one image, {threads}; "
            "forced: happy vs sad where the ten-vote majority is one of them; three-way: happy / sad / neither, "
            "balanced; drop: against the float reference, percentage points. "
            f"Machine: {machine_line(report)}. All columns: [docs/results.md](docs/results.md).",
            "",
            PEER_NOTE,
            "",
        ]
    )
