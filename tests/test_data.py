from collections import Counter

import cv2
import numpy as np
import pytest

from happysad.edge import HappysadError
from happysad.edge.metrics import classification_metrics
from happysad.train.data import scan
from happysad.train.split import make_split, parse_ratios


def test_split_is_stratified_grouped_and_seeded():
    y = np.array([0] * 600 + [1] * 400)
    # Every tenth image has a twin with the same group key.
    groups = [f"g{i // 2}" if i % 10 < 2 else f"u{i}" for i in range(len(y))]
    part = make_split(y, groups, (0.7, 0.2, 0.1), seed=3)
    np.testing.assert_array_equal(part, make_split(y, groups, (0.7, 0.2, 0.1), seed=3))
    assert not np.array_equal(part, make_split(y, groups, (0.7, 0.2, 0.1), seed=4))
    by_group = {}
    for g, p in zip(groups, part):
        by_group.setdefault(g, set()).add(int(p))
    assert all(len(parts) == 1 for parts in by_group.values())
    for cls, n in ((0, 600), (1, 400)):
        counts = np.bincount(part[y == cls], minlength=3) / n
        np.testing.assert_allclose(counts, [0.7, 0.2, 0.1], atol=0.02)


def test_parse_ratios():
    assert parse_ratios("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.5,0.5", "0.7,0.2,0.2", "a,b,c", "0.9,0.1,0"):
        with pytest.raises(ValueError):
            parse_ratios(bad)


def test_scan_reports_bad_files_and_conflicts(dataset, tmp_path):
    s = scan(dataset)
    reasons = {x["path"]: x["reason"] for x in s.skipped}
    assert "not an image file" in reasons["happy/notes.txt"]
    assert reasons["happy/empty.jpg"] == "empty file"
    assert "not a decodable image" in reasons["sad/truncated.png"]
    assert "not a decodable image" in reasons["sad/corrupt.jpg"]
    assert s.exact_groups == [["happy/copy_of_001.png", "happy/happy_001.png"]]
    # The copy shares its group with the original, so the split keeps them together.
    assert s.groups[s.paths.index("happy/copy_of_001.png")] == s.groups[s.paths.index("happy/happy_001.png")]
    assert Counter(s.y.tolist()) == {0: 61, 1: 60}
    assert set(s.sizes) == {(48, 48)} and set(s.colors) == {"gray"}


def test_identical_image_under_both_labels_is_left_out(tmp_path):
    from synth import make_dataset

    root = make_dataset(tmp_path / "d", per_class=5)
    (root / "sad" / "same.png").write_bytes((root / "happy" / "happy_000.png").read_bytes())
    s = scan(root)
    assert len(s.conflicts) == 1
    assert s.conflicts[0]["labels"] == ["happy", "sad"]
    assert sorted(s.conflicts[0]["paths"]) == ["happy/happy_000.png", "sad/same.png"]
    assert "happy/happy_000.png" not in s.paths and "sad/same.png" not in s.paths


def test_scan_needs_two_class_folders(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(HappysadError, match="need at least 2"):
        scan(tmp_path)
    with pytest.raises(HappysadError, match="no such data folder"):
        scan(tmp_path / "absent")


def test_metrics_from_confusion_counts():
    y_true = [0, 0, 0, 1, 1, 1, 1, 1]
    y_pred = [0, 1, 0, 1, 1, 0, 1, 1]
    m = classification_metrics(y_true, y_pred, ["happy", "sad"])
    assert m["confusion_matrix"] == [[2, 1], [1, 4]]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["per_class"]["sad"]["precision"] == pytest.approx(4 / 5)
    assert m["per_class"]["happy"]["recall"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    f1_happy = 2 * (2 / 3) * (2 / 3) / (4 / 3)
    f1_sad = 2 * 0.8 * 0.8 / 1.6
    assert m["f1"] == pytest.approx((f1_happy + f1_sad) / 2)


def test_near_duplicates_blank_and_color_are_reported(tmp_path):
    from happysad.train.report import data_report, report_summary

    from synth import make_dataset

    root = make_dataset(tmp_path / "d", per_class=6)
    face = cv2.imread(str(root / "happy" / "happy_002.png"), cv2.IMREAD_GRAYSCALE)
    # A re-encoded, slightly brightened and shifted copy is a near-duplicate, not a byte copy.
    shifted = np.clip(np.roll(face, 1, axis=1).astype(int) + 6, 0, 255).astype(np.uint8)
    cv2.imwrite(str(root / "happy" / "retouched.jpg"), shifted, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(root / "sad" / "blank.png"), np.full((48, 48), 128, np.uint8))
    color = cv2.cvtColor(cv2.imread(str(root / "sad" / "sad_003.png")), cv2.COLOR_BGR2HSV)
    cv2.imwrite(str(root / "sad" / "color.png"), cv2.resize(color, (96, 64)))
    s = scan(root)
    r = data_report(s)
    assert any({"happy/happy_002.png", "happy/retouched.jpg"} <= set(g) for g in r["near_duplicates"]["list"])
    assert r["exact_duplicates"]["groups"] == 0
    assert [x["path"] for x in r["near_blank"]["list"]] == ["sad/blank.png"]
    assert r["color_modes"] == {"gray": 14, "color": 1}  # 12 drawn, the copy and the blank
    assert r["sizes"] == {"48x48": 14, "64x96": 1}
    text = report_summary(r)
    assert "near-blank images: sad/blank.png" in text


def test_phash_matches_re_encoded_and_differs_for_other_faces():
    from happysad.train.data import hamming_pairs, phash

    from synth import draw_face

    rng = np.random.default_rng(5)
    faces = [draw_face(rng, i % 2 == 0) for i in range(20)]
    jpeg = cv2.imdecode(cv2.imencode(".jpg", faces[0], [cv2.IMWRITE_JPEG_QUALITY, 70])[1], cv2.IMREAD_GRAYSCALE)
    hashes = np.array([phash(f) for f in faces] + [phash(jpeg)], dtype=np.uint64)
    pairs = hamming_pairs(hashes, 4, block=7)
    assert (0, 20) in pairs
    # Brute force agrees with the blockwise search.
    brute = [
        (i, j) for i in range(21) for j in range(i + 1, 21) if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 4
    ]
    assert sorted(pairs) == brute


def test_the_split_does_not_depend_on_the_input_size(tmp_path):
    """Near-duplicate groups are hashed at the image's own size, so a 64 px
    run splits a folder exactly as a 48 px run does."""
    from happysad.train.data import scan
    from happysad.train.split import make_split

    from synth import draw_face

    rng = np.random.default_rng(7)
    for label in ("happy", "sad"):
        (tmp_path / label).mkdir()
        for i in range(40):
            face = cv2.resize(draw_face(rng, label), (100, 100), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(tmp_path / label / f"{i:02d}.png"), face)
        # Two near-copies (re-encoded), to be grouped at either size.
        face = cv2.imread(str(tmp_path / label / "00.png"))
        cv2.imwrite(str(tmp_path / label / "00-copy.jpg"), face, [cv2.IMWRITE_JPEG_QUALITY, 80])
    small, large = scan(tmp_path, (48, 48)), scan(tmp_path, (64, 64))
    assert np.array_equal(small.phash, large.phash)
    assert np.array_equal(small.groups, large.groups) and len(set(small.groups)) < len(small.groups)
    parts = [make_split(s.y, s.groups, (0.7, 0.2, 0.1), 0) for s in (small, large)]
    assert np.array_equal(*parts)


def test_roc_auc_and_threshold_against_brute_force():
    from happysad.edge.metrics import best_threshold, roc_auc

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    scores = np.round(np.clip(y * 0.3 + rng.normal(0.35, 0.2, 300), 0, 1), 2)  # with ties
    pos, neg = scores[y == 1], scores[y == 0]
    expected = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert roc_auc(y, scores) == pytest.approx(expected)
    t = best_threshold(y, scores)

    def bal(th):
        pred = scores >= th
        return ((pred & (y == 1)).sum() / (y == 1).sum() + (~pred & (y == 0)).sum() / (y == 0).sum()) / 2

    assert all(bal(t) >= bal(c) - 1e-12 for c in np.linspace(0, 1, 101))
