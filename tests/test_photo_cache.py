"""photo_cache.py: photos decoded once, on disk, never stale, never half-written."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cats_dogs import photo_batches
from cats_dogs.checkpoint import read_checkpoint
from cats_dogs.photo_cache import DiskCache, build_cache, open_cache
from conftest import REPO, make_broken_files, make_dataset, make_photo, run_script
from load_datasets import DatasetLoader


def cache_files(data: Path) -> list[str]:
    return sorted(p.name for p in (data / ".cache").iterdir())


def test_disk_memory_and_no_cache_give_identical_pixels(dataset: Path) -> None:
    plain = DatasetLoader(dataset / "train.csv", image_size=32)
    expected = [plain[i][0] for i in range(len(plain))]
    for mode in ("disk", "memory"):
        cached = DatasetLoader(dataset / "train.csv", image_size=32)
        cached.cache_images(mode)
        assert isinstance(cached.cache, DiskCache) == (mode == "disk")
        assert all(torch.equal(cached[i][0], expected[i]) for i in range(len(cached)))
    # The same random augmentation of the same pixels: identical batches whatever the cache.
    augmented = []
    for mode in ("off", "disk", "memory"):
        train = DatasetLoader(dataset / "train.csv", image_size=32, train=True)
        if mode != "off":
            train.cache_images(mode)
        torch.manual_seed(7)
        random.seed(7)
        augmented.append(torch.stack([train[i][0] for i in range(len(train))]))
    assert torch.equal(augmented[0], augmented[1]) and torch.equal(augmented[0], augmented[2])


def test_a_changed_photo_size_or_csv_makes_a_new_cache_and_drops_the_old(dataset: Path) -> None:
    def build(size: int = 32) -> tuple[list[str], torch.Tensor]:
        photos = DatasetLoader(dataset / "train.csv", image_size=size)
        photos.cache_images("disk")
        return cache_files(dataset), photos[0][0]

    first, pixels = build()
    assert len(first) == 2 and {Path(name).suffix for name in first} == {".u8", ".json"}
    assert build()[0] == first  # unchanged data: the same cache, found again
    time.sleep(0.01)
    make_photo(dataset / "train/cat/cat.0.jpg", 1, seed=999)  # the same file name, other pixels
    changed, new_pixels = build()
    assert changed != first and len(changed) == 2 and not torch.equal(new_pixels, pixels)
    assert build(48)[0] != changed and len(cache_files(dataset)) == 4  # train at 32 px and 48 px side by side
    rows = (dataset / "train.csv").read_text(encoding="utf-8").splitlines()
    (dataset / "train.csv").write_text("\n".join(rows[1:]) + "\n", encoding="utf-8")  # one row fewer
    fewer, _ = build()
    assert len(fewer) == 4 and not set(changed) & set(fewer)


def test_unreadable_photos_are_recorded_and_reported_without_decoding_again(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    broken = make_broken_files(tmp_path / "photos")
    rows = [f"photos/{name}.{'png' if name == 'bomb' else 'jpg'},{i % 2}" for i, name in
            enumerate(("whole", "truncated", "text", "bomb"))]
    (tmp_path / "val.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    DatasetLoader(tmp_path / "val.csv", image_size=16).cache_images("disk")

    def no_decoding(*_):
        raise AssertionError("a photo was decoded again")

    monkeypatch.setattr(photo_batches, "open_image", no_decoding)
    again = DatasetLoader(tmp_path / "val.csv", image_size=16)
    again.cache_images("disk")
    problems = [again[i][3] for i in range(len(again))]
    assert problems[0] is None and again[0][0].shape == (16, 16, 3)
    for problem, kind, reason in zip(problems[1:], ("truncated", "text", "bomb"),
                                     ("cut short", "not an image file", "too many pixels"), strict=True):
        assert problem.startswith(f"{broken[kind]}: ") and reason in problem


BUILD_SLOWLY = """
import sys, time
sys.path.insert(0, sys.argv[1])
from cats_dogs import photo_cache
from pathlib import Path
from cats_dogs.images import open_image

def slow_open(path):
    time.sleep(0.05)
    return open_image(path)

photo_cache.open_image = slow_open
paths = sorted(Path(sys.argv[2]).rglob("*.jpg"))
photo_cache.build_cache(paths, 32, Path(sys.argv[3]), "train", processes=1, progress=False)
"""


def test_a_killed_build_leaves_nothing_that_looks_complete_and_the_next_build_is_whole(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "datasets", per_class_train=30, per_class_val=1)
    folder = tmp_path / "cache"
    folder.mkdir()
    build = subprocess.Popen([sys.executable, "-c", BUILD_SLOWLY, str(REPO), str(data / "train"), str(folder)])
    deadline = time.monotonic() + 60
    while not list(folder.glob("*.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a few photos in
    build.kill()
    build.wait()
    paths = sorted((data / "train").rglob("*.jpg"))
    assert [p.name for p in folder.iterdir()] and not list(folder.glob("*.json")) and not list(folder.glob("*.u8"))
    assert open_cache(paths, 32, folder, "train") is None  # nothing counts as complete
    cache = build_cache(paths, 32, folder, "train", progress=False)
    assert sorted(p.suffix for p in folder.iterdir()) == [".json", ".u8"]  # the killed build's leftovers are gone
    reopened = open_cache(paths, 32, folder, "train")
    assert reopened is not None and len(reopened) == 60
    plain = DatasetLoader(data / "train.csv", image_size=32)
    by_path = {path: cache[i] for i, path in enumerate(paths)}
    assert all(torch.equal(plain[i][0], by_path[path]) for i, (path, _) in enumerate(plain.samples))


def test_runs_started_together_on_one_folder_each_finish_and_leave_one_whole_cache(tmp_path: Path) -> None:
    """Several train.py runs on one data folder (a seed sweep) build the same cache at the same time: none may
    delete another's file under construction (seen on a GPU machine: FileNotFoundError at the rename)."""
    data = make_dataset(tmp_path / "datasets", per_class_train=10, per_class_val=1)
    folder = tmp_path / "cache"
    folder.mkdir()
    builds = [subprocess.Popen([sys.executable, "-c", BUILD_SLOWLY, str(REPO), str(data / "train"), str(folder)],
                               stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [build.communicate(timeout=120)[1] for build in builds]
    assert [build.returncode for build in builds] == [0, 0, 0], errors
    assert sorted(p.suffix for p in folder.iterdir()) == [".json", ".u8"]
    paths = sorted((data / "train").rglob("*.jpg"))
    cache = open_cache(paths, 32, folder, "train")
    plain = DatasetLoader(data / "train.csv", image_size=32)
    by_path = {path: cache[i] for i, path in enumerate(paths)}
    assert all(torch.equal(plain[i][0], by_path[path]) for i, (path, _) in enumerate(plain.samples))


def test_train_builds_the_disk_cache_once_and_later_runs_and_evaluate_reuse_it(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "datasets", per_class_train=4, per_class_val=2)
    flags = ["--weights", "none", "--image-size", "32", "--batch-size", "4", "--model", "resnet18", "--no-engine",
             "--swanlab-mode", "disabled", "--epochs", "1"]
    first = run_script("train.py", *flags, "--cache", "disk", cwd=tmp_path)
    assert "photos cached on disk, 0 data workers" in first.stdout
    built = {name: (data / ".cache" / name).stat().st_mtime_ns for name in cache_files(data)}
    assert sorted(Path(name).stem.split("-")[0] for name in built) == ["train", "train", "val", "val"]
    run_script("train.py", *flags, "--cache", "disk", "--output-dir", "again", cwd=tmp_path)
    assert {name: (data / ".cache" / name).stat().st_mtime_ns for name in cache_files(data)} == built  # reused
    runs = [read_checkpoint(tmp_path / folder / "latest_checkpoint.pth")["metrics"] for folder in ("checkpoint", "again")]
    assert [(m["train_loss"], m["val_loss"]) for m in runs] == [(runs[0]["train_loss"], runs[0]["val_loss"])] * 2
    os.utime(data / "val/dog/dog.0.jpg")  # touched: the val cache is rebuilt, the train cache stays
    run_script("evaluate.py", "--csv", str(data / "val.csv"), "--cache", "disk", cwd=tmp_path)
    after = {name: (data / ".cache" / name).stat().st_mtime_ns for name in cache_files(data)}
    assert {n for n in after if n.startswith("train")} == {n for n in built if n.startswith("train")}
    assert {n for n in after if n.startswith("val")} != {n for n in built if n.startswith("val")}


def test_a_read_only_data_folder_gets_its_cache_in_the_users_cache(dataset: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user_cache"))
    dataset.chmod(0o555)  # as a shared dataset is; root could still write there, the bits say it must not
    try:
        photos = DatasetLoader(dataset / "val.csv", image_size=32)
        photos.cache_images("disk")
        assert not (dataset / ".cache").exists()
        assert [p.suffix for p in sorted((tmp_path / "user_cache/resnet-cats-dogs/photos").iterdir())] == [".json", ".u8"]
        assert torch.equal(photos[0][0], DatasetLoader(dataset / "val.csv", image_size=32)[0][0])
    finally:
        dataset.chmod(0o755)


def test_a_damaged_index_is_rebuilt_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "datasets", per_class_train=2, per_class_val=1)
    paths = sorted((data / "train").rglob("*.jpg"))
    (tmp_path / "cache").mkdir()
    build_cache(paths, 16, tmp_path / "cache", "train", processes=1, progress=False)
    index = next((tmp_path / "cache").glob("*.json"))
    index.write_text(index.read_text(encoding="utf-8")[:40], encoding="utf-8")  # a disk that filled up mid-write
    assert open_cache(paths, 16, tmp_path / "cache", "train") is None
    assert f"the photo cache's index {index} is damaged" in capsys.readouterr().err
    build_cache(paths, 16, tmp_path / "cache", "train", processes=1, progress=False)
    reopened = open_cache(paths, 16, tmp_path / "cache", "train")
    assert reopened is not None and len(reopened) == 4


HOLD_CACHE_OPEN = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from cats_dogs.photo_cache import open_cache
paths = sorted(Path(sys.argv[2]).rglob("*.jpg"))
open_cache(paths, 16, Path(sys.argv[3]), "train").descriptor()  # what a training run does with its disk cache
print("reading", flush=True)
sys.stdin.read()
"""


def test_a_new_build_keeps_a_cache_another_run_has_open_and_other_datasets_caches(tmp_path: Path) -> None:
    """The user's cache folder holds every read-only dataset's caches under the same names (train, photos); a
    data folder's older cache may still be read by a run that started before the photos changed."""
    folder = tmp_path / "cache"
    folder.mkdir()
    data, other = (make_dataset(tmp_path / name, per_class_train=2, per_class_val=1) for name in ("data", "other"))
    data_paths, other_paths = (sorted((root / "train").rglob("*.jpg")) for root in (data, other))
    build_cache(data_paths, 16, folder, "train", processes=1, progress=False)
    build_cache(other_paths, 16, folder, "train", processes=1, progress=False)
    assert open_cache(data_paths, 16, folder, "train") is not None  # another dataset's build left it alone
    reader = subprocess.Popen([sys.executable, "-c", HOLD_CACHE_OPEN, str(REPO), str(data / "train"), str(folder)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline() == "reading\n"
        old = {p.name for p in folder.glob("*.u8")}
        time.sleep(0.01)
        make_photo(data / "train/cat/cat.0.jpg", 1, seed=999)  # the photos change while that run trains
        build_cache(data_paths, 16, folder, "train", processes=1, progress=False)
        assert old < {p.name for p in folder.glob("*.u8")}  # the open one kept, beside the new one
    finally:
        reader.communicate("", timeout=60)
    make_photo(data / "train/cat/cat.1.jpg", 1, seed=998)
    build_cache(data_paths, 16, folder, "train", processes=1, progress=False)  # that run has ended: swept now
    assert len(list(folder.glob("*.u8"))) == 2 and open_cache(other_paths, 16, folder, "train") is not None
    assert open_cache(data_paths, 16, folder, "train") is not None
