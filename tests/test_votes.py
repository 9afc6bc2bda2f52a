"""Crowd votes as labels: the votes reader, the figures against votes, soft-label
training on drawn faces, and a three-class model from votes to the device."""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from happysad.edge import Classifier, HappysadError, read_metadata
from happysad.edge.camera.smoothing import ScoreSmoother
from happysad.edge.metrics import tied, vote_metrics
from happysad.edge.runtime.prediction import Prediction
from happysad.edge.votes import EMOTIONS, majority, read_votes, shares

from helpers import QUICK_BENCH, REPO, assert_one_line_error, run_module, train_args
from synth import draw_face

HEADER = ["path", *EMOTIONS, "majority"]


def votes_row(**counts) -> list[int]:
    """Ten counts in FER+ order from emotion=count keywords."""
    return [counts.get(e, 0) for e in EMOTIONS]


def write_votes(path: Path, rows: list) -> Path:
    """A votes TSV: rows of (relative path, counts list or None for no votes)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(HEADER)
        for rel, counts in rows:
            w.writerow([rel, *(counts if counts is not None else [""] * 10), ""])
    return path


def bench_split(model, run, tmp_path, *extra):
    """``happysad-bench MODEL --split RUN/split.json`` in a few quick runs, JSON to tmp_path/b.json."""
    return run_module("benchmarks", model, "--split", run / "split.json", *QUICK_BENCH, "--json", tmp_path / "b.json",
                      *extra, timeout=300)  # fmt: skip


def test_majority_follows_ferplus_rule():
    assert majority(votes_row(happiness=6, neutral=4)) == "happiness"
    # Single votes are dropped first: 5 of the 9 left is a majority.
    assert majority(votes_row(sadness=5, neutral=3, anger=1, fear=1)) == "sadness"
    assert majority(votes_row(sadness=5, neutral=5)) == "unknown"  # a tie is no majority
    assert majority(votes_row(NF=10)) == "NF"
    assert majority([np.nan] * 10) is None


def test_shares_leave_out_unknown_and_gather_other_expressions():
    v = np.array([votes_row(happiness=4, neutral=2, surprise=2, unknown=2), votes_row(unknown=9, NF=1)], float)
    s = shares(v, ["happy", "sad", "neutral"], other=True)
    assert s[0] == pytest.approx([0.5, 0.0, 0.25, 0.25])
    assert np.isnan(s[1]).all()  # no expression vote at all: not a target
    assert shares(v[:1], ["happy", "sad"])[0] == pytest.approx([1.0, 0.0])


def test_vote_metrics_count_forced_three_way_and_neutral_faces():
    labels = ["happy", "sad", "neutral"]
    votes = np.array(
        [
            votes_row(happiness=10),
            votes_row(sadness=8, neutral=2),
            votes_row(neutral=9, sadness=1),
            votes_row(neutral=7, happiness=3),
            [np.nan] * 10,
        ],
        float,
    )
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.6, 0.1, 0.3], [0.3, 0.3, 0.4]], float)
    m = vote_metrics(probs, labels, votes)
    assert m["n"] == 4
    # Forced: happy vs sad only; the sad face's sad score beats its happy score.
    assert m["forced"] == 1.0
    # Three-way: happy recall 1, sad recall 0 (said neutral), neither recall 1/2.
    assert m["three_way"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert m["neutral_called_expression"] == 0.5
    assert m["majority"] == pytest.approx(2 / 4)
    assert 0 < m["vote_mae"] < 0.3 and sum(b["n"] for b in m["reliability"]) == 4


def test_a_tie_of_the_two_best_scores_is_answered_uncertain_not_the_first_class():
    labels = ["happy", "sad", "neutral"]
    votes = np.array([votes_row(neutral=10), votes_row(sadness=10), votes_row(neutral=10)], float)
    # int8 softmax outputs: sad and neutral one step, 128/256 each.
    probs = np.array([[0.0, 0.5, 0.5], [0.0039, 0.498, 0.498], [0.1, 0.2, 0.7]], float)
    assert tied(probs).tolist() == [True, True, False]
    assert not tied(np.array([0.6, 0.2, 0.2])) and not tied(np.array([0.5, 0.5]))
    m = vote_metrics(probs, labels, votes)
    assert m["neutral_called_expression"] == 0.0  # the tie is not "sad"
    assert m["three_way_recall"] == {"sad": 0.0, "neither": 1.0}
    assert m["majority"] == pytest.approx(1 / 3)  # uncertain is no class
    assert m["forced"] == 1.0  # sad against happy alone still has an answer
    assert sum(b["n"] for b in m["reliability"]) == 3
    smoother = ScoreSmoother(0.6, labels)  # a first frame: its own scores
    face = Prediction(label="sad", confidence=0.5, scores=dict(zip(labels, probs[0])), face=(0, 0, 10, 10))
    assert smoother.update([face])[0].label == "uncertain"


@pytest.mark.parametrize(
    "row, pattern",
    [
        (["happy/a.png", *map(str, votes_row(happiness=10))], r"line 2: 11 columns, the header has 12"),
        (["happy/a.png", *map(str, votes_row(happiness=9)[:-1]), "x", ""], r"line 2: vote count 'x' is not an integer"),
        (["happy/a.png", *map(str, votes_row(happiness=11)), ""], r"line 2: vote counts .* sum to 1\.\.10"),
        (["happy/a.png", *map(str, votes_row(happiness=-1, neutral=11)), ""], r"line 2: vote counts"),
        (["happy/missing.png", *map(str, votes_row(happiness=10)), ""], r"line 2: 'happy/missing.png' is not a file"),
        (["../outside.png", *map(str, votes_row(happiness=10)), ""], r"line 2: path '\.\./outside\.png' must be"),
    ],
    ids=["columns", "not-integer", "over-ten", "negative", "unknown-path", "climbs-out"],
)
def test_bad_votes_rows_end_in_one_line_naming_the_row(tmp_path, row, pattern):
    data = tmp_path / "data"
    (data / "happy").mkdir(parents=True)
    (data / "sad").mkdir()
    for name, folder in (("a.png", "happy"), ("b.png", "sad")):
        cv2.imwrite(str(data / folder / name), draw_face(np.random.default_rng(0), folder))
    table = tmp_path / "votes.tsv"
    with table.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(HEADER)
        w.writerow(row)
    with pytest.raises(HappysadError, match=pattern):
        read_votes(table, data)
    res = run_module("train", data, "--votes", table, "--votes-root", data, "--out", tmp_path / "run")
    assert_one_line_error(res, 1, pattern)
    assert not (tmp_path / "run" / "model.keras").exists()


def test_a_class_with_no_vote_column_is_refused_before_anything_runs(tmp_path):
    res = run_module(
        "train", tmp_path, "--votes", tmp_path / "v.tsv", "--classes", "happy,cat", "--out", tmp_path / "r"
    )
    assert_one_line_error(res, 1, r"class 'cat' has no FER\+ vote column")


def test_votes_with_a_teacher_is_a_usage_error(tmp_path):
    res = run_module("train", tmp_path, "--votes", tmp_path / "v.tsv", "--teacher", tmp_path / "t.keras",
                     "--out", tmp_path / "r")  # fmt: skip
    assert_one_line_error(res, 2, r"--votes and --teacher do not go together")


def test_majority_rule_matches_the_shared_table():
    table = REPO.parent / "shared" / "data" / "ferplus" / "votes.tsv"
    if not table.is_file():
        pytest.skip("the FER+ votes table is not present")
    votes = read_votes(table)
    with table.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    root = table.resolve().parent.parent
    assert len(votes) == len(rows) == 28709
    got = [majority(votes[str((root / r["path"]).resolve())]) for r in rows]
    want = [r["majority"] or None for r in rows]
    assert got == want


# Soft labels on drawn faces: the "sad" folder holds frowning faces and, as
# FER2013's does, straight-mouthed (neutral) ones; only the votes say which.


@pytest.fixture(scope="module")
def vote_run(tmp_path_factory):
    """A data root with happy/ and sad/ (half of sad/ drawn neutral), an
    auxiliary folder of neutral faces, a votes table and a 3-class run."""
    root = tmp_path_factory.mktemp("votes")
    rng = np.random.default_rng(3)
    rows = []
    layout = {
        ("main", "happy"): ["happy"] * 60,
        ("main", "sad"): ["sad", "neutral"] * 30,
        ("other", "neutral"): ["neutral"] * 40,
    }
    for (top, folder), drawn in layout.items():
        (root / top / folder).mkdir(parents=True)
        for i, kind in enumerate(drawn):
            rel = f"{top}/{folder}/{folder}_{i:03d}.png"
            cv2.imwrite(str(root / rel), draw_face(rng, kind))
            emotion = {"happy": "happiness", "sad": "sadness", "neutral": "neutral"}[kind]
            # Nine of ten agree, the tenth is unsure; the last face has no votes.
            rows.append((rel, None if i == len(drawn) - 1 else votes_row(**{emotion: 9, "unknown": 1})))
    table = write_votes(root / "votes.tsv", rows)
    out = root / "run"
    votes = ["--aux", root / "other", "--votes", table, "--votes-root", root]
    res = run_module("train", *train_args(root / "main", out, 14, *votes, seed=2), timeout=600)
    assert res.returncode == 0, res.stderr
    return root, out, res


def test_training_on_votes_learns_the_neutral_faces_a_folder_calls_sad(vote_run):
    root, out, res = vote_run
    m = json.loads((out / "metrics.json").read_text())
    assert m["labels"] == ["happy", "sad", "neutral"]
    assert m["trained_with"] == ["happy", "sad", "neutral", "other"]
    assert m["folder_labels"] == ["happy", "sad"]
    split = json.loads((out / "split.json").read_text())
    assert split["labels"] == ["happy", "sad", "neutral"] and split["folder_labels"] == ["happy", "sad"]
    entries = split["train"] + split["val"] + split["test"]
    assert sum("votes" in e for e in entries) == len(entries) - sum(e["path"].endswith("_059.png") for e in entries)
    # Against the votes, the drawn neutral faces in sad/ are neutral, not sad.
    f = m["ferplus"]
    assert f["counts"]["neutral"] > 0 and f["neutral_called_expression"] <= 0.34
    assert f["forced"] >= 0.9 and f["three_way"] >= 0.75
    assert "against the FER+ majority, test split: forced" in res.stdout
    assert (out / "reliability.png").stat().st_size > 1000


def test_a_votes_model_exports_benchmarks_and_classifies_three_ways(vote_run, tmp_path):
    root, out, _ = vote_run
    res = run_module(
        "export", out, "--calib-samples", "40", "--max-drop", "100", "--formats", "tflite-int8", timeout=600
    )
    assert res.returncode == 0, res.stderr
    model = out / "export" / "model_int8.tflite"
    meta = read_metadata(model)
    assert list(meta.labels) == ["happy", "sad", "neutral"] and meta.output == "softmax"
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    # Verified against the vote majority: the validation faces drawn neutral count as neutral.
    split = json.loads((out / "split.json").read_text())
    assert manifest["verification"]["n"] == sum("votes" in e for e in split["val"])
    # The device answers neutral for a straight mouth.
    clf = Classifier(model)
    rng = np.random.default_rng(11)
    said = [clf.classify(draw_face(rng, "neutral")).label for _ in range(20)]
    assert said.count("neutral") >= 14, said
    # Two classes on one int8 output step: no class is ahead, whichever comes first.
    assert clf.label_of(np.array([0.25, 0.375, 0.375], np.float32)) == ("uncertain", 0.375)
    assert clf.label_of(np.array([0.375, 0.25, 0.375], np.float32)) == ("uncertain", 0.375)
    assert clf.label_of(np.array([0.2, 0.5, 0.3], np.float32)) == ("sad", 0.5)
    bench = bench_split(model, out, tmp_path, "--markdown", tmp_path / "b.md")
    assert bench.returncode == 0, bench.stderr
    row = json.loads((tmp_path / "b.json").read_text())["results"][0]
    assert row["ferplus"]["n"] == sum("votes" in e for e in split["test"])
    assert set(row["called"]) == {"happy", "sad", "neutral"}
    assert "Against the FER+ majority" in (tmp_path / "b.md").read_text()


def test_a_two_way_model_trains_exports_and_benchmarks_from_the_same_votes(vote_run, tmp_path):
    root, _, _ = vote_run
    out = tmp_path / "two"
    res = run_module(
        "train",
        root / "main",
        "--aux",
        root / "other",
        "--votes",
        root / "votes.tsv",
        "--votes-root",
        root,
        "--classes",
        "happy,sad",
        "--out",
        out,
        "--epochs",
        "6",
        "--batch-size",
        "16",
        "--augment",
        "basic",
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["labels"] == ["happy", "sad"] and m["trained_with"] == ["happy", "sad", "other"]
    # Never neutral: every neutral face is called happy or sad.
    assert m["ferplus"]["neutral_called_expression"] == 1.0
    res = run_module(
        "export", out, "--calib-samples", "40", "--max-drop", "100", "--formats", "tflite-int8", timeout=600
    )
    assert res.returncode == 0, res.stderr
    model = out / "export" / "model_int8.tflite"
    assert list(read_metadata(model).labels) == ["happy", "sad"]
    bench = bench_split(model, out, tmp_path)
    assert bench.returncode == 0, bench.stderr
    assert json.loads((tmp_path / "b.json").read_text())["results"][0]["ferplus"]["forced"] is not None


#: Where a class name may be written out: FER+'s columns and the table
#: mapping class names to them, the class the three-way figure calls
#: "neither", the preview's fixed colours, and the default classes of a run
#: on votes. Everywhere else the model's labels are used.
ALLOWED = {
    ("edge/votes.py", "CLASS_TO_EMOTION"),
    ("edge/votes.py", "EMOTIONS"),
    ("edge/metrics.py", "NEUTRAL"),
    ("edge/camera/outputs/draw.py", "LABEL_COLORS"),
    ("train/split.py", "DEFAULT_VOTE_CLASSES"),
}


def test_no_module_hard_codes_the_class_names():
    found = []
    for package in ("edge", "train", "export", "benchmarks"):
        for path in sorted((REPO / package).rglob("*.py")):
            if "_vendor" in path.parts:  # third-party code, unmodified
                continue
            tree = ast.parse(path.read_text())
            owners = {}
            for node in ast.walk(tree):
                if isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for t in targets:
                        for sub in ast.walk(node.value) if node.value is not None else ():
                            if isinstance(t, ast.Name):
                                owners[id(sub)] = t.id
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in ("happy", "sad", "neutral"):
                    rel = path.relative_to(REPO).as_posix()
                    if (rel, owners.get(id(node))) not in ALLOWED:
                        found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert not found, found
