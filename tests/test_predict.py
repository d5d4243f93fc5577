"""predict.py run for real on files and folders."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from cats_dogs.checkpoint import load_checkpoint
from cats_dogs.engines import batch_size_for, cached_engine_answers, load_engine
from cats_dogs.inference import CPU_BATCH, ENGINE_BATCH
from conftest import REPO, make_broken_files, make_photo, run_script


def test_folder_is_predicted_written_to_csv_and_sorted_by_copy(separating_run: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for i in range(3):
        make_photo(photos / f"red{i}.jpg", 0, seed=300 + i)
        make_photo(photos / "nested" / "deeper" / f"blue{i}.png", 1, seed=400 + i)
    make_photo(photos / "nested" / "red0.jpg", 0, seed=999)  # same name as another photo
    broken = make_broken_files(tmp_path / "photos" / "broken")
    broken_names = {p.name for p in broken.values()}
    before = {p: hashlib.sha1(p.read_bytes()).hexdigest() for p in photos.rglob("*") if p.is_file()}

    result = run_script("predict.py", str(photos), "--checkpoint", str(separating_run / "checkpoint/best_checkpoint.pth"),
                        "--csv", str(tmp_path / "out.csv"), "--sort-into", str(tmp_path / "sorted"), "--top-k", "2",
                        "--batch-size", "3", cwd=tmp_path)

    with open(tmp_path / "out.csv", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    readable = {p for p in before if p.name not in broken_names} | {broken["bomb"].parent / "whole.jpg"}
    assert {Path(row["path"]) for row in rows} == readable
    assert all(row["class"] in ("cat", "dog") and 0.5 <= float(row["probability"]) <= 1 for row in rows)
    # The red photos (and whole.jpg, red too) are cats, the blue ones dogs: each class has its own folder.
    assert {row["path"]: row["class"] for row in rows} == {
        row["path"]: "dog" if Path(row["path"]).name.startswith("blue") else "cat" for row in rows}
    assert sorted(p.name for p in (tmp_path / "sorted/dog").iterdir()) == ["blue0.png", "blue1.png", "blue2.png"]
    assert len(list((tmp_path / "sorted/cat").iterdir())) == 5
    for name in ("cat", "dog"):
        predicted = sorted(hashlib.sha1(Path(r["path"]).read_bytes()).hexdigest() for r in rows if r["class"] == name)
        copied = sorted(hashlib.sha1(p.read_bytes()).hexdigest() for p in (tmp_path / "sorted" / name).glob("*"))
        assert copied == predicted  # exactly the photos predicted for that class, none overwritten
    assert {p: hashlib.sha1(p.read_bytes()).hexdigest() for p in photos.rglob("*") if p.is_file()} == before
    assert "could not read 4 file(s)" in result.stdout
    assert f"{broken['truncated']}: the file is cut short" in result.stdout
    first = result.stdout.splitlines()[0]
    assert first.count("%") == 2 and ("cat" in first and "dog" in first)  # --top-k 2


def test_a_reader_that_goes_away_ends_the_command_quietly(trained_run: Path) -> None:
    """`predict.py photos/ | head -1`: once head has its line it closes the pipe, and the next answer written finds
    no reader. The command then ends at once, without a traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first answer
    try:
        result = subprocess.run([sys.executable, str(REPO / "predict.py"), "datasets/val", "--num-workers", "0"],
                                cwd=trained_run, stdout=write_end, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.startswith("engine: "), result.stderr[-3000:]


def test_single_file_and_missing_path(trained_run: Path) -> None:
    photo = trained_run / "datasets/val/dog/dog.0.jpg"
    result = run_script("predict.py", str(photo), cwd=trained_run)
    assert result.stdout.startswith(f"{photo}\t") and result.stdout.count("%") == 1
    missing = run_script("predict.py", "nowhere.jpg", cwd=trained_run, check=False)
    assert missing.returncode != 0 and "nowhere.jpg: no such file or folder" in missing.stderr


def test_rows_are_streamed_to_the_csv_so_a_kill_keeps_every_finished_one(trained_run: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    photos = [make_photo(tmp_path / "many" / f"photo{i:03d}.jpg", i % 2, seed=i) for i in range(300)]
    out = tmp_path / "streamed.csv"
    process = subprocess.Popen([sys.executable, str(REPO / "predict.py"), str(tmp_path / "many"), "--csv", str(out),
                                "--batch-size", "2", "--num-workers", "0",
                                "--checkpoint", str(trained_run / "checkpoint/best_checkpoint.pth")],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.is_file() or out.read_text(encoding="utf-8").count("\n") < 6):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    stderr = process.communicate()[1]
    with open(out, encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert 5 <= len(rows) < len(photos)  # written as they came, not at the end
    assert [Path(row["path"]) for row in rows] == photos[: len(rows)]  # whole rows, in order, none cut in half
    assert all(row["class"] in ("cat", "dog") and 0.5 <= float(row["probability"]) <= 1 for row in rows)
    assert "predicting:" in stderr and "photo/s" in stderr  # the progress bar, with its rate and ETA


def test_class_names_that_are_paths_never_become_folders(tmp_path: Path) -> None:
    """--sort-into OUT builds OUT/<class>: a checkpoint naming ../escaped_cat would copy photos outside OUT."""
    import pytest

    from cats_dogs.checkpoint import make_checkpoint, read_checkpoint, save_checkpoint
    from cats_dogs.model import build_model

    photo = make_photo(tmp_path / "photos/a.jpg", 0, seed=1)
    model = build_model("resnet18", 2)
    for names in (["../escaped_cat", "dog"], ["猫", "狗"], ["cat", str(tmp_path / "absolute_dog")]):
        save_checkpoint(make_checkpoint(model, arch="resnet18", class_names=names, image_size=32, epoch=1, metrics={}),
                        tmp_path / "model.pth")
        if names[0] == "cat":  # read where every script reads it
            with pytest.raises(ValueError, match=r"model.pth: class_names\[1\]: class name .*absolute_dog' is a path"):
                read_checkpoint(tmp_path / "model.pth")
            continue
        result = run_script("predict.py", str(photo), "--checkpoint", "model.pth", "--sort-into", "sorted",
                            "--engine", "torch", "--num-workers", "0", cwd=tmp_path, check=False)
        if names[0] == "猫":  # any language is a plain name
            assert result.returncode == 0 and len(list((tmp_path / "sorted").glob("*/a.jpg"))) == 1
            continue
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert "cannot read model.pth: model.pth: class_names[0]: class name '../escaped_cat' is a path" in result.stderr
    assert not (tmp_path / "escaped_cat").exists() and not (tmp_path / "absolute_dog").exists()


def test_a_small_job_answers_with_torch_and_says_why_unless_the_engine_is_cached(separating_run: Path,
                                                                                tmp_path: Path) -> None:
    """--engine auto builds no engine for a few photos (the build would cost more than it saves); an engine
    already built (by train.py, or an earlier big job) is used whatever the job's size."""
    checkpoint = Path(shutil.copy(separating_run / "checkpoint/best_checkpoint.pth", tmp_path / "model.pth"))
    photo = str(separating_run / "datasets/val/dog/dog.0.jpg")
    small = run_script("predict.py", photo, "--checkpoint", str(checkpoint), "--num-workers", "0", cwd=tmp_path)
    assert small.stderr.strip().startswith("engine: torch (1 photos: building OpenVINO INT8 takes ~"), small.stderr
    assert "more than it saves; train.py builds it after training, or run once with --engine openvino" in small.stderr
    assert small.stdout.startswith(f"{photo}\tdog") and not (tmp_path / "engines").exists()

    model, meta = load_checkpoint(checkpoint)
    cpu = torch.device("cpu")
    assert batch_size_for("auto", meta, checkpoint, cpu) == CPU_BATCH
    load_engine("auto", model, meta, checkpoint, cpu, data_dir=separating_run / "datasets")
    # PyTorch on a CPU takes a few photos at a time (more overflow the caches); the engine, more
    assert batch_size_for("auto", meta, checkpoint, cpu) == ENGINE_BATCH > CPU_BATCH
    assert not cached_engine_answers("torch", meta, checkpoint, cpu)
    # PYTHONPROFILEIMPORTTIME lists every module imported, on stderr: the cached engine answers without the PyTorch
    # model, so torchvision (about a second of the start) is never imported.
    cached = run_script("predict.py", photo, "--checkpoint", str(checkpoint), "--num-workers", "0", cwd=tmp_path,
                        env={"PYTHONPROFILEIMPORTTIME": "1"})
    engine_line = next(line for line in cached.stderr.splitlines() if line.startswith("engine:"))
    assert engine_line.startswith("engine: openvino int8 (agreement 100%"), cached.stderr[-2000:]
    assert "| torch\n" in cached.stderr and "torchvision" not in cached.stderr
    assert cached.stdout.startswith(f"{photo}\tdog")
    with_torch = run_script("predict.py", photo, "--checkpoint", str(checkpoint), "--engine", "torch", cwd=tmp_path,
                            env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert "torchvision" in with_torch.stderr and with_torch.stdout.startswith(f"{photo}\tdog")
