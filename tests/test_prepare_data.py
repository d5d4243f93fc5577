"""prepare_data.py run for real on every layout it accepts, broken files and downloads included."""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import os
import shutil
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from conftest import FAST_TRAIN_FLAGS, WindowsZipInfo, make_broken_files, make_photo, run_script
from load_datasets import read_csv_rows


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def label_counts(csv_path: Path) -> Counter:
    return Counter(label for _, label in read_csv_rows(csv_path))


def make_kaggle_folder(folder: Path, per_class: int) -> Path:
    for label, name in enumerate(("cat", "dog")):
        for i in range(per_class):
            make_photo(folder / f"{name}.{i + 1}.jpg", label, seed=label * 1000 + i, size=(24, 24))
    return folder


def test_kaggle_names_give_a_stratified_deterministic_split(tmp_path: Path) -> None:
    real = os.environ.get("CATS_DOGS_KAGGLE_DIR")
    source = Path(real) if real else make_kaggle_folder(tmp_path / "kaggle", per_class=25)
    per_class = len(list(source.glob("cat.*")))
    before = snapshot(source)
    run_script("prepare_data.py", "--from", str(source), "--out", "a", cwd=tmp_path)
    run_script("prepare_data.py", "--from", str(source), "--out", "b", cwd=tmp_path)
    assert snapshot(source) == before  # the user's folder is never modified
    assert (tmp_path / "a/classes.txt").read_text() == "cat\ndog\n"
    val_per_class = round(0.2 * per_class)
    assert label_counts(tmp_path / "a/val.csv") == {0: val_per_class, 1: val_per_class}
    assert label_counts(tmp_path / "a/train.csv") == {0: per_class - val_per_class, 1: per_class - val_per_class}
    assert (tmp_path / "a/val.csv").read_text() == (tmp_path / "b/val.csv").read_text()  # same seed, same split
    train = {p.name for p, _ in read_csv_rows(tmp_path / "a/train.csv")}
    val = {p.name for p, _ in read_csv_rows(tmp_path / "a/val.csv")}
    assert not train & val and len(train | val) == 2 * per_class
    result = run_script("train.py", *FAST_TRAIN_FLAGS, "--data-dir", "a", "--epochs", "1", "--swanlab-mode", "disabled",
                        cwd=tmp_path, timeout=900)
    assert f"{2 * (per_class - val_per_class)} train / {2 * val_per_class} val photos" in result.stdout


def test_class_folders_with_broken_files_and_duplicates(tmp_path: Path) -> None:
    source = tmp_path / "photos"
    for i in range(5):
        make_photo(source / "cat" / f"c{i}.jpg", 0, seed=i)
        make_photo(source / "dog" / "nested" / f"d{i}.png", 1, seed=100 + i)
    broken = make_broken_files(source / "dog")
    (source / "dog" / "whole.jpg").unlink()
    shutil.copy(source / "cat" / "c0.jpg", source / "cat" / "z copy.jpg")
    make_photo(source / "cat" / "我的 猫,1.jpg", 0, seed=50)  # Chinese, a space and a comma
    for mode, name in (("L", "gray.jpg"), ("RGBA", "alpha.png"), ("P", "palette.gif"), ("CMYK", "cmyk.jpg")):
        Image.open(source / "cat" / "c1.jpg").convert(mode).save(source / "cat" / name)
    result = run_script("prepare_data.py", "--from", str(source), "--out", "ds", "--val-ratio", "0.4", cwd=tmp_path)
    out = result.stdout
    assert "left out 5 file(s)" in out and "cat           6       4" in out
    assert f"{broken['empty']}: empty file" in out
    assert f"{broken['truncated']}: the file is cut short" in out
    assert f"{broken['text']}: not an image file" in out
    assert f"{broken['bomb']}: too many pixels" in out
    assert "z copy.jpg: byte-identical duplicate of " + str(source / "cat" / "c0.jpg") in out
    rows = read_csv_rows(tmp_path / "ds/train.csv") + read_csv_rows(tmp_path / "ds/val.csv")
    names = sorted(p.name for p, _ in rows)
    assert names == sorted([f"c{i}.jpg" for i in range(5)] + [f"d{i}.png" for i in range(5)]
                           + ["gray.jpg", "alpha.png", "palette.gif", "cmyk.jpg", "我的 猫,1.jpg"])
    assert all(p.is_relative_to(tmp_path / "ds") for p, _ in rows)  # copied in, not referenced outside


def test_existing_split_is_kept_and_zip_is_accepted(tmp_path: Path) -> None:
    layout = tmp_path / "src" / "cats_and_dogs_filtered"
    for split, count in (("train", 6), ("validation", 3)):
        for label, name in enumerate(("cats", "dogs")):
            for i in range(count):
                make_photo(layout / split / name / f"{name}.{split}.{i}.jpg", label, seed=(split == "train") * 500 + i)
    archive = tmp_path / "filtered.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in layout.rglob("*.jpg"):
            zipped.write(path, path.relative_to(tmp_path / "src"))
    result = run_script("prepare_data.py", "--from", str(archive), "--out", "ds", cwd=tmp_path)
    assert "kept the split the source already had" in result.stdout
    assert (tmp_path / "ds/classes.txt").read_text() == "cats\ndogs\n"
    assert label_counts(tmp_path / "ds/train.csv") == {0: 6, 1: 6}
    assert label_counts(tmp_path / "ds/val.csv") == {0: 3, 1: 3}


def test_chinese_folder_names_from_a_windows_zip_arrive_intact(tmp_path: Path) -> None:
    archive = tmp_path / "宠物照片.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for label, name in enumerate(("猫", "狗")):
            for i in range(5):
                photo = make_photo(tmp_path / "made" / f"{label}{i}.jpg", label, seed=label * 100 + i)
                zipped.writestr(WindowsZipInfo(f"照片/{name}/{name}{i}.jpg"), photo.read_bytes())
    run_script("prepare_data.py", "--from", str(archive), "--out", "ds", cwd=tmp_path)
    class_names = (tmp_path / "ds/classes.txt").read_text(encoding="utf-8").split()
    assert sorted(class_names) == ["狗", "猫"]  # not cp437 mojibake such as "├и"
    rows = [line.split(",") for csv_name in ("train.csv", "val.csv")
            for line in (tmp_path / "ds" / csv_name).read_text(encoding="utf-8-sig").splitlines()]
    assert len(rows) == 10
    for path, label in rows:
        assert (tmp_path / "ds" / path).is_file() and Path(path).parent.name == class_names[int(label)], path


def test_three_way_split_writes_test_csv(tmp_path: Path) -> None:
    source = make_kaggle_folder(tmp_path / "kaggle", per_class=10)
    run_script("prepare_data.py", "--from", str(source), "--out", "ds", "--split", "0.6", "0.2", "0.2", cwd=tmp_path)
    assert label_counts(tmp_path / "ds/train.csv") == {0: 6, 1: 6}
    assert label_counts(tmp_path / "ds/val.csv") == {0: 2, 1: 2}
    assert label_counts(tmp_path / "ds/test.csv") == {0: 2, 1: 2}


def test_photos_already_under_out_are_referenced_in_place(tmp_path: Path) -> None:
    make_kaggle_folder(tmp_path / "datasets" / "raw", per_class=5)
    run_script("prepare_data.py", "--from", "datasets/raw", cwd=tmp_path)
    with open(tmp_path / "datasets/train.csv", encoding="utf-8") as file:
        paths = [row[0] for row in csv.reader(file)]
    assert paths and all(path.startswith("raw/") for path in paths)
    assert not (tmp_path / "datasets/train").exists()


def test_nothing_usable_gets_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "empty_folder").mkdir()
    result = run_script("prepare_data.py", "--from", "empty_folder", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "Found no classes in" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server: the tests never use the internet."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_download_imports_a_tutorial_sized_sample(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    url, root = http_server
    layout = tmp_path / "archive" / "cats_and_dogs_filtered"
    for split, count in (("train", 150), ("validation", 40)):
        for label, name in enumerate(("cats", "dogs")):
            for i in range(count):
                make_photo(layout / split / name / f"{name}.{i}.jpg", label, seed=(split == "train") * 500 + i, size=(8, 8))
    shutil.make_archive(str(root / "cats_and_dogs_filtered"), "zip", tmp_path / "archive")
    result = run_script("prepare_data.py", "--download", f"{url}/cats_and_dogs_filtered.zip", "--out", "ds", cwd=tmp_path)
    assert label_counts(tmp_path / "ds/train.csv") == {0: 138, 1: 137}
    assert label_counts(tmp_path / "ds/val.csv") == {0: 35, 1: 35}
    assert "using" not in result.stdout
    # Re-running is safe and does not download again; --full keeps everything.
    again = run_script("prepare_data.py", "--download", f"{url}/cats_and_dogs_filtered.zip", "--out", "ds", "--full",
                       cwd=tmp_path)
    assert "downloaded before" in again.stdout
    assert label_counts(tmp_path / "ds/train.csv") == {0: 150, 1: 150}


def test_failed_download_leaves_nothing_and_points_to_from(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    url, root = http_server
    for target in (f"{url}/missing.zip", "http://127.0.0.1:9/closed.zip"):
        result = run_script("prepare_data.py", "--download", target, "--out", "ds", cwd=tmp_path, check=False)
        assert result.returncode != 0
        assert "Could not download" in result.stderr and "--from" in result.stderr and "Traceback" not in result.stderr
    (root / "page.zip").write_text("<html>not a zip</html>")
    result = run_script("prepare_data.py", "--download", f"{url}/page.zip", "--out", "ds", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "did not send a .zip archive" in result.stderr
    assert not (tmp_path / "ds" / "train.csv").exists()
    assert not [p for p in (tmp_path / "ds").rglob("*") if p.is_file()]  # no partial download kept


def test_many_left_out_files_are_counted_and_listed_in_a_file(tmp_path: Path) -> None:
    source = make_kaggle_folder(tmp_path / "photos", per_class=5)
    for i in range(25):
        (source / f"cat.{100 + i}.jpg").write_bytes(b"")
    result = run_script("prepare_data.py", "--from", str(source), "--out", "ds", cwd=tmp_path)
    assert "left out 25 file(s):\n      25  empty file\n" in result.stdout
    assert result.stdout.count(": empty file") == 10 and "... and 15 more" in result.stdout
    listed = (tmp_path / "ds/left_out.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(listed) == sorted(f"{source / f'cat.{100 + i}.jpg'}: empty file" for i in range(25))
    # Without broken files, the list of an earlier run is removed: it would describe another dataset.
    for i in range(25):
        (source / f"cat.{100 + i}.jpg").unlink()
    result = run_script("prepare_data.py", "--from", str(source), "--out", "ds", cwd=tmp_path)
    assert "left out" not in result.stdout and not (tmp_path / "ds/left_out.txt").exists()
