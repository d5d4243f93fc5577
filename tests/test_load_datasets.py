"""Reading the tutorial's CSVs, the ones people really have included."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cats_dogs.augmentation import augment_photo
from cats_dogs.classes import read_class_names
from cats_dogs.csv_rows import CsvError, infer_num_classes, read_csv_rows
from cats_dogs.photo_batches import collate_readable
from cats_dogs.preprocessing import eval_transform, normalize
from conftest import REPO, make_broken_files, make_photo
from load_datasets import DatasetLoader


def test_reads_the_tutorial_format(dataset: Path) -> None:
    samples = read_csv_rows(dataset / "train.csv")
    assert len(samples) == 16
    assert samples[0] == (dataset / "train/cat/cat.0.jpg", 0)
    assert {label for _, label in samples} == {0, 1}


def test_accepts_excel_csv_with_bom_header_crlf_quotes_and_chinese_names(tmp_path: Path) -> None:
    make_photo(tmp_path / "train" / "猫" / "我的 猫,1.jpg", 0, seed=1)
    make_photo(tmp_path / "train" / "dog" / "dog 2.png", 1, seed=2)
    text = 'path,label\r\n"train/猫/我的 猫,1.jpg",0\r\n\r\n  train\\dog\\dog 2.png , 1 \r\n'
    (tmp_path / "train.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    samples = read_csv_rows(tmp_path / "train.csv")
    assert samples == [(tmp_path / "train/猫/我的 猫,1.jpg", 0), (tmp_path / "train/dog/dog 2.png", 1)]


def test_lists_every_bad_row_by_line_number(tmp_path: Path) -> None:
    make_photo(tmp_path / "a.jpg", 0, seed=1)
    (tmp_path / "train.csv").write_text("a.jpg,0\nmissing.jpg,1\na.jpg,cat\na.jpg,7\na.jpg,0,extra\na.jpg,1\n")
    with pytest.raises(CsvError) as error:
        read_csv_rows(tmp_path / "train.csv", num_classes=2)
    message = str(error.value)
    assert "4 bad row(s)" in message
    assert "line 2: file not found" in message and "missing.jpg" in message
    assert "line 3: label 'cat' is not an integer" in message
    assert "line 4: label 7 is out of range 0..1" in message
    assert "line 5: expected 2 fields" in message
    assert "line 1" not in message and "line 6" not in message


def test_refuses_an_empty_csv(tmp_path: Path) -> None:
    (tmp_path / "val.csv").write_text("\n\n")
    with pytest.raises(CsvError, match="val.csv: no rows"):
        read_csv_rows(tmp_path / "val.csv")


def test_class_names_from_classes_txt_or_defaults(tmp_path: Path) -> None:
    assert read_class_names(tmp_path, 2) == ["cat", "dog"]
    assert read_class_names(tmp_path, 3) == ["class_0", "class_1", "class_2"]
    (tmp_path / "classes.txt").write_text("\ufeffbird\nfish\n\nhorse\n", encoding="utf-8")
    assert read_class_names(tmp_path, 3) == ["bird", "fish", "horse"]
    with pytest.raises(CsvError, match="names 3 classes"):
        read_class_names(tmp_path, 4)


def test_dataset_gives_uint8_photos_and_labels(dataset: Path) -> None:
    val = DatasetLoader(dataset / "val.csv", image_size=32)
    image, label, index, problem = val[0]
    assert image.shape == (32, 32, 3) and image.dtype == torch.uint8 and label == 0
    assert index == 0 and problem is None
    assert len(val) == 8 and val.num_classes == 2
    # Evaluation preprocessing is deterministic; training augmentation is not.
    assert torch.equal(val[1][0], val[1][0])
    train = DatasetLoader(dataset / "train.csv", image_size=32, train=True)
    assert not all(torch.equal(train[0][0], train[0][0]) for _ in range(5))
    plain = DatasetLoader(dataset / "train.csv", image_size=32, train=True, augment="none")
    assert torch.equal(normalize(plain[0][0]), eval_transform(32)(plain.load_image(0)))  # what the page computes
    assert (train.augment, plain.augment, val.augment) == ("light", "none", "none")  # one spelling: none|light|strong
    with pytest.raises(ValueError, match="expected one of none, light, strong"):
        DatasetLoader(dataset / "train.csv", image_size=32, train=True, augment=True)
    # The in-memory cache holds the first stage's output: same tensors, no decoding afterwards.
    expected = [val[i][0] for i in range(len(val))]
    val.cache_images()
    val.samples = [(Path("gone.jpg"), label) for _, label in val.samples]
    assert all(torch.equal(val[i][0], expected[i]) for i in range(len(val)))
    assert val.cache_bytes() == 8 * 3 * 32 * 32


def test_number_of_classes_is_the_run_of_labels_used_from_zero(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text("a.jpg,0\nb.jpg,1\nc.jpg,2\nd.jpg,5\n")
    assert infer_num_classes(csv) == 3  # so the stray 5 is reported as out of range
    csv.write_text("path,label\na.jpg,0\n")
    assert infer_num_classes(csv) == 2


def test_unreadable_photos_are_left_out_of_the_batch_with_their_reason(tmp_path: Path) -> None:
    broken = make_broken_files(tmp_path / "photos")
    rows = [f"photos/{name}.{'png' if name == 'bomb' else 'jpg'},{i % 2}" for i, name in
            enumerate(("whole", "truncated", "empty", "text", "bomb"))]
    (tmp_path / "val.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    dataset = DatasetLoader(tmp_path / "val.csv", image_size=16)
    assert dataset.empty_files == [str(broken["empty"])] and len(dataset) == 4
    uncached = [dataset[i] for i in range(len(dataset))]
    dataset.cache_images()
    assert [item[3] for item in uncached] == [dataset[i][3] for i in range(len(dataset))]
    images, labels, indices, problems = collate_readable(uncached)
    assert images.shape == (1, 16, 16, 3) and labels.tolist() == [0] and indices.tolist() == [0]
    assert [problem.split(": ")[0] for problem in problems] == [str(broken[k]) for k in ("truncated", "text", "bomb")]
    images, labels, indices, problems = collate_readable([dataset[1]])
    assert images.numel() == 0 and labels.numel() == 0 and len(problems) == 1


@pytest.mark.parametrize("cache", ["off", "disk", "memory"])
def test_a_batch_is_its_photos_one_by_one_on_two_threads_and_in_a_worker(dataset: Path, cache: str) -> None:
    (dataset / "train" / "notes.jpg").write_text("not a photo", encoding="utf-8")
    rows = (dataset / "train.csv").read_text(encoding="utf-8").splitlines()
    rows.insert(5, "train/notes.jpg,1")  # unreadable, in the middle of the batch
    (dataset / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    train = DatasetLoader(dataset / "train.csv", image_size=32, train=True)
    plain = DatasetLoader(dataset / "train.csv", image_size=32, train=True, augment="none")
    assert (train.augment, plain.augment) == ("light", "none")
    if cache != "off":
        train.cache_images(cache)
        plain.cache_images(cache)
    order = list(range(len(train)))[::-1]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the two-thread path, even on a one-core machine
    try:
        for photos in (train, plain):
            check_batch_against_photos(photos, order, dataset / "train" / "notes.jpg")
    finally:
        torch.set_num_threads(threads)
    # In a worker process the batch is made in shared memory and handed over whole. In a process of its own, as
    # in train.py: a forked worker in pytest's own process (with OpenVINO loaded by other tests) crashed it later.
    check = f"""
import sys, torch
sys.path.insert(0, {str(REPO)!r})
from torch.utils.data import DataLoader
from load_datasets import DatasetLoader
from cats_dogs.photo_batches import collate_readable
train = DatasetLoader({str(dataset / "train.csv")!r}, image_size=32, train=True, augment="none")
train.cache_images({cache!r}) if {cache!r} != "off" else None
order = list(range(len(train)))[::-1]
loader = DataLoader(train, batch_size=len(train), sampler=order, num_workers=1, collate_fn=collate_readable)
images, labels, indices, problems = next(iter(loader))
expected = collate_readable([train[i] for i in order])
assert torch.equal(images, expected[0]) and images.shape == (16, 32, 32, 3) and len(problems) == 1, problems
print("same batch")
"""
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=dataset, timeout=120)
    assert result.returncode == 0 and "same batch" in result.stdout, result.stderr


def check_batch_against_photos(train: DatasetLoader, order: list[int], broken: Path) -> None:
    """The same seed, the same pixels: the batch made on two threads equals the photos made one by one."""
    random.seed(3)
    one_by_one = [train[i] for i in order]
    random.seed(3)
    images, labels, indices, problems = collate_readable(train.__getitems__(order))
    expected = collate_readable(one_by_one)
    assert torch.equal(images, expected[0]) and images.shape == (16, 32, 32, 3)
    assert labels.tolist() == expected[1].tolist() and indices.tolist() == expected[2].tolist()
    assert len(problems) == 1 and problems[0].startswith(str(broken))
    if train.augment != "none":  # the crop and flip of augmentation.augment_photo, the same random draws
        random.seed(3)
        assert torch.equal(images[0], augment_photo(train.resized(order[0])))


def test_a_row_must_stay_inside_the_csvs_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_photo(data / "inside.jpg", 0, seed=1)
    (data / "sub").mkdir()
    make_photo(tmp_path / "p.jpg", 1, seed=2)  # a real photo, one folder up
    rows = "inside.jpg,0\n../../../../etc/passwd,0\n/etc/hostname,1\n../p.jpg,1\nC:\\Windows\\win.ini,0\nsub/../inside.jpg,0\n"
    (data / "train.csv").write_text(rows, encoding="utf-8")
    with pytest.raises(CsvError) as error:
        read_csv_rows(data / "train.csv")
    message = str(error.value)
    assert "has 4 bad row(s)" in message
    for line, path in ((2, "../../../../etc/passwd"), (3, "/etc/hostname"), (4, "../p.jpg"), (5, "C:\\Windows\\win.ini")):
        assert f"line {line}: {path} is outside the CSV's folder" in message


def test_class_names_that_are_paths_are_refused_where_classes_txt_names_them(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("猫\n\n../escaped_cat\n/etc\n..\n", encoding="utf-8")
    with pytest.raises(CsvError) as error:
        read_class_names(tmp_path, 2)
    message = str(error.value)
    assert str(tmp_path / "classes.txt") in message
    assert "line 3: class name '../escaped_cat' is a path" in message and "line 4: class name '/etc' is a path" in message
    assert "line 5: class name '..' is a path" in message and "line 1" not in message  # Chinese names are fine
    (tmp_path / "classes.txt").write_text("猫\n狗\n", encoding="utf-8")
    assert read_class_names(tmp_path, 2) == ["猫", "狗"]
