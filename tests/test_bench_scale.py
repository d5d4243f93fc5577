"""bench_scale.py run for real at a tiny size: every step runs, is timed and measured, and nothing is left behind."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_script


def test_every_step_is_timed_with_its_memory_and_the_photos_are_deleted(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    result = run_script("bench/bench_scale.py", "--train", "40", "--test", "12", "--evaluate", "8", "--image-size", "32",
                        "--workers", "1", "--train-seconds", "5", "--tmp", str(tmp_path / "tmp"), cwd=tmp_path,
                        timeout=600)
    rows = re.findall(r"^\| (.+?) \| (\d+) s \| (.*?) \| (\d+) MB \|$", result.stdout, re.M)
    steps = [name.split(" on ")[0].split(",")[0].split(" (")[0] for name, *_ in rows]
    assert steps == ["`prepare_data.py --from`", "disk cache build", "one loader epoch from the disk cache",
                     "`train.py`", "`train.py`", "`evaluate.py`", "`predict.py --csv`"]
    assert "40 photos" in rows[0][0] and "12 photos" in rows[-1][0]
    assert int(rows[3][3]) > 100 and int(rows[6][3]) > 100  # a ResNet50 process measured, children included
    assert re.search(r"[\d.]+× one process", rows[1][2])
    assert not list((tmp_path / "tmp").iterdir())  # the generated photos are deleted
