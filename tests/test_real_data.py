"""Checks on the real FER2013 happy/sad folder; skipped where it is absent."""
from collections import Counter

from train.data import scan


def test_scan_finds_the_known_warts(real_data):
    s = scan(real_data)
    assert s.labels == ["happy", "sad"]
    # 7,215 + 4,830 files; the one image filed under both labels is left out.
    assert len(s.y) == 7215 + 4830 - 2
    assert [sorted(c["paths"]) for c in s.conflicts] == [["happy/Training_87607167.jpg",
                                                          "sad/Training_48621797.jpg"]]
    # 212 groups of byte-identical files, one of them the conflict above.
    assert s.duplicate_groups() + len(s.conflicts) == 212
    # ... holding 438 files, two of which (the conflict) were left out.
    assert sum(n for n in Counter(s.sha256).values() if n > 1) == 438 - 2
    assert not s.skipped
