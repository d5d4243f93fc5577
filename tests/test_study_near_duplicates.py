"""study_near_duplicates.py run for real on a few generated photos: a row per kind of copy, and the closest pairs."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_script
from test_crawl import jpeg, scene


def test_the_study_measures_copies_and_distinct_pairs(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / "photos").mkdir(exist_ok=True)
        (tmp_path / "photos" / f"{i}.jpg").write_bytes(jpeg(scene(i, size=(320, 240))))
    out = run_script("studies/study_near_duplicates.py", "photos", "--copies", "3", cwd=tmp_path).stdout
    rows = re.findall(r"^\| (.+?) \| (.+) \|$", out, re.M)[1:]  # after the header
    assert [name for name, _ in rows] == ["1/4 size, JPEG 75", "1/2 size, JPEG 90", "3/4 size, JPEG 60", "same size, JPEG 50"]
    assert all(sum(int(count) for count in re.findall(r"\d+: (\d+)", counts)) == 3 for _, counts in rows)
    assert "4 photos in photos" in out and "6 pairs of distinct photos" in out
