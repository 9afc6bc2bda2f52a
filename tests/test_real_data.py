"""Checks on the real FER2013 happy/sad folder; skipped where it is absent."""

import json
import subprocess
import sys

from helpers import REPO


def test_check_finds_the_known_warts(real_data, tmp_path):
    """`happysad-train --check` reports what the data's README says is there."""
    res = subprocess.run(
        [sys.executable, "-m", "happysad.train", "--check", str(real_data), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "data_report.json").read_text())
    assert r["labels"] == ["happy", "sad"]
    # 7,215 + 4,830 files; the one image filed under both labels is left out.
    assert r["files_per_class"] == {"happy": 7214, "sad": 4829}
    assert r["exact_duplicates"]["groups"] == 212 and r["exact_duplicates"]["files"] == 438
    assert [c["paths"] for c in r["conflicts"]] == [["happy/Training_87607167.jpg", "sad/Training_48621797.jpg"]]
    assert {x["path"] for x in r["near_blank"]["list"]} >= {"happy/Training_87607167.jpg", "sad/Training_48621797.jpg"}
    assert r["near_duplicates"]["groups"] > 0
    assert r["sizes"] == {"48x48": 12043} and r["skipped"] == []
    assert "212 groups (438 files)" in res.stdout
