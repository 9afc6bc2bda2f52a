"""Face detectors (YuNet, BlazeFace short and full range, Haar), the levelled
crop, and the photo path's answers with every face, none, or the fallback."""

import json
import math
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from happysad.edge import Classifier
from happysad.edge.camera.loop import FaceTracker
from happysad.edge.errors import HappysadError, UsageError
from happysad.edge.faces import DETECTORS, Face, HaarDetector, YuNetDetector, make_detector, plausible
from happysad.edge.faces.blazeface import BLAZEFACE, decode_blazeface, ssd_anchors, weighted_nms
from happysad.edge.faces.crop import eye_angle, face_crop

from helpers import REPO

WILD = REPO.parent / "shared" / "data" / "wild-dev"


@pytest.fixture(scope="module")
def real_faces(real_data):
    """20 FER2013 faces, each enlarged to 160 px and pasted into a 640x480 gray frame at (240, 160)."""
    frames = []
    for path in sorted((real_data / "happy").glob("*.jpg"))[:20]:
        face = cv2.resize(cv2.imread(str(path)), (160, 160), interpolation=cv2.INTER_CUBIC)
        frame = np.full((480, 640, 3), 90, np.uint8)
        frame[160:320, 240:400] = face
        frames.append(frame)
    return frames


def test_blazeface_anchor_counts_and_centres():
    short, full = ssd_anchors(BLAZEFACE["blazeface"][1]), ssd_anchors(BLAZEFACE["blazeface-full"][1])
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # Short range: 16x16 cells with 2 anchors each, then 8x8 cells with 6.
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[1], short[0])
    np.testing.assert_allclose(short[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[512], [0.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(short[512 + 6], [1.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(full[48], [0.5 / 48, 1.5 / 48])  # row-major: the second row starts at 48


def test_blazeface_decoding_by_hand():
    """One anchor at (0.25, 0.75) of a 128 px input, raw box (+16 px, -32 px,
    64 px wide, 32 px high), right eye at (-8, -4) px from the anchor, logit 2."""
    anchors = np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)
    reg = np.zeros((2, 16), np.float32)
    reg[0, :4] = [16, -32, 64, 32]
    reg[0, 4:6] = [-8, -4]
    boxes, kps, scores = decode_blazeface(reg, np.array([2.0, -3.0], np.float32), anchors, 128, 0.5)
    assert len(scores) == 1  # sigmoid(-3) = 0.047 < 0.5
    cx, cy = 0.25 + 16 / 128, 0.75 - 32 / 128
    np.testing.assert_allclose(boxes[0], [cx - 0.25, cy - 0.125, cx + 0.25, cy + 0.125], atol=1e-6)
    np.testing.assert_allclose(kps[0, 0], [0.25 - 8 / 128, 0.75 - 4 / 128], atol=1e-6)
    assert scores[0] == pytest.approx(1 / (1 + math.exp(-2)), rel=1e-6)


def test_weighted_nms_averages_overlapping_boxes_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    kps[1] += 3
    out = weighted_nms(boxes, kps, np.array([0.9, 0.6, 0.8], np.float32), 0.3)
    assert len(out) == 2 and out[0][2] == pytest.approx(0.9) and out[1][2] == pytest.approx(0.8)
    np.testing.assert_allclose(out[0][0], [0.4, 0, 10.4, 10], atol=1e-5)  # (0*.9 + 1*.6) / 1.5
    np.testing.assert_allclose(out[0][1][0], [1.2, 1.2], atol=1e-5)


@pytest.mark.parametrize("name", DETECTORS)
def test_each_detector_finds_a_real_face_around_it(name, real_faces):
    det = make_detector(name, fallback=False)
    hits = 0
    for frame in real_faces:
        faces = det.detect(frame)
        if not faces:
            continue
        hits += 1
        x, y, w, h = faces[0].box
        assert 240 <= x + w / 2 <= 400 and 160 <= y + h / 2 <= 320, faces[0]
        assert 60 <= (w + h) / 2 <= 240, faces[0]
        if name != "haar":
            assert faces[0].keypoints.shape == ((5, 2) if name == "yunet" else (6, 2))
            assert 0 < faces[0].score <= 1
            (rx, ry), (lx, ly) = faces[0].keypoints[:2]
            assert rx < lx and x <= rx <= x + w and y <= ry <= y + h  # the subject's right eye on the left
    # The full-range model looks for faces 2-5 m away: a face filling a
    # quarter of the frame is not what it was trained on.
    assert hits >= (5 if name == "blazeface-full" else 14), f"{name} found {hits} of 20"


def test_eye_keypoints_level_the_crop():
    """Two dark eyes 60 px apart on a line tilted 30 degrees: after the crop
    they lie on one row, 60 px apart at the crop's scale."""
    image = np.full((300, 400), 255, np.uint8)
    a = math.radians(30)
    right = (200 - 30 * math.cos(a), 150 - 30 * math.sin(a))  # the subject's right eye, image left
    left = (200 + 30 * math.cos(a), 150 + 30 * math.sin(a))
    for x, y in (right, left):
        cv2.circle(image, (round(x), round(y)), 5, 0, -1)
    face = Face((150, 100, 96, 96), 0.9, np.array([right, left, (200, 170), (185, 190), (215, 190)], np.float32))
    assert eye_angle(face) == pytest.approx(30, abs=0.5)
    crop = face_crop(image, face, (48, 48), margin=0.0)
    assert crop.shape == (96, 96)
    n, _, stats, centroids = cv2.connectedComponentsWithStats((crop < 128).astype(np.uint8))
    eyes = sorted(centroids[1:n], key=lambda c: c[0])
    assert len(eyes) == 2
    (x0, y0), (x1, y1) = eyes
    assert abs(y1 - y0) < 1.5 and x1 - x0 == pytest.approx(60, abs=2)
    flat = face_crop(image, face, (48, 48), margin=0.0, level=False)
    n, _, _, centroids = cv2.connectedComponentsWithStats((flat < 128).astype(np.uint8))
    (_, y0), (_, y1) = sorted(centroids[1:n], key=lambda c: c[0])
    assert y1 - y0 > 25  # unlevelled, the tilt stays


def test_a_tilted_real_face_comes_out_more_level(real_faces):
    det = YuNetDetector()
    better = tried = 0
    for frame in real_faces[:10]:
        m = cv2.getRotationMatrix2D((320, 240), -25, 1.0)  # the head tilted 25 degrees
        tilted = cv2.warpAffine(frame, m, (640, 480), borderValue=(90, 90, 90))
        faces = det.detect(tilted)
        if not faces:
            continue
        crop = cv2.resize(face_crop(tilted, faces[0], (48, 48)), (240, 240))
        again = det.detect(cv2.copyMakeBorder(crop, 120, 120, 200, 200, cv2.BORDER_CONSTANT, value=(90, 90, 90)))
        if again:
            tried += 1
            better += abs(eye_angle(again[0])) < abs(eye_angle(faces[0])) - 5
    assert tried >= 5 and better >= tried - 1, (better, tried)


def test_face_crop_geometry_without_keypoints():
    image = np.zeros((300, 400), np.uint8)
    image[100:200, 150:250] = 255  # the box, white
    crop = face_crop(image, Face((150, 100, 100, 100)), (48, 48), margin=0.0)
    assert crop.shape == (96, 96) and crop.min() == 255  # side 100 -> 2 x 48, all inside the box
    crop = face_crop(image, Face((150, 100, 100, 100)), (48, 48), margin=0.25)
    assert crop.shape == (144, 144) and crop[0, 0] == 0 and crop[72, 72] == 255


def test_tampered_detector_model_is_refused_and_another_takes_over(tmp_path, monkeypatch, capsys):
    import happysad.edge.faces.base as faces
    from happysad.edge.console import install_log_handler
    from happysad.edge.faces.blazeface import BlazeFaceDetector

    install_log_handler()  # warnings on stderr, as a command shows them
    for name in faces.ASSET_SHA256:
        shutil.copy(faces.ASSETS / name, tmp_path / name)
    monkeypatch.setattr(faces, "ASSETS", tmp_path)

    def tamper(name):
        data = bytearray((tmp_path / name).read_bytes())
        data[-100] ^= 0xFF
        (tmp_path / name).write_bytes(bytes(data))

    tamper(YuNetDetector.MODEL)
    with pytest.raises(HappysadError, match="sha256"):
        make_detector("yunet", fallback=False)
    det = make_detector("yunet")
    assert isinstance(det, BlazeFaceDetector) and det.name == "blazeface-full"
    assert "falling back to --detector blazeface-full" in capsys.readouterr().err
    tamper("face_detection_full_range.tflite")
    assert isinstance(make_detector("yunet"), HaarDetector)
    assert "falling back to --detector haar" in capsys.readouterr().err


def test_an_opencv_too_old_for_yunet_gets_blazeface(monkeypatch, capsys):
    """Debian bookworm's OpenCV 4.6 (32-bit Raspberry Pi OS's, from apt) fails on
    YuNet's graph at the first frame: refused up front, BlazeFace full range instead."""
    import cv2

    from happysad.edge.console import install_log_handler
    from happysad.edge.faces.blazeface import BlazeFaceDetector

    install_log_handler()
    monkeypatch.setattr(cv2, "__version__", "4.6.0")
    with pytest.raises(HappysadError, match=r"OpenCV 4.6.0 cannot run YuNet \(needs 4.8 or newer\)"):
        make_detector("yunet", fallback=False)
    assert isinstance(make_detector("yunet"), BlazeFaceDetector)
    assert "falling back to --detector blazeface-full" in capsys.readouterr().err
    from happysad.edge.cli.doctor import _detectors_line

    status, _, detail = _detectors_line()  # doctor: a note naming what loads and why YuNet does not
    assert status == "note" and detail.startswith("blazeface, blazeface-full, haar load; yunet: OpenCV 4.6.0")


def _classify_json(model, *args):
    res = subprocess.run(
        [sys.executable, "-m", "happysad.edge", "classify", str(model), "--json", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_faces_all_no_face_and_skip(export_dir, real_data, tmp_path):
    faces = [
        cv2.resize(cv2.imread(str(p)), (150, 150), interpolation=cv2.INTER_CUBIC)
        for p in sorted((real_data / "happy").glob("*.jpg"))[:2]
    ]
    two = np.full((400, 700, 3), 90, np.uint8)
    two[100:250, 60:210], two[120:270, 450:600] = faces
    cv2.imwrite(str(tmp_path / "two.png"), two)
    blank = np.full((400, 600, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "empty.png"), blank)
    model = export_dir / "model_int8.tflite"
    (rec,) = _classify_json(model, tmp_path / "two.png", "--faces", "all")
    assert len(rec["faces"]) == 2
    centres = sorted(f["face"][0] + f["face"][2] / 2 for f in rec["faces"])
    assert 60 <= centres[0] <= 210 and 450 <= centres[1] <= 600
    for f in rec["faces"]:
        assert f["basis"] == "face" and len(f["keypoints"]) == 5 and f["label"] in ("happy", "sad")
    (rec,) = _classify_json(model, tmp_path / "empty.png")
    assert rec["face"] is None and rec["basis"] == "whole-image" and rec["label"] in ("happy", "sad")
    (rec,) = _classify_json(model, tmp_path / "empty.png", "--no-face", "skip")
    assert rec["face"] is None and rec["label"] is None and rec["basis"] == "no-face"
    (rec,) = _classify_json(model, tmp_path / "two.png", "--detector", "haar")
    assert rec["basis"] == "face" and rec["keypoints"] is None


def test_classify_photo_api(export_dir, real_faces):
    clf = Classifier(export_dir / "model_int8.tflite", detector="blazeface")
    (pred,) = clf.classify_photo(real_faces[0])
    assert pred.basis == "face" and pred.keypoints.shape == (6, 2) and pred.timings["crop"] > 0
    assert clf.classify_photo(np.full((300, 300, 3), 128, np.uint8), no_face="skip") == []
    with pytest.raises(ValueError):
        clf.classify_photo(real_faces[0], faces="some")


def test_dnn_detectors_agree_on_clear_faces():
    """On wild-dev photos where YuNet and BlazeFace each find exactly one face,
    the boxes match (IoU >= 0.6) in most: they frame the same face alike."""
    if not WILD.is_dir():
        pytest.skip(f"wild-dev photos not present at {WILD}")
    from happysad.edge import find_images, load_image

    yunet, blaze = make_detector("yunet", fallback=False), make_detector("blazeface", fallback=False)

    def iou(a, b):
        ax, ay, aw, ah = a
        bx, by, bw, bh = b
        iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
        ih = max(0, min(ay + ah, by + bh) - max(ay, by))
        return iw * ih / (aw * ah + bw * bh - iw * ih)

    ious = []
    for path in find_images(WILD / "happy")[::2]:
        image = load_image(path)
        a, b = yunet.detect(image), blaze.detect(image)
        if len(a) == 1 and len(b) == 1:
            ious.append(iou(a[0].box, b[0].box))
    assert len(ious) >= 15
    assert np.mean(np.array(ious) >= 0.6) >= 0.8, sorted(ious)


def test_bench_pipeline_per_detector(export_dir, real_data, tmp_path):
    """happysad-bench --pipeline: per detector, faces found, accuracy where found and over
    all photos (whole-photo fallback), abstentions, and ms per stage, on photos of any size."""
    from happysad.edge import Classifier, load_image

    root = tmp_path / "photos"
    for label in ("happy", "sad"):
        (root / label).mkdir(parents=True)
        for i, path in enumerate(sorted((real_data / label).glob("*.jpg"))[:6]):
            face = cv2.resize(cv2.imread(str(path)), (150, 150), interpolation=cv2.INTER_CUBIC)
            photo = np.full((360, 480, 3), 90, np.uint8)
            photo[100:250, 150:300] = face
            cv2.imwrite(str(root / label / f"{i}.jpg"), photo)
        cv2.imwrite(str(root / label / "blank.jpg"), np.full((300, 400, 3), 120, np.uint8))
    out = tmp_path / "wild.json"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "happysad.benchmarks",
            str(export_dir / "model_int8.tflite"),
            "--pipeline",
            "--data",
            str(root),
            "--detector",
            "yunet,haar",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "| yunet |" in res.stdout and "| haar |" in res.stdout
    report = json.loads(out.read_text())
    assert list(report["detectors"]) == ["yunet", "haar"]
    clf = Classifier(export_dir / "model_int8.tflite", detector="yunet")
    paths = sorted(root.glob("*/*.jpg"))
    truth = [0 if p.parent.name == "happy" else 1 for p in paths]
    preds = [clf.classify_photo(load_image(p)) for p in paths]
    yunet = report["detectors"]["yunet"]
    found = [p[0].basis == "face" for p in preds]
    right = [clf.labels.index(p[0].label) == t for p, t in zip(preds, truth)]
    assert yunet["photos"] == 14 and yunet["found"] == sum(found) >= 10  # the blank photos have none
    assert yunet["accuracy_all"] == pytest.approx(np.mean(right), abs=1e-4)
    assert yunet["accuracy_found"] == pytest.approx(np.mean([r for r, f in zip(right, found) if f]), abs=1e-4)
    assert yunet["answered_skip"] == pytest.approx(sum(found) / 14, abs=1e-4)
    assert yunet["ms"]["detect"]["p90"] >= yunet["ms"]["detect"]["p50"] > 0
    assert yunet["ms"]["crop"]["p50"] > 0 and yunet["ms"]["classify"]["p50"] > 0


@pytest.mark.parametrize("name", DETECTORS)
def test_odd_image_shapes_never_crash_a_detector(export_dir, name):
    """Slivers, tiny and gray images: every detector answers (here: no face, the whole image)."""
    clf = Classifier(export_dir / "model_int8.tflite", detector=name)
    rng = np.random.default_rng(0)
    for shape in ((49, 1, 3), (1, 49, 3), (2, 3000, 3), (3000, 2, 3), (60, 60, 3), (49, 49)):
        (pred,) = clf.classify_photo(rng.integers(0, 255, shape, dtype=np.uint8))
        assert pred.label in ("happy", "sad")
        assert (pred.basis, pred.face) == ("whole-image", None), (shape, pred.face)


def test_garbage_boxes_are_not_faces():
    """A box a detector decodes from a degenerate input is dropped; a face cut by the frame is kept."""
    shape = (480, 640, 3)
    assert plausible((100, 80, 120, 140), shape)
    assert plausible((-40, -30, 120, 140), shape)  # cut by the top-left corner, centre inside
    assert plausible((0, 0, 640, 480), shape)
    # YuNet's answer for a 3000x2 noise image on one CI machine (score 0.99):
    assert not plausible((-32951849779200, -6608, 65903699558400, 11786), (2, 3000, 3))
    assert not plausible((700, 100, 50, 50), shape)  # centre right of the frame
    assert not plausible((100, 100, 0, 50), shape)
    assert not plausible((100, 100, float("nan"), 50), shape)
    assert not plausible((-700, -700, 1400, 1400), shape)  # larger than twice the frame


def test_a_box_off_the_frame_is_refused_in_one_line(export_dir):
    """A caller's box that is not on the frame is a usage error, not an OpenCV traceback."""
    clf = Classifier(export_dir / "model_int8.tflite", detector="haar")
    frame = np.full((120, 160, 3), 128, np.uint8)
    assert clf.classify_boxes(frame, [(40, 20, 60, 60)])[0].label in ("happy", "sad")
    with pytest.raises(UsageError, match="not on the 160x120 frame"):
        clf.classify_boxes(frame, [(10**13, 0, 10**14, 50)])


def test_held_faces_are_searched_anew_on_a_frame_of_another_size(export_dir, real_faces):
    """--detect-every holds boxes between detections, but never onto a frame they may not fit."""
    clf = Classifier(export_dir / "model_int8.tflite", detector="yunet")
    tracker = FaceTracker(every=5)
    big = real_faces[0]
    faces, first_ms = tracker.faces(clf, big, largest_only=True)
    assert faces and first_ms > 0
    assert tracker.faces(clf, big, largest_only=True) == (faces, 0.0)  # held
    small = cv2.resize(big, (160, 120), interpolation=cv2.INTER_AREA)
    moved, ms = tracker.faces(clf, small, largest_only=True)
    assert ms > 0 and all(f.box[0] + f.box[2] <= 170 for f in moved)
    assert clf.classify_boxes(small, moved, ms)  # crops without refusing a box


def test_keras_benchmark_row_crops_the_pixels_the_device_crops(run_dir, export_dir, real_faces):
    """happysad-bench's Keras row and the edge runtime see the same face pixels for a photo."""
    from happysad.benchmarks.runners import KerasRunner

    runner = KerasRunner(run_dir / "model.keras", ["happy", "sad"], "yunet")
    clf = Classifier(export_dir / "model_int8.tflite", detector="yunet")
    compared = 0
    for frame in real_faces[:5]:
        faces = clf.detector.detect(frame)
        if faces:
            np.testing.assert_array_equal(runner._face_or_whole(frame), clf.crop_face(frame, faces[0]))
            compared += 1
    assert compared >= 3
