"""``python -m happysad.benchmarks.edge_speed``: the edge runtime's goals, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO, assert_one_line_error

PROG = [sys.executable, "-m", "happysad.benchmarks.edge_speed"]


@pytest.fixture(scope="module")
def speed(export_dir, run_dir, real_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("speed")
    res = subprocess.run(
        PROG
        + [
            str(export_dir / "model_int8.tflite"),
            "--keras",
            str(run_dir / "model.keras"),
            "--data",
            str(real_data),
            "--frames",
            "40",
            "--runs",
            "300",
            "--cold-runs",
            "1",
            "--workdir",
            str(out / "work"),
            "--json",
            str(out / "speed.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return res, json.loads((out / "speed.json").read_text())


def test_figures_are_ratios_of_what_was_measured(speed):
    res, fig = speed
    assert res.returncode in (0, 3), res.stderr
    assert fig["per_face_over_invoke"] == pytest.approx(fig["per_face_p50_ms"] / fig["invoke_p50_ms"])
    assert fig["per_face_p50_ms"] > 0 and fig["invoke_p50_ms"] > 0
    assert fig["loop_over_allowed"] == pytest.approx(fig["loop_fps"] / fig["allowed_fps"])
    assert fig["frames"] == 40 and 0 < fig["frames_with_face"] <= 40
    assert fig["cold_speedup"] == pytest.approx(fig["keras_ms"] / fig["edge_ms"])
    assert fig["cold_memory"] == pytest.approx(fig["keras_peak_rss_mb"] / fig["edge_peak_rss_mb"])
    # The floor: the edge process's first stages (Python, numpy, OpenCV, the
    # interpreter library), their times summed; its ratios are Keras's over it.
    # (Which of two measured times is smaller is for the benchmark's report,
    # not a test: a loaded machine can swap them.)
    floor = [st for st in fig["edge_stages"] if st["stage"] in ("python", "numpy", "opencv", "interpreter library")]
    assert len(floor) == 4
    assert fig["floor_ms"] == pytest.approx(sum(st["ms"] for st in floor))
    assert fig["floor_speedup"] == pytest.approx(fig["keras_ms"] / fig["floor_ms"])
    assert fig["floor_memory"] == pytest.approx(fig["keras_peak_rss_mb"] / fig["floor_peak_rss_mb"])
    assert 0 < fig["floor_peak_rss_mb"] < fig["edge_peak_rss_mb"]  # memory: the floor is part of the process
    assert fig["edge_stages"][-1]["peak_rss_mb"] == fig["edge_peak_rss_mb"]
    dets = fig["detectors"]
    assert set(dets) == {"yunet", "blazeface", "blazeface-full", "haar"}
    for d in dets.values():
        assert d["detect_speedup_vs_haar"] == pytest.approx(dets["haar"]["detect_p50_ms"] / d["detect_p50_ms"])
        assert d["loop_speedup_vs_haar"] == pytest.approx(d["loop_fps"] / dets["haar"]["loop_fps"])
        assert 0 < d["detect_share"] < 1 and d["frames_with_face"] > 0
    assert fig["detect_speedup_vs_haar"] == dets["blazeface"]["detect_speedup_vs_haar"]  # the camera's default


def test_output_names_every_figure_and_exit_3_lists_the_missed_goals(speed):
    res, fig = speed
    out = res.stdout
    for text in (
        "per-face path p50",
        "camera loop",
        "cold start to first prediction",
        "  edge: python",
        "  Keras: python",
        "tensorflow + keras",
        "the floor",
        "detector yunet: p50",
        "detector haar: p50",
        "the camera's default detector blazeface",
    ):
        assert text in out
    goals = fig["goals"]
    missed = [k for k, goal in goals.items() if (fig[k] > goal if k == "per_face_over_invoke" else fig[k] < goal)]
    if missed:
        assert res.returncode == 3
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("python -m happysad.benchmarks.edge_speed: missed (exit 3, a goal, not a crash): ")
        assert [part.split()[0] for part in last.split(": ", 2)[2].split("; ")] == missed
    else:
        assert res.returncode == 0


def test_missing_keras_model_is_a_usage_error_before_any_work(export_dir, tmp_path):
    res = subprocess.run(
        PROG
        + [
            str(export_dir / "model_int8.tflite"),
            "--keras",
            str(tmp_path / "none.keras"),
            "--data",
            str(tmp_path),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(res, 2, r"none\.keras: no such Keras model; check --keras")
    assert not (tmp_path / "work").exists()
