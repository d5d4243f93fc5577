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
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from cats_dogs.csv_rows import read_csv_rows
from conftest import (
    FAST_TRAIN_FLAGS,
    WindowsZipInfo,
    add_hostile_members,
    free_port,
    make_broken_files,
    make_photo,
    patch_zip_member,
    run_script,
)


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
    result = run_script("train.py", *FAST_TRAIN_FLAGS, "--model", "resnet18", "--data-dir", "a", "--epochs", "1",
                        "--swanlab-mode", "disabled", cwd=tmp_path, timeout=900)  # the split read, not the model
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


@contextmanager
def serve(root: Path, body_cut_at: int | None = None) -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server for the files under root, and the list of paths it was asked for.

    With body_cut_at, it announces each file's full size but closes the connection after that many bytes.
    """
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 — http.server's own name
            requests.append(self.path)
            if body_cut_at is None:
                return super().do_GET()
            data = (root / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:body_cut_at])
            self.close_connection = True

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server: the tests never use the internet."""
    root = tmp_path / "www"
    root.mkdir()
    with serve(root) as (url, _):
        yield url, root


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


# --------------------------------------------------------------------------- the two built-in sources
GOOGLE_ZIP, MICROSOFT_ZIP = "cats_and_dogs_filtered.zip", "kagglecatsanddogs_5340.zip"  # the real URLs' file names
MICROSOFT_BROKEN = {"PetImages/Cat/666.jpg": "empty file", "PetImages/Dog/text.jpg": "not an image file",
                    "PetImages/Dog/cut.jpg": "the file is cut short"}


def photo_bytes(scratch: Path, label: int, seed: int, size: tuple[int, int] = (8, 8)) -> bytes:
    return make_photo(scratch / f"{label}-{seed}.jpg", label, seed=seed, size=size).read_bytes()


def make_google_zip(path: Path, scratch: Path) -> Path:
    """Google's layout: cats_and_dogs_filtered/train|validation/cats|dogs/, 6 + 3 photos per class."""
    with zipfile.ZipFile(path, "w") as zipped:
        for split, count in (("train", 6), ("validation", 3)):
            for label, name in enumerate(("cats", "dogs")):
                for i in range(count):
                    data = photo_bytes(scratch, label, seed=label * 100 + (split == "train") * 50 + i)
                    zipped.writestr(f"cats_and_dogs_filtered/{split}/{name}/{name[:-1]}.{i}.jpg", data)
    return path


def make_microsoft_zip(path: Path, scratch: Path) -> Path:
    """Microsoft's layout, as Keras' example shows it: a licence and a readme beside PetImages/Cat|Dog/,
    10 good photos per class, Thumbs.db files and three broken photos (MICROSOFT_BROKEN)."""
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("CDLA-Permissive-2.0.pdf", b"%PDF-1.4 licence")
        zipped.writestr("readme[1].txt", "Kaggle cats and dogs")
        for label, name in enumerate(("Cat", "Dog")):
            for i in range(10):
                zipped.writestr(f"PetImages/{name}/{i}.jpg", photo_bytes(scratch, label, seed=label * 100 + i))
            zipped.writestr(f"PetImages/{name}/Thumbs.db", b"\xd0\xcf\x11\xe0 not a photo")
        zipped.writestr("PetImages/Cat/666.jpg", b"")
        zipped.writestr("PetImages/Dog/text.jpg", "<html>this is not a photo</html>")
        whole = photo_bytes(scratch, 1, seed=999, size=(64, 64))
        zipped.writestr("PetImages/Dog/cut.jpg", whole[: len(whole) // 2])
    return path


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Two local servers in the place of Google's and Microsoft's, each serving its zip from its own folder."""
    found = {}
    with serve(tmp_path / "google") as (google_url, google_requests), \
            serve(tmp_path / "microsoft") as (microsoft_url, microsoft_requests):
        for name, url, requests in (("google", google_url, google_requests),
                                    ("microsoft", microsoft_url, microsoft_requests)):
            (tmp_path / name).mkdir()
            file_name = GOOGLE_ZIP if name == "google" else MICROSOFT_ZIP
            monkeypatch.setenv(f"PREPARE_DATA_{name.upper()}_URL", f"{url}/{file_name}")
            found[name] = {"url": f"{url}/{file_name}", "zip": tmp_path / name / file_name, "requests": requests}
        make_google_zip(found["google"]["zip"], tmp_path / "made")
        make_microsoft_zip(found["microsoft"]["zip"], tmp_path / "made")
        yield found


def dataset_rows(folder: Path) -> list[tuple[Path, int]]:
    return read_csv_rows(folder / "train.csv") + read_csv_rows(folder / "val.csv")


def assert_microsoft_dataset(folder: Path) -> None:
    """cat/dog labels, the 20 good photos, none of the broken ones, each in the folder of its label."""
    assert (folder / "classes.txt").read_text() == "cat\ndog\n"
    rows = dataset_rows(folder)
    assert sorted((path.parent.name, path.name, label) for path, label in rows) == sorted(
        [("cat", f"{i}.jpg", 0) for i in range(10)] + [("dog", f"{i}.jpg", 1) for i in range(10)])
    assert all(path.is_file() for path, _ in rows)


def assert_nothing_written(folder: Path) -> None:
    assert not folder.exists() or not [p for p in folder.rglob("*") if p.is_file()]


def test_google_down_falls_back_to_microsoft_and_leaves_broken_photos_out(tmp_path: Path, sources: dict) -> None:
    sources["google"]["zip"].unlink()  # Google answers 404
    result = run_script("prepare_data.py", "--download", "--out", "ds", cwd=tmp_path)
    assert sources["google"]["requests"] == [f"/{GOOGLE_ZIP}"] and sources["microsoft"]["requests"] == [f"/{MICROSOFT_ZIP}"]
    fallback = [line for line in result.stdout.splitlines() if "Now trying microsoft" in line]
    assert len(fallback) == 1 and "google" in fallback[0] and "404" in fallback[0], result.stdout
    assert_microsoft_dataset(tmp_path / "ds")
    assert "left out 3 file(s)" in result.stdout and "Thumbs.db" not in result.stdout
    listed = (tmp_path / "ds" / "left_out.txt").read_text(encoding="utf-8")
    for member, reason in MICROSOFT_BROKEN.items():  # named by the zip and the place in it, not a temporary folder
        line = f"{Path('ds/.downloads') / MICROSOFT_ZIP / member}: {reason}"
        assert line in result.stdout and line in listed, line
    assert "prepare_data_" not in result.stdout + listed
    # A second run uses the complete download and asks neither server again.
    again = run_script("prepare_data.py", "--download", "--out", "ds", "--full", cwd=tmp_path)
    assert "downloaded before" in again.stdout and "Now trying" not in again.stdout
    assert len(sources["google"]["requests"]) == 1 and len(sources["microsoft"]["requests"]) == 1
    assert_microsoft_dataset(tmp_path / "ds")
    assert label_counts(tmp_path / "ds/val.csv") == {0: 2, 1: 2}  # --full: 20% of the 10 good photos per class


def test_source_microsoft_never_contacts_google(tmp_path: Path, sources: dict) -> None:
    result = run_script("prepare_data.py", "--source", "microsoft", "--out", "ds", cwd=tmp_path)
    assert sources["google"]["requests"] == []  # Google is up and serving: it was not asked
    assert_microsoft_dataset(tmp_path / "ds")
    assert "Now trying" not in result.stdout


def test_google_gives_cat_and_dog_and_no_fallback(tmp_path: Path, sources: dict) -> None:
    run_script("prepare_data.py", "--download", "--out", "ds", cwd=tmp_path)
    assert sources["microsoft"]["requests"] == []
    assert (tmp_path / "ds/classes.txt").read_text() == "cat\ndog\n"  # not Google's folder names cats/dogs
    assert label_counts(tmp_path / "ds/train.csv") == {0: 6, 1: 6} and label_counts(tmp_path / "ds/val.csv") == {0: 3, 1: 3}
    for path, label in dataset_rows(tmp_path / "ds"):
        assert path.parent.name == ("cat", "dog")[label] and path.name.startswith(("cat.", "dog.")[label])


def test_source_google_down_names_both_sources_and_from(tmp_path: Path, sources: dict) -> None:
    sources["google"]["zip"].unlink()
    result = run_script("prepare_data.py", "--download", "--source", "google", "--out", "ds", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert sources["microsoft"]["requests"] == []  # no fallback when a source is named
    assert f"google: {sources['google']['url']}" in result.stderr and "404" in result.stderr
    assert "--source microsoft" in result.stderr and "--from" in result.stderr
    assert "Nothing was written" in result.stderr
    assert_nothing_written(tmp_path / "ds")


def test_both_sources_down_gives_one_clear_message(tmp_path: Path, sources: dict,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREPARE_DATA_GOOGLE_URL", f"http://127.0.0.1:{free_port()}/{GOOGLE_ZIP}")  # nothing listens
    (sources["microsoft"]["zip"]).write_text("<html>a login page, not a zip</html>")
    result = run_script("prepare_data.py", "--download", "--out", "ds", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.count("Could not download") == 1
    assert "google: http://127.0.0.1:" in result.stderr and "refused" in result.stderr.lower()
    assert f"microsoft: {sources['microsoft']['url']}" in result.stderr
    assert "did not send a .zip archive" in result.stderr and "--from" in result.stderr
    assert_nothing_written(tmp_path / "ds")


def test_a_cut_download_is_never_taken_as_complete(tmp_path: Path, sources: dict,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    archive = sources["microsoft"]["zip"]
    with serve(archive.parent, body_cut_at=archive.stat().st_size // 2) as (url, _):
        monkeypatch.setenv("PREPARE_DATA_MICROSOFT_URL", f"{url}/{MICROSOFT_ZIP}")
        result = run_script("prepare_data.py", "--source", "microsoft", "--out", "ds", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"the connection closed after {archive.stat().st_size // 2:,} of {archive.stat().st_size:,} bytes" in result.stderr
    assert_nothing_written(tmp_path / "ds")
    # A .part left by a killed run is not taken as complete either: the next run downloads the whole file.
    (tmp_path / "ds/.downloads").mkdir(parents=True, exist_ok=True)
    (tmp_path / "ds/.downloads" / f"{MICROSOFT_ZIP}.part").write_bytes(archive.read_bytes()[:1000])
    monkeypatch.setenv("PREPARE_DATA_MICROSOFT_URL", sources["microsoft"]["url"])
    result = run_script("prepare_data.py", "--source", "microsoft", "--out", "ds", cwd=tmp_path)
    assert "downloaded before" not in result.stdout and sources["microsoft"]["requests"] == [f"/{MICROSOFT_ZIP}"]
    assert (tmp_path / "ds/.downloads" / MICROSOFT_ZIP).read_bytes() == archive.read_bytes()
    assert not (tmp_path / "ds/.downloads" / f"{MICROSOFT_ZIP}.part").exists()
    assert_microsoft_dataset(tmp_path / "ds")


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


def test_a_reimport_without_a_test_split_removes_the_old_test_csv(tmp_path: Path) -> None:
    source = make_kaggle_folder(tmp_path / "kaggle", per_class=10)
    run_script("prepare_data.py", "--from", str(source), "--out", "ds", "--split", "0.4", "0.3", "0.3", cwd=tmp_path)
    assert (tmp_path / "ds/test.csv").is_file()
    result = run_script("prepare_data.py", "--from", str(source), "--out", "ds", "--val-ratio", "0.3", cwd=tmp_path)
    # The old test.csv's photos are now train photos: left beside the new CSVs, train.py would report a leaked test_acc.
    assert not (tmp_path / "ds/test.csv").exists()
    assert "removed the test.csv of an earlier import" in result.stdout
    assert label_counts(tmp_path / "ds/train.csv") == {0: 7, 1: 7} and label_counts(tmp_path / "ds/val.csv") == {0: 3, 1: 3}


def test_zip_members_that_cannot_be_unpacked_are_left_out_one_by_one(tmp_path: Path) -> None:
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for label, name in enumerate(("cat", "dog")):
            for i in range(5):
                zipped.writestr(f"{name}/{name}{i}.jpg", make_photo(tmp_path / "made" / f"{name}{i}.jpg", label,
                                                                   seed=label * 100 + i).read_bytes())
    refused = add_hostile_members(archive, make_photo(tmp_path / "made/extra.jpg", 0, seed=999).read_bytes(), "cat/")
    result = run_script("prepare_data.py", "--from", str(archive), "--out", "ds", cwd=tmp_path)
    # ../../escaped.jpg and /abs/rooted.jpg no longer land in the zip's root or an "abs" class; nothing lands outside.
    assert (tmp_path / "ds/classes.txt").read_text(encoding="utf-8") == "cat\ndog\n"
    assert label_counts(tmp_path / "ds/train.csv") + label_counts(tmp_path / "ds/val.csv") == {0: 5, 1: 5}
    left_out = (tmp_path / "ds/left_out.txt").read_text(encoding="utf-8")
    for name, reason in refused.items():
        assert any(line.startswith(f"{archive}/{name}: ") and reason in line for line in left_out.splitlines()), name
    assert "left out 5 file(s)" in result.stdout and not list(tmp_path.rglob("escaped.jpg"))


def test_a_zip_that_unpacks_to_more_than_2_gb_is_refused_before_unpacking(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in ("cat/a.jpg", "dog/b.jpg"):
            zipped.writestr(name, make_photo(tmp_path / name, 0, seed=1).read_bytes())
    patch_zip_member(archive, "cat/a.jpg", size=3 * 1024**3)  # as a zip bomb declares it
    result = run_script("prepare_data.py", "--from", str(archive), "--out", "ds", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "unpacks to 3.0 GB, more than the 2 GB this script unpacks" in result.stderr
    assert not (tmp_path / "ds").exists()


def test_a_class_folder_whose_name_is_a_path_is_refused(tmp_path: Path) -> None:
    for label, name in enumerate(("cat", "dog\\..\\..\\escaped")):  # a legal folder name on Linux and macOS
        for i in range(3):
            make_photo(tmp_path / "src" / name / f"{i}.jpg", label, seed=label * 10 + i)
    result = run_script("prepare_data.py", "--from", "src", "--out", "ds", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "escaped: class name 'dog\\\\..\\\\..\\\\escaped' is a path, not a plain name" in result.stderr
    assert not (tmp_path / "ds").exists()


def test_the_class_table_warns_of_imbalance_a_tiny_class_and_a_small_val_split(tmp_path: Path) -> None:
    source = tmp_path / "photos"
    for label, (name, count) in enumerate((("rose", 30), ("tulip", 5))):
        for i in range(count):
            make_photo(source / name / f"{name}{i}.jpg", label % 2, seed=100 * label + i)
    result = run_script("prepare_data.py", "--from", str(source), "--out", "ds", cwd=tmp_path)
    table = result.stdout[result.stdout.index("class"):]
    assert "warning: imbalanced: rose has 24 train photos, tulip 4 (at least 2×)" in table
    assert "warning: tiny classes: tulip (4) with fewer than 10 train photos" in table
    assert "warning: small val split: 7 photos" in table and "too wide to tell 5 points apart" in table
    balanced = tmp_path / "balanced"
    for label, name in enumerate(("cat", "dog")):
        for i in range(12):
            make_photo(balanced / name / f"{name}{i}.jpg", label, seed=100 * label + i)
    result = run_script("prepare_data.py", "--from", str(balanced), "--out", "ds2", cwd=tmp_path)
    assert "warning: imbalanced" not in result.stdout and "warning: tiny classes" not in result.stdout
