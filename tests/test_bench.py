"""The benchmark library: statistics, timing loop, per-stage path, cost, cold
start, reports and the README step, on the synthetic faces' models."""

import csv
import io
import time

import numpy as np
import pytest

from happysad.benchmarks.coldstart import cold_start
from happysad.benchmarks.cost import layer_macs, onnx_cost
from happysad.benchmarks.readme import END, START, replace_between_markers
from happysad.benchmarks.report import compare_reports
from happysad.benchmarks.runners import EdgeRunner, KerasRunner
from happysad.benchmarks.timing import STAGES, fps, percentiles, time_stages
from happysad.edge import Classifier, HappysadError, load_image, preprocess
from happysad.edge.dataset import labelled_images

from helpers import FakeClock

MODELS = ("model_float32.tflite", "model_int8.tflite", "model_float32.onnx", "model_int8.onnx")


def decodable(dataset):
    """(labels, [(image, class index)]) of the dataset's files that decode
    (the fixture adds empty, truncated and corrupt ones)."""
    labels, items = labelled_images(dataset)
    out = []
    for path, y in items:
        try:
            out.append((load_image(path), y))
        except HappysadError:
            continue
    return labels, out


def test_percentiles_follow_linear_interpolation_between_ranks():
    samples = np.random.default_rng(0).permutation(np.arange(1.0, 102.0))  # 1..101, shuffled
    s = percentiles(samples)
    # 101 samples: the q-th percentile sits at rank q * 100, an integer, so it is that sample.
    assert (s["min"], s["p50"], s["p90"], s["p99"], s["max"]) == (1.0, 51.0, 91.0, 100.0, 101.0)
    assert s["mean"] == pytest.approx(51.0)
    assert s["std"] == pytest.approx(np.sqrt((101**2 - 1) / 12))  # discrete uniform
    assert fps(s["p50"]) == pytest.approx(1000 / 51)


def test_time_stages_feeds_each_stage_and_honours_runs_warmup_and_min_seconds(monkeypatch):
    calls = []
    stages = (lambda: calls.append("pre") or 3, lambda x: x * 2, lambda x: calls.append(x))
    rows = time_stages(stages, runs=5, warmup=2, min_seconds=0)
    assert rows.shape == (5, 3) and (rows >= 0).all()
    assert calls == ["pre", 6] * 7  # 2 warm-up + 5 timed, each fed its predecessor's value
    # On a clock that moves 8 ms per run (and only when a stage runs), 0.05 s of runs is exactly 7.
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    rows = time_stages([lambda: clock.advance(0.008)], runs=1, warmup=0, min_seconds=0.05)
    assert len(rows) == 7 and clock() == pytest.approx(0.056)


def test_time_stages_puts_each_stage_in_its_column(monkeypatch):
    """Each stage's time in its own column, in ms: on a clock the stages
    themselves move (1, 5 and 2 ms), exactly those; warm-up runs are not rows."""
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    stages = (lambda: clock.advance(0.001), lambda _: clock.advance(0.005), lambda _: clock.advance(0.002))
    rows = time_stages(stages, runs=10, warmup=3)
    np.testing.assert_allclose(rows, [[1.0, 5.0, 2.0]] * 10)


@pytest.mark.parametrize("name", MODELS)
def test_stage_path_gives_the_scores_and_label_of_classifier(export_dir, dataset, name):
    runner = EdgeRunner(export_dir / name)
    clf = Classifier(export_dir / name)
    _, items = decodable(dataset)
    for image, _ in items[::10]:
        pre, invoke, post = runner.stages(image)
        label = post(invoke(pre()))
        pixels = preprocess(image, clf.metadata.image_size, clf.metadata.color)
        assert label == clf.predict_index(clf.scores(pixels))
        assert runner.clf.backend.get_output() == pytest.approx(clf.backend.run(pixels), abs=1e-6)
    assert runner.load_ms > 0 and runner.backend in ("litert", "tflite-runtime", "onnxruntime")


def test_every_format_counts_the_same_macs_as_training(export_dir, run_dir):
    import keras

    from happysad.train.models import count_macs

    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True, compile=False)
    costs = {name: EdgeRunner(export_dir / name).cost() for name in MODELS}
    keras_params, keras_macs = KerasRunner(run_dir / "model.keras", ["happy", "sad"]).cost()
    assert keras_macs == count_macs(model) > 0
    assert {macs for _, macs in costs.values()} == {keras_macs}
    # BatchNorm folds into the convolutions on export: fewer parameters, same order.
    for params, _ in costs.values():
        assert 0.9 * keras_params < params < keras_params
    assert costs["model_float32.onnx"][0] == costs["model_int8.onnx"][0]


def test_layer_macs_of_a_convolution_and_a_depthwise_one():
    # Conv 3x3, 8 -> 16 channels, 10x10 output: H.W.C_out.k.k.C_in.
    assert layer_macs(10 * 10 * 16, (16, 3, 3, 8), 16) == 10 * 10 * 16 * 3 * 3 * 8
    # Depthwise 3x3 over 16 channels, TFLite weight (1, 3, 3, 16): H.W.C.k.k.
    assert layer_macs(10 * 10 * 16, (1, 3, 3, 16), 16) == 10 * 10 * 16 * 3 * 3


def test_onnx_cost_is_not_available_without_the_onnx_package(export_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)
    assert onnx_cost(export_dir / "model_int8.onnx") == (None, None)


def test_keras_runner_agrees_with_the_float_tflite_file(export_dir, run_dir, dataset):
    labels, items = decodable(dataset)
    images = [image for image, _ in items]
    keras_preds = KerasRunner(run_dir / "model.keras", labels).predict(images)
    tflite_preds = EdgeRunner(export_dir / "model_float32.tflite").predict(images)
    assert np.mean(keras_preds == tflite_preds) >= 0.98
    y = np.array([y for _, y in items])
    assert np.mean(keras_preds == y) >= 0.8


def test_keras_runner_refuses_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(HappysadError, match=r"model\.keras: not a loadable Keras model"):
        KerasRunner(bad, ["happy", "sad"])


def test_cold_start_measures_a_fresh_process(export_dir, dataset, run_dir):
    image = dataset / "happy" / "happy_000.png"
    edge_cold = cold_start(export_dir / "model_int8.tflite", image, runs=2)
    keras_cold = cold_start(run_dir / "model.keras", image, runs=1)
    assert len(edge_cold["runs_ms"]) == 2 and edge_cold["ms"] > 0
    # A Python process with numpy and OpenCV holds tens of MB; TensorFlow holds far more.
    assert 20 < edge_cold["peak_rss_mb"] < keras_cold["peak_rss_mb"]
    assert [st["stage"] for st in edge_cold["stages"]] == [
        "python",
        "numpy",
        "opencv",
        "edge",
        "interpreter library",
        "model",
        "decode",
        "classify",
    ]
    assert [st["stage"] for st in keras_cold["stages"]] == [
        "python",
        "numpy",
        "opencv",
        "tensorflow + keras",
        "edge",
        "model",
        "decode",
        "classify",
    ]
    for cold in (edge_cold, keras_cold):
        peaks = [st["peak_rss_mb"] for st in cold["stages"]]
        assert peaks == sorted(peaks) and all(st["ms"] > 0 for st in cold["stages"])
    # One run: its stages add up to its total and end at its peak.
    assert sum(st["ms"] for st in keras_cold["stages"]) == pytest.approx(keras_cold["ms"])
    assert keras_cold["stages"][-1]["peak_rss_mb"] == keras_cold["peak_rss_mb"]
    # TensorFlow's import is what makes the Keras process heavy.
    tf_stage = keras_cold["stages"][3]
    assert tf_stage["peak_rss_mb"] - keras_cold["stages"][2]["peak_rss_mb"] > edge_cold["peak_rss_mb"]
    assert cold_start(export_dir / "model_int8.tflite", image, runs=0) is None


def test_cold_start_of_a_broken_model_names_it(tmp_path, dataset):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(HappysadError, match=r"broken\.tflite: cold-start process failed"):
        cold_start(bad, dataset / "happy" / "happy_000.png", runs=1)


def _report(p50s, accuracies):
    return {
        "results": [
            {"model": f"m{i}.tflite", "name": f"m{i}.tflite", "threads": None, "latency_ms": {"p50": p}, "accuracy": a}
            for i, (p, a) in enumerate(zip(p50s, accuracies))
        ]
    }


def test_compare_flags_only_what_is_beyond_tolerance():
    old = _report([1.0, 1.0, 1.0], [0.90, 0.90, 0.90])
    new = _report([1.19, 1.30, 1.0], [0.90, 0.90, 0.894])
    reasons = compare_reports(new, old, tolerance_pct=20, tolerance_pp=0.5)
    assert len(reasons) == 2
    assert reasons[0].startswith("m1.tflite (threads default): p50 1.300 ms vs 1.000 ms before (+30%")
    assert reasons[1].startswith("m2.tflite (threads default): accuracy 0.8940 vs 0.9000 before (-0.60 pp")
    assert compare_reports(new, old, tolerance_pct=40, tolerance_pp=1) == []
    assert compare_reports(_report([9.0], [0.1]), _report([], [])) == []  # nothing to match


def test_readme_step_replaces_only_between_the_markers():
    text = f"# title\n\nintro\n{START}\nold table\n{END}\n\nafter, kept\n"
    new = replace_between_markers(text, "| new | table |\n\n")
    assert new == f"# title\n\nintro\n{START}\n| new | table |\n{END}\n\nafter, kept\n"
    assert replace_between_markers(new, "| new | table |") == new
    with pytest.raises(HappysadError, match="must appear exactly once"):
        replace_between_markers("no markers", "x")
    with pytest.raises(HappysadError, match="must appear exactly once"):
        replace_between_markers(text + START, "x")
    with pytest.raises(HappysadError, match="comes before"):
        replace_between_markers(f"{END}\n{START}\n", "x")


def test_csv_has_one_row_per_model_and_thread_count(bench_report):
    from happysad.benchmarks.report import format_csv

    text = format_csv(bench_report)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    assert len(rows) == len(bench_report["results"])
    for row, r in zip(rows, bench_report["results"]):
        assert float(row["latency_p50_ms"]) == pytest.approx(r["latency_ms"]["p50"])
        assert sum(float(row[f"{s}_mean_ms"]) for s in STAGES) == pytest.approx(r["latency_ms"]["mean"], rel=1e-6)


@pytest.fixture(scope="module")
def bench_report(export_dir, run_dir):
    from happysad.benchmarks.bench import BenchOptions, run_bench

    return run_bench(
        BenchOptions(
            models=[str(export_dir / "model_int8.tflite"), str(export_dir / "model_int8.onnx")],
            split=str(run_dir / "split.json"),
            threads=[1, 2],
            runs=10,
            warmup=1,
            cold_runs=0,
        )
    )


def test_thread_sweep_gives_a_row_per_count_and_one_accuracy(bench_report):
    rows = bench_report["results"]
    assert [(r["name"], r["threads"]) for r in rows] == [
        ("model_int8.tflite", 1),
        ("model_int8.tflite", 2),
        ("model_int8.onnx", 1),
        ("model_int8.onnx", 2),
    ]
    assert rows[0]["predictions"] == rows[1]["predictions"]
    for r in rows:
        assert r["cold_start"] is None and r["speedup"] is None
        assert len(r["samples_ms"]) == 10
        assert r["first_ms"] > 0 and r["load_ms"] > 0
        assert sum(r["stages_ms"][s]["mean"] for s in STAGES) == pytest.approx(r["latency_ms"]["mean"])
