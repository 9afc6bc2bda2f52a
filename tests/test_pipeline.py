"""Train -> export -> edge -> bench on the synthetic faces."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from happysad.edge import Classifier, load_image, preprocess, read_metadata
from happysad.edge.dataset import read_split, split_items

from helpers import REPO, build_wheel

MODELS = ("model_float32.tflite", "model_int8.tflite", "model_float32.onnx", "model_int8.onnx")


def test_training_writes_every_artifact(run_dir):
    for name in ("model.keras", "split.json", "history.csv", "metrics.json", "config.json", "data_report.json"):
        assert (run_dir / name).stat().st_size > 0, name
    m = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "accuracy",
        "balanced_accuracy",
        "precision",
        "recall",
        "f1",
        "confusion_matrix",
        "roc_auc",
        "parameters",
        "macs_per_image",
        "train_seconds",
    ):
        assert key in m
    assert m["accuracy"] >= 0.8, m  # drawn smiles and frowns are easy
    assert m["threshold"] == 0.5 and m["threshold_source"] == "default"
    assert m["macs_per_image"] <= 20e6 and m["parameters"] > 0
    for name in ("curves.png", "confusion_matrix.png", "samples.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert list((run_dir / "logs" / "train").glob("events.out.tfevents.*")), "no TensorBoard log"
    assert not (run_dir / "cache").exists(), "the decoded-image cache was left behind"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["seed"] == 1 and config["epochs"] == 8 and config["versions"]["tensorflow"]
    header = (run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["epoch", "accuracy", "loss"] and "val_accuracy" in header


def test_saved_model_has_no_augmentation(run_dir):
    import keras

    model = keras.saving.load_model(run_dir / "model.keras")
    names = [type(layer).__name__ for layer in model.layers]
    assert names[1] == "Rescaling" and not [n for n in names if n.startswith("Random")]
    x = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1)).astype(np.float32)
    # Deterministic: no random layer is active at inference.
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))


def test_threshold_tuned_on_validation_mirrored_memory_cache(dataset, run_dir, tmp_path):
    """--tune-threshold picks the best balanced accuracy on the validation split; the same
    seed gives the same split; --strategy mirrored and --cache memory train too."""
    import keras

    from happysad.edge.metrics import best_threshold
    from happysad.train.cli import main

    out = tmp_path / "tuned"
    assert (
        main(
            [
                str(dataset),
                "--out",
                str(out),
                "--epochs",
                "2",
                "--seed",
                "1",
                "--arch",
                "seed",
                "--tune-threshold",
                "--strategy",
                "mirrored",
                "--cache",
                "memory",
            ]
        )
        == 0
    )
    first, second = (json.loads((d / "split.json").read_text()) for d in (run_dir, out))
    assert all(first[p] == second[p] for p in ("train", "val", "test"))
    m = json.loads((out / "metrics.json").read_text())
    assert m["arch"] == "seed" and m["threshold_source"] == "validation"
    split = read_split(out / "split.json")
    items = split_items(split, "val")
    model = keras.saving.load_model(out / "model.keras")
    probs = model.predict(np.stack([preprocess(load_image(p)) for p, _ in items]).astype(np.float32), verbose=0).ravel()
    assert m["threshold"] == pytest.approx(best_threshold([y for _, y in items], probs), abs=1e-6)
    assert m["validation"]["threshold"] == m["threshold"]


def test_split_file_is_complete_and_leak_free(run_dir, dataset):
    split = read_split(run_dir / "split.json")
    parts = {p: split[p] for p in ("train", "val", "test")}
    assert sum(len(v) for v in parts.values()) == 121
    for part in parts.values():
        for e in part:
            assert hashlib.sha256((dataset / e["path"]).read_bytes()).hexdigest() == e["sha256"]
    digests = [{e["sha256"] for e in v} for v in parts.values()]
    assert not (digests[0] & digests[1] or digests[0] & digests[2] or digests[1] & digests[2])
    skipped = {x["path"] for x in split["skipped"]}
    assert {"happy/notes.txt", "happy/empty.jpg", "sad/truncated.png", "sad/corrupt.jpg"} <= skipped


def test_export_writes_five_files_and_manifest(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(MODELS + ("model_float16.tflite",))
    for name, rec in manifest["files"].items():
        data = (export_dir / name).read_bytes()
        assert rec["size_bytes"] == len(data)
        assert rec["sha256"] == hashlib.sha256(data).hexdigest()
        meta = read_metadata(export_dir / name)
        assert meta.labels == ("happy", "sad") and meta.image_size == (48, 48) and meta.color == "gray"
        assert meta.extra["format"] == rec["format"]
        assert meta.extra["run"]["name"] == "run"
    assert not [p for p in export_dir.iterdir() if p.name.startswith(".")], "temporary files left behind"


@pytest.fixture(scope="module")
def inputs(run_dir):
    split = read_split(run_dir / "split.json")
    items = split_items(split, "test") + split_items(split, "val")
    return np.stack([preprocess(load_image(p)) for p, _ in items])


@pytest.fixture(scope="module")
def keras_probs(run_dir, inputs):
    import keras

    model = keras.saving.load_model(run_dir / "model.keras")
    return model.predict(inputs.astype(np.float32), verbose=0).ravel()


@pytest.mark.parametrize("name", ["model_float32.tflite", "model_float32.onnx"])
def test_float_files_match_keras(export_dir, inputs, keras_probs, name):
    clf = Classifier(export_dir / name)
    probs = np.array([clf.scores(x)[1] for x in inputs])
    np.testing.assert_allclose(probs, keras_probs, atol=1e-4)


@pytest.mark.parametrize("name", ["model_int8.tflite", "model_int8.onnx"])
def test_int8_files_agree_with_float_labels(export_dir, inputs, keras_probs, name):
    clf = Classifier(export_dir / name)
    labels = np.array([clf.predict_index(clf.scores(x)) for x in inputs])
    agreement = np.mean(labels == (keras_probs >= 0.5))
    assert agreement >= 0.9, agreement


def test_int8_tflite_takes_raw_pixels_with_scale_one(export_dir):
    clf = Classifier(export_dir / "model_int8.tflite")
    assert clf.backend.input_dtype == np.int8
    assert clf.backend.input_quant == (1.0, -128)
    res = subprocess.run(
        [sys.executable, "-m", "happysad.edge", "info", str(export_dir / "model_int8.tflite")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    info = json.loads(res.stdout)
    assert info["input"] == {
        "shape": [1, 48, 48, 1],
        "layout": "NHWC",
        "dtype": "int8",
        "scale": 1.0,
        "zero_point": -128,
    }
    assert info["metadata"]["labels"] == ["happy", "sad"]
    assert info["size_bytes"] == (export_dir / "model_int8.tflite").stat().st_size


def test_edge_runs_without_tensorflow(export_dir, dataset):
    """A fresh interpreter classifies with every exported file and never imports TensorFlow."""
    code = (
        "import sys, json\n"
        "from happysad.edge import Classifier, load_image\n"
        f"img = load_image({str(dataset / 'happy' / 'happy_005.png')!r})\n"
        "out = {}\n"
        f"for name in {list(MODELS)!r}:\n"
        f"    out[name] = Classifier({str(export_dir)!r} + '/' + name).classify_image(img).label\n"
        "import cv2, numpy as np\n"
        "big = np.full((240, 320, 3), 90, np.uint8)\n"
        "bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img\n"
        "big[40:200, 80:240] = cv2.resize(bgr, (160, 160))\n"
        "for det in ('yunet', 'blazeface', 'blazeface-full', 'haar'):\n"
        f"    clf = Classifier({str(export_dir)!r} + '/model_int8.tflite', detector=det)\n"
        "    out[det] = clf.classify_image(big).label\n"
        "heavy = ('tensorflow', 'keras', 'tf2onnx', 'happysad.train', 'happysad.export')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "print(json.dumps({'labels': out, 'bad': bad}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["bad"] == []
    assert set(report["labels"].values()) <= {"happy", "sad"} and len(report["labels"]) == 8


def test_installed_wheel_has_one_namespace_and_carries_the_detectors(export_dir, tmp_path):
    """The wheel holds happysad/edge, /train, /export, /benchmarks and the
    vendored detector models, no tests; installed (not editable) into a fresh
    venv, `import edge` and `import train` fail, the console scripts and
    `python -m happysad.edge` work, and it classifies a frame with the default detector."""
    import sysconfig
    import zipfile

    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in (
        "face_detection_yunet_2023mar.onnx",
        "face_detection_short_range.tflite",
        "face_detection_full_range.tflite",
        "NOTICE",
        "LICENSE-yunet",
    ):
        assert f"happysad/edge/assets/{asset}" in names, asset
    top = {n.split("/")[0] for n in names if not n.startswith("happysad-")}
    assert top == {"happysad"}, top
    assert {n.split("/")[1] for n in names if n.startswith("happysad/")} == {"edge", "train", "export", "benchmarks"}
    assert not any("test" in n.split("/")[-1] or "conftest" in n for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    # The wheel's dependencies (numpy, OpenCV, LiteRT) from this environment,
    # without its editable install of the project (a .pth adds the folder, not its own .pth files).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    res = subprocess.run([*pip, "install", "--no-deps", "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    py = str(venv / "bin" / "python")

    def run(*cmd):
        return subprocess.run(list(cmd), capture_output=True, text=True, cwd=tmp_path, timeout=120)

    for name in ("edge", "train", "export", "benchmarks"):
        res = run(py, "-c", f"import {name}")
        assert res.returncode == 1 and "ModuleNotFoundError" in res.stderr, name
    for cmd in (
        [str(venv / "bin" / "happysad-edge"), "--help"],
        [str(venv / "bin" / "happysad-bench"), "--help"],
        [py, "-m", "happysad.edge", "--version"],
    ):
        res = run(*cmd)
        assert res.returncode == 0 and "Traceback" not in res.stderr, (cmd, res.stderr)
    code = (
        "import happysad.edge as edge, numpy as np, sys\n"
        "from happysad.edge import Classifier\n"
        "assert edge.__file__.startswith(sys.argv[1]), edge.__file__\n"
        "frame = np.full((240, 320, 3), 90, np.uint8)\n"
        "clf = Classifier(sys.argv[2])\n"
        "print(clf.classify_photo(frame)[0].basis, type(clf.detector).__name__)\n"
    )
    res = run(py, "-c", code, str(site), str(export_dir / "model_int8.tflite"))
    assert res.returncode == 0, res.stderr
    # YuNet loaded from the install (no fallback to Haar) and found no face in a blank frame.
    assert res.stdout.strip() == "whole-image YuNetDetector" and "falling back" not in res.stderr


def test_classify_json_schema(export_dir, dataset):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "happysad.edge",
            "classify",
            str(export_dir / "model_int8.tflite"),
            str(dataset / "sad"),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == 60  # 62 files with an image suffix, two of them broken
    for obj in lines:
        assert set(obj) == {"path", "label", "confidence", "scores", "basis", "face", "face_score", "keypoints", "ms"}
        # 48x48 crops: classified whole, no detection.
        assert obj["label"] in ("happy", "sad") and obj["face"] is None and obj["basis"] == "whole-image"
        assert abs(sum(obj["scores"].values()) - 1) < 1e-5
        assert obj["confidence"] == max(obj["scores"].values())
        assert obj["ms"] > 0
    assert np.mean([o["label"] == "sad" for o in lines]) >= 0.8
    # Each broken file is reported on its own line, the rest still classified, exit 1.
    assert res.returncode == 1
    err = res.stderr.strip().splitlines()
    for name in ("truncated.png", "corrupt.jpg"):
        assert len([e for e in err if name in e and "not a decodable image" in e]) == 1
    assert "Traceback" not in res.stderr


def test_bench_table_and_json(export_dir, run_dir, tmp_path):
    out = tmp_path / "bench.json"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "happysad.benchmarks",
            *(str(export_dir / m) for m in MODELS),
            "--split",
            str(run_dir / "split.json"),
            "--runs",
            "20",
            "--warmup",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    header = res.stdout.splitlines()[0].split()
    for col in ("model", "p50", "p99", "accuracy", "drop", "agreement"):
        assert col in header
    report = json.loads(out.read_text())
    rows = {r["model"].rsplit("/", 1)[-1]: r for r in report["results"]}
    assert sorted(rows) == sorted(MODELS)
    assert rows["model_int8.tflite"]["reference"].endswith("model_float32.tflite")
    assert rows["model_int8.onnx"]["reference"].endswith("model_float32.onnx")
    for r in rows.values():
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["size_mb"] > 0 and r["load_ms"] > 0
        assert r["drop_pp"] == pytest.approx(
            (rows[r["reference"].rsplit("/", 1)[-1]]["accuracy"] - r["accuracy"]) * 100
        )
    assert rows["model_float32.tflite"]["drop_pp"] == 0
    assert rows["model_int8.tflite"]["size_mb"] < rows["model_float32.tflite"]["size_mb"] / 2
    assert report["machine"]["cores"] >= 1


def test_tuned_threshold_travels_into_exported_files(run_dir, tmp_path):
    """A run trained with --tune-threshold exports files whose metadata carry that threshold."""
    import shutil

    from happysad.export.cli import main

    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("export"))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["threshold"] = 0.37
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert main([str(run), "--formats", "tflite-int8", "--calib-samples", "20", "--max-drop", "100"]) == 0
    clf = Classifier(run / "export" / "model_int8.tflite")
    assert clf.metadata.threshold == 0.37
    assert clf.predict_index(np.array([0.62, 0.38], np.float32)) == 1  # 0.38 >= 0.37: labels[1]


def test_deterministic_training_repeats_bit_for_bit(dataset, tmp_path):
    """--deterministic: two runs with one seed give the same weights hash and the same
    figures to the last digit; another seed gives other weights."""
    from happysad.train.cli import main

    metrics = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / name
        assert (
            main(
                [
                    str(dataset),
                    "--out",
                    str(out),
                    "--epochs",
                    "2",
                    "--seed",
                    str(seed),
                    "--batch-size",
                    "16",
                    "--deterministic",
                ]
            )
            == 0
        )
        metrics.append(json.loads((out / "metrics.json").read_text()))
    a, b, c = metrics
    assert json.loads((tmp_path / "a" / "config.json").read_text())["augment"] == "camera"  # the default
    assert a["deterministic"] is True and len(a["weights_sha256"]) == 64
    assert a["weights_sha256"] == b["weights_sha256"]
    for key in ("accuracy", "roc_auc", "confusion_matrix"):
        assert a[key] == b[key], key
    assert a["validation"]["accuracy"] == b["validation"]["accuracy"]
    assert c["weights_sha256"] != a["weights_sha256"]


def test_moved_folders_still_read(run_dir, export_dir, dataset, tmp_path):
    """split.json records its data folder relative to itself (and absolute beside it): a
    project moved whole reads back; a model folder copied elsewhere verifies and classifies."""
    import shutil

    project = tmp_path / "project"
    shutil.copytree(dataset, project / "data")
    shutil.copytree(run_dir, project / "runs" / "run", ignore=shutil.ignore_patterns("logs"))
    split = json.loads((project / "runs" / "run" / "split.json").read_text())
    assert split["data_dir"] == os.path.relpath(dataset, run_dir)
    split["data_dir"], split["data_dir_absolute"] = "../../data", "/nonexistent"
    (project / "runs" / "run" / "split.json").write_text(json.dumps(split))
    moved = tmp_path / "moved"
    shutil.move(str(project), moved)
    again = read_split(moved / "runs" / "run" / "split.json")
    assert Path(again["data_dir"]) == (moved / "data").resolve()
    assert all(p.is_file() for p, _ in split_items(again, "test"))
    device = tmp_path / "device"
    shutil.copytree(export_dir, device)
    res = subprocess.run(
        [sys.executable, "-m", "happysad.edge", "verify", str(device / "model_int8.tflite")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert res.returncode == 0 and res.stdout.startswith("OK "), res.stderr
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "happysad.edge",
            "classify",
            str(device / "model_int8.tflite"),
            str(dataset / "happy" / "happy_000.png"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert res.returncode == 0 and ("\thappy\t" in res.stdout or "\tsad\t" in res.stdout), res.stderr
