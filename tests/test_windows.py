"""What a Windows learner meets, without a Windows machine.

- Consoles and log files in GBK (code page 936) or cp1252 that cannot encode every file name.
- DataLoader workers started with `spawn` (Windows has no fork): everything they get must pickle.
- Backslash paths in CSVs, and a data folder whose path holds Chinese and spaces.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cats_dogs.checkpoint import read_checkpoint
from conftest import REPO, make_photo, run_script

# A space, a comma, Chinese and an emoji: GBK cannot encode the emoji, cp1252 neither it nor the Chinese.
ODD_NAME = "猫咪 照片,第1张 😺"


def make_windows_dataset(root: Path) -> Path:
    """The tutorial's layout under a folder named in Chinese with spaces, CSV rows with backslashes as Excel on
    Windows saves them (BOM, CRLF), photo names holding ODD_NAME, and one unreadable photo so that a name is printed."""
    rows: dict[str, list[list[str]]] = {"train": [], "val": []}
    for split, count in (("train", 4), ("val", 2)):
        for label, name in enumerate(("猫", "狗")):
            for i in range(count):
                relative = Path(split, name, f"{ODD_NAME} {i}.jpg")
                make_photo(root / relative, label, seed=(split == "val") * 100 + label * 10 + i)
                rows[split].append([str(relative).replace("/", "\\"), str(label)])
    broken = root / "train" / "猫" / f"{ODD_NAME} broken.jpg"
    broken.write_text("not a photo", encoding="utf-8")
    rows["train"].append([str(broken.relative_to(root)).replace("/", "\\"), "0"])
    for split, split_rows in rows.items():
        with open(root / f"{split}.csv", "w", newline="", encoding="utf-8-sig") as file:
            csv.writer(file, lineterminator="\r\n").writerows(split_rows)
    return root


@pytest.mark.parametrize("encoding", ["gbk", "cp1252"])
def test_every_script_prints_unencodable_names_escaped_instead_of_crashing(tmp_path: Path, encoding: str) -> None:
    data = make_windows_dataset(tmp_path / "我的 数据" / "datasets")
    console = {"PYTHONIOENCODING": encoding}  # run_script decodes strictly in it, as the console would have to
    escaped = "\\U0001f63a"  # how the emoji is shown where the console cannot show it
    trained = run_script("train.py", "--data-dir", str(data), "--weights", "none", "--model", "resnet18", "--image-size", "32",
                         "--epochs", "1",
                         "--batch-size", "4", "--swanlab-mode", "disabled", cwd=tmp_path, env=console)
    assert "skipped unreadable photo" in trained.stdout and escaped in trained.stdout
    assert read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")["epoch"] == 1

    evaluated = run_script("evaluate.py", "--csv", str(data / "train.csv"), cwd=tmp_path, env=console)
    assert "broken.jpg: not an image file" in evaluated.stdout and escaped in evaluated.stdout

    predicted = run_script("predict.py", str(data / "val"), "--csv", "predictions.csv", cwd=tmp_path, env=console)
    assert predicted.stdout.count(escaped) == 4  # one line per val photo
    with open(tmp_path / "predictions.csv", encoding="utf-8") as file:  # the file itself keeps the real names
        assert sum(ODD_NAME in row[0] for row in csv.reader(file)) == 4

    prepared = run_script("prepare_data.py", "--from", str(data / "train"), "--out", str(tmp_path / "prepared"),
                          cwd=tmp_path, env=console)
    assert "not an image file" in prepared.stdout + prepared.stderr and escaped in prepared.stdout + prepared.stderr
    names = (tmp_path / "prepared/classes.txt").read_text(encoding="utf-8").split()
    assert names == ["狗", "猫"]  # written in UTF-8 whatever the console


def test_training_with_two_data_workers_started_by_spawn_as_on_windows(tmp_path: Path) -> None:
    data = make_windows_dataset(tmp_path / "数据 集")
    # As `python train.py` on Windows: the workers are new processes that re-import train.py and receive the
    # dataset, the collate function and the transforms pickled. A lambda or a local function there fails.
    launcher = ("import multiprocessing, runpy, sys; multiprocessing.set_start_method('spawn'); "
                "sys.argv = sys.argv[1:]; sys.path.insert(0, sys.argv[0].rsplit('/', 1)[0]); "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
    command = [sys.executable, "-c", launcher, (REPO / "train.py").as_posix(), "--data-dir", str(data), "--weights", "none",
               "--model", "resnet18",
               "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--num-workers", "2", "--no-cache",
               "--swanlab-mode", "disabled"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, encoding="utf-8", timeout=600,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8"}, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 data workers" in result.stdout and "skipped 1 unreadable photo(s)" in result.stdout
    checkpoint = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    assert checkpoint["config"]["num_workers"] == 2 and checkpoint["history"][0]["train_images_per_s"] > 0
