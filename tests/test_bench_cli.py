"""happysad-bench as a user runs it: every output, the gates, --compare and
its one-line errors."""

import csv
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from happysad.edge import Classifier, preprocess

from helpers import QUICK_BENCH, REPO, assert_one_line_error

MODELS = ("model_float32.tflite", "model_int8.tflite", "model_float32.onnx", "model_int8.onnx")
#: Few timed runs and no cold start: for tests about reports and gates, not speed.


def bench(*args, timeout=300, prelude=""):
    code = f"import sys; {prelude}from benchmarks.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def gate_lines(res):
    return [line for line in res.stderr.splitlines() if line.startswith("happysad-bench: ")]


@pytest.fixture(scope="module")
def full_run(export_dir, run_dir, tmp_path_factory):
    """The whole suite once: four files and the Keras model, threads 1,2, every output."""
    out = tmp_path_factory.mktemp("bench")
    res = bench(
        *(export_dir / m for m in MODELS),
        run_dir / "model.keras",
        "--split",
        run_dir / "split.json",
        "--threads",
        "1,2",
        "--runs",
        "20",
        "--warmup",
        "2",
        "--cold-runs",
        "1",
        "--json",
        out / "b.json",
        "--csv",
        out / "b.csv",
        "--markdown",
        out / "b.md",
        "--plot",
        out / "b.png",
    )
    assert res.returncode == 0, res.stderr
    return res, out, json.loads((out / "b.json").read_text())


def test_full_run_has_a_row_per_model_and_thread_count(full_run):
    res, _, report = full_run
    keys = [(r["name"], r["threads"]) for r in report["results"]]
    assert keys == [(m, t) for m in MODELS for t in (1, 2)] + [("model.keras", None)]
    stdout_rows = res.stdout.splitlines()[1 : len(keys) + 1]
    assert [line.split()[0] for line in stdout_rows] == [k[0] for k in keys]
    for col in ("FPS", "load", "size", "threads"):
        assert col in res.stdout.splitlines()[0].split()
    assert "[5/5] " in res.stderr  # progress


def test_full_run_ratios_read_against_keras(full_run):
    _, _, report = full_run
    rows = {(r["name"], r["threads"]): r for r in report["results"]}
    keras_row = rows[("model.keras", None)]
    assert keras_row["format"] == "keras-float32" and keras_row["backend"].startswith("keras-")
    assert keras_row["speedup"] == pytest.approx(1.0) and keras_row["memory_ratio"] == pytest.approx(1.0)
    for r in report["results"]:
        assert r["speedup"] == pytest.approx(keras_row["latency_ms"]["p50"] / r["latency_ms"]["p50"])
        assert r["memory_ratio"] == pytest.approx(
            keras_row["cold_start"]["peak_rss_mb"] / r["cold_start"]["peak_rss_mb"]
        )
        assert r["cold_start"]["ms"] > 0
        assert r["macs"] == keras_row["macs"] > 0
    # The edge runtime does not import TensorFlow: its process is lighter.
    assert rows[("model_int8.tflite", 1)]["memory_ratio"] > 1.5
    assert rows[("model_int8.tflite", 1)]["reference"].endswith("model_float32.tflite")


def test_full_run_writes_csv_markdown_and_plot(full_run):
    _, out, report = full_run
    lines = [line for line in (out / "b.csv").read_text().splitlines() if not line.startswith("#")]
    rows = list(csv.DictReader(lines))
    assert [(r["name"], r["threads"]) for r in rows] == [
        (r["name"], "" if r["threads"] is None else str(r["threads"])) for r in report["results"]
    ]
    assert report["machine"]["cpu"] in (out / "b.csv").read_text().splitlines()[0]
    md = (out / "b.md").read_text()
    for col in (
        "| model | runtime | threads | size MB | params | MMACs | load ms | first ms",
        "p50 ms",
        "p99 ms",
        "FPS",
        "cold start ms",
        "peak RSS MB",
        "speed-up",
        "| model | accuracy | balanced acc. | precision | recall | F1 | confusion matrix",
        "drop pp",
        "agreement",
        report["machine"]["cpu"],
    ):
        assert col in md
    # a latency row and an accuracy row
    assert sum(line.startswith("| `model.keras` |") for line in md.splitlines()) == 2
    image = cv2.imread(str(out / "b.png"))
    assert image is not None and image.shape[1] > 800


def test_gates_pass_when_every_model_meets_them(export_dir, run_dir):
    res = bench(
        export_dir / "model_int8.tflite",
        "--split",
        run_dir / "split.json",
        *QUICK_BENCH,
        "--max-p50-ms",
        "10000",
        "--min-accuracy",
        "0",
        "--max-drop",
        "100",
    )
    assert res.returncode == 0, res.stderr
    assert gate_lines(res) == []


def test_flip_rows_have_their_own_accuracy_row_and_twice_the_macs(export_dir, run_dir, tmp_path):
    res = bench(
        export_dir / "model_int8.tflite",
        "--split",
        run_dir / "split.json",
        "--tta",
        "flip",
        *QUICK_BENCH,
        "--json",
        tmp_path / "b.json",
        "--markdown",
        tmp_path / "b.md",
    )
    assert res.returncode == 0, res.stderr
    plain, flip = json.loads((tmp_path / "b.json").read_text())["results"]
    assert (plain["tta"], flip["tta"]) == ("none", "flip")
    assert flip["macs"] == 2 * plain["macs"] > 0
    md = (tmp_path / "b.md").read_text()
    accuracy_table = md.split("| model | accuracy |")[1]
    for row in (plain, flip):
        assert f"| `{row['name']}` | {row['accuracy']:.4f} | {row['balanced_accuracy']:.4f} |" in accuracy_table


def test_max_p50_gate_fails_with_the_reason_and_still_writes_the_report(export_dir, run_dir, tmp_path):
    res = bench(
        export_dir / "model_int8.tflite",
        "--split",
        run_dir / "split.json",
        *QUICK_BENCH,
        "--max-p50-ms",
        "0.000001",
        "--json",
        tmp_path / "b.json",
    )
    assert res.returncode == 3, res.stderr
    lines = gate_lines(res)
    assert len(lines) == 1
    assert lines[0].startswith("happysad-bench: gate failed: model_int8.tflite (threads default): p50 ")
    assert lines[0].endswith("ms exceeds --max-p50-ms 1e-06")
    assert "model_int8.tflite" in res.stdout and "Traceback" not in res.stderr
    assert json.loads((tmp_path / "b.json").read_text())["gates"]["failed"] == [lines[0].split("failed: ")[1]]


def test_min_accuracy_gate_fails_on_mislabelled_images(export_dir, dataset, tmp_path):
    # The same faces filed under the other label: the model is right on the
    # faces and so wrong on (nearly) every label.
    swapped = tmp_path / "swapped"
    shutil.copytree(dataset / "happy", swapped / "sad")
    shutil.copytree(dataset / "sad", swapped / "happy")
    res = bench(export_dir / "model_int8.tflite", "--data", swapped, *QUICK_BENCH, "--min-accuracy", "0.5")
    assert res.returncode == 3, res.stderr
    lines = gate_lines(res)
    assert len(lines) == 1 and "gate failed: model_int8.tflite (threads default): accuracy 0." in lines[0]
    assert lines[0].endswith("is below --min-accuracy 0.5")


def _blend_where(float_clf, int8_clf, a, b):
    """An image between faces a and b that the two models label differently, or None.

    Bisects the blend weight to where each model's label flips; between the
    two flips the labels differ.
    """

    def label(clf, w):
        image = np.clip((1 - w) * a + w * b + 0.5, 0, 255).astype(np.uint8)
        return clf.predict_index(clf.scores(preprocess(image, (48, 48), "gray"))), image

    def flip(clf):
        lo, hi = 0.0, 1.0
        if label(clf, lo)[0] == label(clf, hi)[0]:
            return None
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if label(clf, mid)[0] == label(clf, 0.0)[0] else (lo, mid)
        return (lo + hi) / 2

    wf, wq = flip(float_clf), flip(int8_clf)
    if wf is None or wq is None:
        return None
    for w in np.linspace(min(wf, wq), max(wf, wq), 9):
        (lf, image), (lq, _) = label(float_clf, w), label(int8_clf, w)
        if lf != lq:
            return image, lf
    return None


def test_max_drop_gate_fails_when_int8_loses_images_the_float_model_gets(export_dir, dataset, tmp_path):
    float_clf = Classifier(export_dir / "model_float32.tflite")
    int8_clf = Classifier(export_dir / "model_int8.tflite")
    found = []
    for i in range(20):
        a = cv2.imread(str(dataset / "happy" / f"happy_{i:03d}.png"), cv2.IMREAD_GRAYSCALE).astype(np.float64)
        b = cv2.imread(str(dataset / "sad" / f"sad_{i:03d}.png"), cv2.IMREAD_GRAYSCALE).astype(np.float64)
        hit = _blend_where(float_clf, int8_clf, a, b)
        if hit is not None:
            found.append(hit)
        if len(found) == 3:
            break
    assert found, "no blend that float32 and int8 label differently"
    data = tmp_path / "data"
    for i, (image, label_index) in enumerate(found):  # filed under the float model's label
        folder = data / float_clf.labels[label_index]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"blend_{i}.png"), image)
    for label in float_clf.labels:
        (data / label).mkdir(parents=True, exist_ok=True)
    res = bench(
        export_dir / "model_float32.tflite",
        export_dir / "model_int8.tflite",
        "--data",
        data,
        *QUICK_BENCH,
        "--max-drop",
        "1",
    )
    assert res.returncode == 3, res.stderr
    lines = gate_lines(res)
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(
        "happysad-bench: gate failed: model_int8.tflite (threads default): accuracy drop 100.00 pp exceeds --max-drop 1"
    )


@pytest.fixture(scope="module")
def earlier(export_dir, run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("earlier") / "old.json"
    res = bench(
        export_dir / "model_int8.tflite",
        "--split",
        run_dir / "split.json",
        "--runs",
        "20",
        "--warmup",
        "2",
        "--cold-runs",
        "0",
        "--json",
        out,
    )
    assert res.returncode == 0, res.stderr
    return out


def test_compare_with_itself_within_tolerance_passes(export_dir, run_dir, earlier):
    res = bench(
        export_dir / "model_int8.tflite",
        "--split",
        run_dir / "split.json",
        "--runs",
        "20",
        "--warmup",
        "2",
        "--cold-runs",
        "0",
        "--compare",
        earlier,
        "--tolerance",
        "100000",
    )
    assert res.returncode == 0, res.stderr
    assert f"no regression against {earlier}" in res.stderr


def test_compare_flags_slower_and_less_accurate_models(export_dir, run_dir, earlier, tmp_path):
    old = json.loads(earlier.read_text())
    for r in old["results"]:  # an earlier run that was 1000x faster and more accurate
        r["latency_ms"]["p50"] /= 1000
        r["accuracy"] += 0.02
    faster = tmp_path / "faster.json"
    faster.write_text(json.dumps(old))
    res = bench(
        export_dir / "model_int8.tflite",
        "--split",
        run_dir / "split.json",
        *QUICK_BENCH,
        "--compare",
        faster,
        "--json",
        tmp_path / "new.json",
    )
    assert res.returncode == 3, res.stderr
    lines = gate_lines(res)
    assert len(lines) == 2
    assert lines[0].startswith("happysad-bench: regression: model_int8.tflite (threads default): p50 ")
    assert "tolerance 20%" in lines[0]
    assert lines[1].startswith("happysad-bench: regression: model_int8.tflite (threads default): accuracy ")
    assert lines[1].endswith("(-2.00 pp, tolerance 0.5 pp)")
    new = json.loads((tmp_path / "new.json").read_text())
    assert len(new["compare"]["regressions"]) == 2


def test_compare_with_a_missing_or_foreign_file(export_dir, run_dir, tmp_path):
    res = bench(export_dir / "model_int8.tflite", "--split", run_dir / "split.json", "--compare", tmp_path / "old.json")
    assert_one_line_error(res, 2, r"old\.json: no such benchmark report; check the path")
    (tmp_path / "split.json").write_text(json.dumps({"labels": []}))
    res = bench(
        export_dir / "model_int8.tflite", "--split", run_dir / "split.json", "--compare", tmp_path / "split.json"
    )
    assert_one_line_error(res, 1, r"split\.json: not a happysad-bench report; write one with --json")


@pytest.mark.parametrize(
    "args,pattern",
    [
        (("--threads", "0"), r"argument -t/--threads: '0': 0 must be at least 1; give counts like 1,2,4"),
        (("--threads", "1,x"), r"'1,x': 'x' is not an integer"),
        (("--min-accuracy", "90"), r"90 must be between 0 and 1 \(0\.9 for 90%\)"),
        (("--max-p50-ms", "-1"), r"-1 must be 0 or more"),
        (("--min-seconds", "soon"), r"'soon' is not a number"),
    ],
)
def test_bad_flag_values_are_usage_errors(args, pattern):
    assert_one_line_error(bench("m.tflite", "--split", "s.json", *args), 2, pattern)


def test_keras_model_without_tensorflow_says_to_install_the_train_extra(run_dir, export_dir):
    res = bench(
        export_dir / "model_int8.tflite",
        run_dir / "model.keras",
        "--split",
        run_dir / "split.json",
        prelude="sys.modules['keras'] = None; ",
    )
    assert_one_line_error(res, 1, r"a \.keras model needs TensorFlow; pip install 'happysad\[train\]'")


def test_plot_without_matplotlib_says_what_to_do(run_dir, export_dir, tmp_path):
    res = bench(
        export_dir / "model_int8.tflite",
        "--split",
        run_dir / "split.json",
        "--plot",
        tmp_path / "p.png",
        prelude="sys.modules['matplotlib'] = None; ",
    )
    assert_one_line_error(res, 1, r"--plot needs matplotlib: pip install 'happysad\[train\]'")
    assert not (tmp_path / "p.png").exists()


def test_missing_keras_model(tmp_path, run_dir):
    res = bench(tmp_path / "model.keras", "--split", run_dir / "split.json")
    assert_one_line_error(res, 2, r"model\.keras: no such model file; check the path")


def test_readme_step_copies_the_markdown_and_refuses_a_file_without_markers(full_run, tmp_path):
    _, out, _ = full_run
    readme = tmp_path / "README.md"
    readme.write_text("# results\n\n<!-- bench:start -->\nSTALE-TABLE\n<!-- bench:end -->\n\nkept\n")
    res = subprocess.run(
        [sys.executable, "-m", "happysad.benchmarks.readme", out / "b.md", readme],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    text = readme.read_text()
    assert "STALE-TABLE" not in text and (out / "b.md").read_text().strip() in text and text.endswith("\n\nkept\n")
    readme.write_text("# no markers\n")
    res = subprocess.run(
        [sys.executable, "-m", "happysad.benchmarks.readme", out / "b.md", readme],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert_one_line_error(res, 1, r"README\.md: the marker <!-- bench:start --> must appear exactly once")
    assert readme.read_text() == "# no markers\n"


def test_readme_step_makes_one_summary_table_from_the_json_report(full_run, tmp_path):
    _, out, _ = full_run
    report = json.loads((out / "b.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text("# results\n\n<!-- bench:start -->\nSTALE\n<!-- bench:end -->\n")
    res = subprocess.run(
        [sys.executable, "-m", "happysad.benchmarks.readme", out / "b.json", readme],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    block = readme.read_text().split("<!-- bench:start -->")[1].split("<!-- bench:end -->")[0]
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    names = list(dict.fromkeys(r["name"] for r in report["results"]))
    # One row per model file (at its fewest threads), then the peer's.
    assert [row.split("`")[1] for row in rows] == [*names, "fer"]
    one_thread = {r["name"]: r for r in report["results"] if r.get("threads") in (1, None)}
    for row, name in zip(rows, names):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[3] == f"{one_thread[name]['latency_ms']['p50']:.3f}"
    assert block.count("\n| ---") == 1  # one table
    # No machine's absolute path in what the tools write for others.
    for text in (block, (out / "b.md").read_text(), json.dumps(report["settings"])):
        assert str(REPO) not in text and "/tmp/" not in text


def test_no_data_measures_latency_and_memory_only(export_dir, tmp_path):
    """happysad-bench MODEL with no data: latency on a synthetic input and peak RSS, marked as having no accuracy."""
    out = tmp_path / "lat.json"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "happysad.benchmarks",
            str(export_dir / "model_int8.tflite"),
            "--runs",
            "50",
            "--cold-runs",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "no accuracy: no data" in res.stdout and "p99 ms" in res.stdout and "peak RSS MB" in res.stdout
    (row,) = json.loads(out.read_text())["results"]
    assert "accuracy" not in row and row["latency_ms"]["p99"] >= row["latency_ms"]["p50"] > 0
    assert row["cold_start"]["peak_rss_mb"] > 20 and len(row["samples_ms"]) >= 50
    res = subprocess.run(
        [sys.executable, "-m", "happysad.benchmarks", str(export_dir / "model_int8.tflite"), "--max-drop", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert res.returncode == 1 and "need labelled data" in res.stderr


def test_demo_end_benchmarks_what_passed_and_names_a_refusal(run_dir, export_dir, tmp_path):
    """The end of make demo: with every file written it benchmarks and classifies, exit 0;
    with a file refused it still reports, names the file and exits 1 at the end."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("logs", "export"))
    shutil.copytree(export_dir, run / "export")
    res = subprocess.run(
        [sys.executable, "-m", "happysad.benchmarks.demo", str(run), "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((run / "bench.json").read_text())["results"]
    assert "REFUSED" not in res.stderr
    # A negative --max-drop refuses even a file that loses nothing.
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "happysad.export",
            str(run),
            "--formats",
            "tflite-int8",
            "--max-drop",
            "-1",
            "--calib-samples",
            "40",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert res.returncode == 1
    res = subprocess.run(
        [sys.executable, "-m", "happysad.benchmarks.demo", str(run), "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert res.returncode == 1
    assert "make demo: REFUSED model_int8.tflite" in res.stderr and "not written" in res.stderr


def test_flags_page_is_what_the_parsers_say():
    """docs/flags.md is generated from the four tools' parsers (make docs): it
    cannot drift from the flags, their defaults and their help."""
    from happysad.benchmarks.flags import page

    assert (REPO / "docs" / "flags.md").read_text() == page(), "docs/flags.md is stale: run make docs"
    for flag in ("--min-confidence", "--tta", "--public-key", "--aux", "--sign", "--to"):
        assert f"`{flag}`" in page()
