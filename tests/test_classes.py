"""Models of more than two classes, auxiliary classes, "uncertain" and flip TTA."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from happysad.edge import Classifier, HappysadError, read_metadata
from happysad.edge.metrics import class_probabilities, decide, suggest_min_confidence
from happysad.edge.runtime.metadata import UNCERTAIN, ModelMetadata, decode, encode

from helpers import run_camera, run_module, write_video
from synth import draw_face, make_dataset

THREE = ("happy", "sad", "neutral")


def test_class_probabilities_of_sigmoid_and_softmax_outputs():
    assert class_probabilities(np.array([0.8]), "sigmoid") == pytest.approx([0.2, 0.8])
    rows = class_probabilities(np.array([[0.1], [1.2]]), "sigmoid")
    assert rows.shape == (2, 2) and rows[1] == pytest.approx([0.0, 1.0])  # clipped to 0..1
    # An int8 softmax's rounding leaves a sum off 1: renormalised.
    soft = class_probabilities(np.array([[0.5, 0.3, 0.196]]), "softmax")
    assert soft.sum() == pytest.approx(1.0) and soft[0, 0] > soft[0, 1] > soft[0, 2]
    assert np.isnan(class_probabilities(np.array([np.nan, 0.2, 0.3]), "softmax")).any()


def test_decide_uses_the_threshold_for_two_classes_and_argmax_for_more():
    two = np.array([[0.6, 0.4], [0.35, 0.65]])
    assert decide(two).tolist() == [0, 1]
    assert decide(two, threshold=0.3).tolist() == [1, 1]
    assert decide(np.array([[0.2, 0.3, 0.5], [0.5, 0.3, 0.2]])).tolist() == [2, 0]
    assert int(decide(np.array([0.1, 0.7, 0.2]))) == 1


def test_suggested_min_confidence_keeps_the_confident_and_meets_the_target():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 1000)
    y_pred = rng.integers(0, 2, 1000)
    # Right with probability equal to the confidence: calibrated scores.
    right = rng.uniform(size=1000) < conf
    y = np.where(right, y_pred, 1 - y_pred)
    probs = np.where(y_pred[:, None] == 1, np.c_[1 - conf, conf], np.c_[conf, 1 - conf])
    s = suggest_min_confidence(y, probs, target=0.9)
    kept = probs.max(axis=1) >= s["min_confidence"]
    assert 0.5 < s["min_confidence"] < 1.0 and 0.0 < s["coverage"] < 1.0
    assert s["coverage"] == pytest.approx(kept.mean())
    assert s["accuracy_kept"] == pytest.approx((decide(probs)[kept] == y[kept]).mean()) and s["accuracy_kept"] >= 0.9
    # Already accurate enough: nothing is set aside.
    assert suggest_min_confidence(y_pred, probs, target=0.9)["min_confidence"] == 0.0


def test_metadata_of_a_softmax_model_round_trips_and_bad_label_lists_are_refused():
    meta = ModelMetadata(THREE, (48, 48), "gray", input_dtype="float32", output="softmax", min_confidence=0.62)
    back = decode(encode(meta), "m")
    assert back.labels == THREE and back.output == "softmax" and back.min_confidence == 0.62
    d = meta.to_dict()
    assert d["schema_version"] == 3
    for bad, why in (
        ({"output": "sigmoid"}, "two labels"),
        ({"labels": ["happy", UNCERTAIN]}, "reserved"),
        ({"labels": ["a", "a"]}, "distinct"),
        ({"output": "relu"}, "not one of"),
        ({"min_confidence": 1.5}, "outside"),
    ):
        with pytest.raises(HappysadError, match=why):
            ModelMetadata.from_dict({**d, **bad})
    # A version-2 file is a sigmoid model, whatever else it says.
    old = {**ModelMetadata(("happy", "sad"), (48, 48), "gray", input_dtype="float32").to_dict(), "schema_version": 2}
    assert ModelMetadata.from_dict({**old, "output": "softmax"}).output == "sigmoid"


def _train(args):
    from happysad.train.cli import main

    assert (
        main(
            [
                *map(str, args),
                "--epochs",
                "10",
                "--seed",
                "1",
                "--batch-size",
                "16",
                "--patience",
                "10",
                "--augment",
                "basic",
            ]
        )
        == 0
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Happy and sad faces in one folder, neutral ones in another, as in shared/data."""
    root = tmp_path_factory.mktemp("classes")
    make_dataset(root / "hs", per_class=50, seed=3)
    make_dataset(root / "other", per_class=50, seed=4, labels=("neutral",))
    # A copy of a happy face filed as neutral: one face under two labels.
    shutil.copy(root / "hs" / "happy" / "happy_000.png", root / "other" / "neutral" / "copy.png")
    return root


@pytest.fixture(scope="module")
def three_class(folders):
    """A happy/sad/neutral model trained from two folders, exported to int8 TFLite and float ONNX."""
    out = folders / "run3"
    _train([folders / "hs", folders / "other", "--classes", ",".join(THREE), "--out", out])
    from happysad.export.cli import main

    assert (
        main(
            [
                str(out),
                "--formats",
                "tflite-int8,onnx-float32",
                "--calib-samples",
                "60",
                "--max-drop",
                "100",
                "--min-accuracy",
                "0",
            ]
        )
        == 0
    )
    return out


def test_three_classes_train_with_softmax_and_report_per_class(three_class):
    m = json.loads((three_class / "metrics.json").read_text())
    assert m["labels"] == list(THREE) and m["output"] == "softmax"
    assert np.array(m["confusion_matrix"]).shape == (3, 3)
    assert set(m["per_class"]) == set(THREE)
    split = json.loads((three_class / "split.json").read_text())
    # The face filed under two labels is used under neither.
    assert any(sorted(c["labels"]) == ["happy", "neutral"] for c in split["excluded"])
    paths = [e["path"] for part in ("train", "val", "test") for e in split[part]]
    assert "other/neutral/copy.png" not in paths and "hs/happy/happy_000.png" not in paths
    assert m["accuracy"] > 0.6  # drawn mouths: far above the 1/3 of chance


def test_three_class_files_carry_labels_and_classify(three_class, tmp_path):
    for name in ("model_int8.tflite", "model_float32.onnx"):
        meta = read_metadata(three_class / "export" / name)
        assert meta.labels == THREE and meta.output == "softmax" and 0.0 <= meta.min_confidence <= 1.0
        clf = Classifier(three_class / "export" / name)
        assert clf.backend.output_shape[-1] == 3
    rng = np.random.default_rng(7)
    for i, kind in enumerate(THREE):
        cv2.imwrite(str(tmp_path / f"{i}_{kind}.png"), draw_face(rng, kind))
    model = three_class / "export" / "model_int8.tflite"
    res = run_module("edge", "classify", str(model), str(tmp_path), "--json")
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(records) == 3
    for r in records:
        assert set(r["scores"]) == set(THREE) and sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-3)
        assert r["label"] == max(r["scores"], key=r["scores"].get)
    # At a minimum confidence of 1, nothing is certain enough.
    res = run_module("edge", "classify", str(model), str(tmp_path), "--json", "--min-confidence", "1")
    assert res.returncode == 0, res.stderr
    assert {json.loads(line)["label"] for line in res.stdout.splitlines()} == {UNCERTAIN}


def test_three_class_model_benchmarks_and_runs_the_camera_loop(three_class, folders, tmp_path):
    data = tmp_path / "data"
    for kind in THREE:
        src = folders / ("other" if kind == "neutral" else "hs") / kind
        shutil.copytree(src, data / kind)
    model = three_class / "export" / "model_int8.tflite"
    res = run_module(
        "benchmarks",
        str(model),
        "--data",
        str(data),
        "--runs",
        "20",
        "--warmup",
        "2",
        "--cold-runs",
        "0",
        "--json",
        str(tmp_path / "b.json"),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    row = json.loads((tmp_path / "b.json").read_text())["results"][0]
    assert np.array(row["confusion_matrix"]).shape == (3, 3) and row["n"] == 151
    rng = np.random.default_rng(2)
    video = tmp_path / "v.avi"
    write_video(video, [cv2.resize(draw_face(rng, THREE[i % 3]), (160, 120)) for i in range(6)])
    res = run_camera(model, video, "--no-face", "--max-frames", "6")
    assert res.returncode == 0, res.stderr
    faces = [json.loads(line)["faces"][0] for line in res.stdout.splitlines()]
    assert len(faces) == 6 and all(f["label"] in THREE and len(f["scores"]) == 3 for f in faces)


@pytest.fixture(scope="module")
def aux_run(folders):
    """A happy/sad model trained beside the neutral faces of another folder, exported to int8 TFLite."""
    out = folders / "run-aux"
    _train([folders / "hs", "--aux", folders / "other", "--out", out])
    from happysad.export.cli import main

    assert (
        main(
            [str(out), "--formats", "tflite-int8", "--calib-samples", "60", "--max-drop", "100", "--min-accuracy", "0"]
        )
        == 0
    )
    return out


def test_auxiliary_classes_train_beside_and_ship_two(aux_run):
    out = aux_run
    m = json.loads((out / "metrics.json").read_text())
    assert m["labels"] == ["happy", "sad"] and m["trained_with"] == ["happy", "sad", "neutral"]
    assert m["output"] == "sigmoid" and np.array(m["confusion_matrix"]).shape == (2, 2)
    # Early stopping watched the shipped two-class loss, not the seven-way one.
    assert "val_shipped_loss" in (out / "history.csv").read_text().splitlines()[0]
    aux = json.loads((out / "split.json").read_text())["auxiliary"]
    # The neutral copy of a happy face is left out; the happy one stays with
    # its label. (Drawn faces are alike: some others are near-copies too.)
    left_out = aux["left_out_as_copies"]
    assert {"path": "neutral/copy.png", "copy_of": "happy/happy_000.png"} in left_out
    kept = [e["path"] for part in ("train", "val", "test") for e in aux[part]]
    assert len(kept) + len(left_out) == 51 and len(aux["train"]) > 20 and aux["test"]
    assert "neutral/copy.png" not in kept
    import keras

    model = keras.saving.load_model(str(out / "model.keras"), compile=False)
    assert model.output_shape == (None, 1)


def test_restricted_head_equals_the_softmax_renormalised_over_the_kept_classes():
    import keras

    from happysad.train.models import build_model, restrict_head

    model = build_model("compact", (48, 48), 1, classes=4)
    for layer in model.layers:  # non-trivial batch-norm statistics and logits
        if layer.weights:
            layer.set_weights(
                [
                    w + np.random.default_rng(0).normal(0, 0.1, w.shape).astype(w.dtype)
                    if w.ndim > 1 or "moving_variance" not in v.path
                    else np.abs(w) + 0.5
                    for w, v in zip(layer.get_weights(), layer.weights)
                ]
            )
    x = np.random.default_rng(1).uniform(0, 255, (5, 48, 48, 1)).astype(np.float32)
    full = model.predict(x, verbose=0)
    two = restrict_head(model, [2, 0]).predict(x, verbose=0)
    assert two.shape == (5, 1)
    np.testing.assert_allclose(two[:, 0], full[:, 0] / (full[:, 0] + full[:, 2]), rtol=1e-4, atol=1e-6)
    three = restrict_head(model, [0, 1, 3]).predict(x, verbose=0)
    np.testing.assert_allclose(
        three, full[:, [0, 1, 3]] / full[:, [0, 1, 3]].sum(1, keepdims=True), rtol=1e-4, atol=1e-6
    )
    assert isinstance(model, keras.Model)


def test_min_confidence_in_the_api_auto_from_metadata_and_refused_out_of_range(export_dir):
    model = export_dir / "model_int8.tflite"
    rng = np.random.default_rng(5)
    faces = [draw_face(rng, i % 2 == 0) for i in range(8)]
    plain = Classifier(model)
    preds = [plain.classify(f) for f in faces]
    cut = float(np.median([p.confidence for p in preds]))
    strict = Classifier(model, min_confidence=cut)
    for f, p in zip(faces, preds):
        q = strict.classify(f)
        assert q.confidence == p.confidence and q.scores == p.scores
        assert q.label == (UNCERTAIN if p.confidence < cut else p.label)
    suggested = read_metadata(model).min_confidence
    assert Classifier(model, min_confidence="auto").min_confidence == suggested
    for bad in (1.5, -0.1, "high"):
        with pytest.raises(ValueError):
            Classifier(model, min_confidence=bad)


def test_flip_tta_averages_the_face_and_its_mirror(export_dir):
    from happysad.edge import preprocess

    model = export_dir / "model_float32.tflite"
    face = draw_face(np.random.default_rng(9), True)
    face[:, :20] = 255  # not symmetric: the mirror scores differently
    plain, tta = Classifier(model), Classifier(model, tta="flip")
    pixels = preprocess(face, plain.metadata.image_size, plain.metadata.color)
    mirrored = np.ascontiguousarray(pixels[:, ::-1])
    np.testing.assert_allclose(tta.scores(pixels), (plain.scores(pixels) + plain.scores(mirrored)) / 2, atol=1e-6)
    assert not np.allclose(plain.scores(pixels), plain.scores(mirrored), atol=1e-4)
    with pytest.raises(ValueError):
        Classifier(model, tta="rotate")


def test_neither_report_counts_each_label_on_unseen_auxiliary_faces(aux_run, tmp_path):
    res = run_module(
        "benchmarks.neither",
        str(aux_run / "export" / "model_int8.tflite"),
        "--split",
        str(aux_run / "split.json"),
        "--min-confidence",
        "0.9",
        "--json",
        str(tmp_path / "n.json"),
    )
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "n.json").read_text())
    neutral = report["classes"]["neutral"]
    test_part = json.loads((aux_run / "split.json").read_text())["auxiliary"]["test"]
    assert neutral["n"] == len(test_part) > 0
    assert set(neutral["share"]) == {"happy", "sad", UNCERTAIN}
    assert sum(neutral["share"].values()) == pytest.approx(1.0)
    assert sum(neutral["confidence_histogram"].values()) == neutral["n"]
    assert "| neutral |" in res.stdout
    # A run without auxiliary classes has none to measure: one line, exit 1.
    res = run_module(
        "benchmarks.neither",
        str(aux_run / "export" / "model_int8.tflite"),
        "--split",
        str(tmp_path / "n.json"),
        timeout=60,
    )
    assert res.returncode == 1 and "no auxiliary classes" in res.stderr and "Traceback" not in res.stderr


def test_distillation_from_a_teacher_and_a_teacher_of_other_classes_refused(folders, three_class, run_dir, tmp_path):
    from happysad.train.cli import main

    out = tmp_path / "student"
    _train([folders / "hs", "--out", out, "--teacher", run_dir / "model.keras", "--distill-alpha", "0.3"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["output"] == "sigmoid" and m["accuracy"] > 0.75
    config = json.loads((out / "config.json").read_text())
    assert config["teachers"] == [str(run_dir / "model.keras")] and config["distill_alpha"] == 0.3
    # A teacher of more classes than the student cannot teach it.
    import keras

    from happysad.train.distill import teacher_classes
    from happysad.train.models import build_model

    with pytest.raises(ValueError, match="the teacher has 3 outputs, the student 1"):
        teacher_classes(build_model("compact"), [keras.saving.load_model(three_class / "model.keras")])
    # A teacher trained on another split has seen this run's test faces.
    err = io_of(
        main,
        [str(folders / "hs"), "--out", str(tmp_path / "leak"), "--seed", "2", "--teacher", str(out / "model.keras")],
    )
    assert err[0] == 1 and "trained on" in err[1] and "validation or test part" in err[1]
    assert not (tmp_path / "leak" / "model.keras").exists()


def test_an_ensemble_of_two_class_teachers_with_flip_teaches_an_aux_student(folders, run_dir, tmp_path):
    from happysad.train.distill import distillation_loss

    teacher = tmp_path / "teacher"
    _train([folders / "hs", "--out", teacher])
    out = tmp_path / "student"
    args = ["--teacher", teacher / "model.keras", "--teacher", run_dir / "model.keras", "--teacher-tta", "flip"]
    _train([folders / "hs", "--aux", folders / "other", "--out", out, *args])
    config = json.loads((out / "config.json").read_text())
    assert config["teachers"] == [str(teacher / "model.keras"), str(run_dir / "model.keras")]
    assert config["teacher_flip"] is True
    m = json.loads((out / "metrics.json").read_text())
    assert m["output"] == "sigmoid" and m["trained_with"] == ["happy", "sad", "neutral"] and m["accuracy"] > 0.75
    # The target: alpha x true + (1 - alpha) x teachers on the teachers' classes, the true label elsewhere.
    loss = distillation_loss(3, 0.25, n_teacher=2)
    student = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    teachers = np.array([[0.6, 0.4, 0.0], [0.5, 0.5, 0.0]], np.float32)
    got = np.asarray(loss(np.array([0.0, 2.0]), np.concatenate([student, teachers], axis=1)))
    target0 = 0.25 * np.array([1, 0, 0]) + 0.75 * teachers[0]
    assert got == pytest.approx([-(target0 * np.log(student[0])).sum(), -np.log(0.8)], rel=1e-5)


def io_of(fn, argv):
    """(exit code, stderr) of a CLI main."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        code = fn(argv)
    return code, buf.getvalue()
