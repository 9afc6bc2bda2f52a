import json
from collections import Counter

import numpy as np
import pytest

from edge import HappysadError
from edge.metrics import classification_metrics
from train.data import make_split, parse_ratios, scan


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
    assert s.duplicate_groups() == 1
    assert s.pixels.shape == (len(s.y), 48, 48, 1)
    assert Counter(s.y.tolist()) == {0: 61, 1: 60}


def test_identical_image_under_both_labels_is_left_out(tmp_path):
    from synth import make_dataset
    root = make_dataset(tmp_path / "d", per_class=5)
    (root / "sad" / "same.png").write_bytes((root / "happy" / "happy_000.png").read_bytes())
    s = scan(root)
    assert len(s.conflicts) == 1
    assert sorted(s.conflicts[0]["paths"]) == ["happy/happy_000.png", "sad/same.png"]
    assert "happy/happy_000.png" not in s.paths and "sad/same.png" not in s.paths


def test_scan_needs_two_class_folders(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(HappysadError, match="need exactly 2"):
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
