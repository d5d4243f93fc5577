"""app.py started for real on a free port and asked through gradio_client, as a user's script would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file

from common import build_model
from conftest import REPO, free_port, make_dataset, read_swanlab_runs, run_script


@contextmanager
def running_app(*args: str, cwd: Path, timeout: float = 120) -> Iterator[tuple[Client, subprocess.Popen]]:
    port = free_port()
    log = open(cwd / f"app-{port}.log", "w+", encoding="utf-8")
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port), *args], cwd=cwd,
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise AssertionError(f"app.py exited {process.returncode}:\n{log.read()}")
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield client, process
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def confidences(answer: dict) -> dict[str, float]:
    return {item["label"]: item["confidence"] for item in answer["confidences"]}


def test_page_answers_probabilities_that_sum_to_one(trained_run: Path) -> None:
    with running_app(cwd=trained_run) as (client, _):
        assert "/predict" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        answer = client.predict(handle_file(str(trained_run / "datasets/val/dog/dog.1.jpg")), api_name="/predict")
        probabilities = confidences(answer)
        assert set(probabilities) == {"cat", "dog"}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert answer["label"] == max(probabilities, key=probabilities.get)


def test_unreadable_upload_gets_a_readable_error_and_the_server_keeps_serving(trained_run: Path, tmp_path: Path) -> None:
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("this is a text file", encoding="utf-8")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with running_app(cwd=trained_run) as (client, _):
        for bad in (not_a_photo, empty):
            with pytest.raises(Exception, match="This file could not be used: not an image file"):
                client.predict(handle_file(str(bad)), api_name="/predict")
        answer = client.predict(handle_file(str(trained_run / "datasets/val/cat/cat.0.jpg")), api_name="/predict")
        assert sum(confidences(answer).values()) == pytest.approx(1.0, abs=1e-5)


def test_gray_palette_and_transparent_uploads_are_answered(trained_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    photo = Image.open(trained_run / "datasets/val/cat/cat.0.jpg")
    uploads = {"gray.jpg": photo.convert("L"), "palette.gif": photo.convert("P"), "alpha.png": photo.convert("RGBA")}
    with running_app(cwd=trained_run) as (client, _):
        for name, image in uploads.items():
            image.save(tmp_path / name)
            answer = client.predict(handle_file(str(tmp_path / name)), api_name="/predict")
            assert sum(confidences(answer).values()) == pytest.approx(1.0, abs=1e-5), name


def test_no_checkpoint_refuses_to_start(tmp_path: Path) -> None:
    result = run_script("app.py", "--port", "0", cwd=tmp_path, check=False, timeout=120)
    assert result.returncode != 0
    assert "no checkpoint at checkpoint/best_checkpoint.pth or checkpoint/latest_checkpoint.pth" in result.stderr
    assert "python train.py" in result.stderr and "Traceback" not in result.stderr


def test_the_tutorials_own_checkpoint_is_served(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets", per_class_train=1, per_class_val=1)
    torch.save(build_model("resnet50", 2).state_dict(), tmp_path / "tutorial.pth")  # a bare state dict
    with running_app("--checkpoint", "tutorial.pth", cwd=tmp_path) as (client, _):
        answer = client.predict(handle_file(str(tmp_path / "datasets/val/cat/cat.0.jpg")), api_name="/predict")
        assert set(confidences(answer)) == {"cat", "dog"}


def test_end_to_end_on_the_tutorials_photos(tmp_path: Path) -> None:
    """The README's path: train on the tutorial's layout, then ask the page about a val photo.

    Real photos from $CATS_DOGS_TUTORIAL_DIR (set by .ci/run); generated ones otherwise.
    """
    real = os.environ.get("CATS_DOGS_TUTORIAL_DIR")
    data = Path(real).resolve() if real else make_dataset(tmp_path / "generated", per_class_train=20, per_class_val=20)
    train_rows = len((data / "train.csv").read_text(encoding="utf-8").split())
    val_rows = len((data / "val.csv").read_text(encoding="utf-8").split())
    result = run_script("train.py", "--data-dir", str(data), "--weights", "none", "--image-size", "64", "--epochs", "1",
                        "--num-workers", "1", cwd=tmp_path, timeout=900)
    assert f"{train_rows} train / {val_rows} val photos" in result.stdout
    assert (tmp_path / "checkpoint/best_checkpoint.pth").is_file()
    [run] = read_swanlab_runs(tmp_path / "swanlog")
    assert len(run["captions"]["val_examples"]) == min(30, val_rows)
    assert {"train_loss", "val_acc"} <= set(run["metrics"])

    val_photo = sorted((data / "val").rglob("*.jpg"))[0]
    with running_app("--data-dir", str(data), cwd=tmp_path) as (client, _):
        probabilities = confidences(client.predict(handle_file(str(val_photo)), api_name="/predict"))
        assert set(probabilities) == {"cat", "dog"} and sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    shutil.rmtree(tmp_path / "checkpoint")  # ~560 MB; don't let runs pile up in the temp dir


def test_broken_huge_and_oversized_uploads_get_plain_words(trained_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    from conftest import make_broken_files

    broken = make_broken_files(tmp_path / "broken")
    big_photo = tmp_path / "50mp.jpg"
    Image.new("RGB", (8_660, 5_780), (200, 60, 50)).save(big_photo, quality=50)  # a 50-megapixel photo
    too_large = tmp_path / "too_large.jpg"
    too_large.write_bytes(os.urandom(21 * 1024 * 1024))
    with running_app(cwd=trained_run) as (client, _):
        for kind, message in (("truncated", "the file is cut short"), ("bomb", "too many pixels"),
                              ("text", "not an image file")):
            with pytest.raises(Exception, match=f"This file could not be used: {message}"):
                client.predict(handle_file(str(broken[kind])), api_name="/predict")
        with pytest.raises(Exception, match="(?i)too large|exceeds|413"):
            client.predict(handle_file(str(too_large)), api_name="/predict")
        answer = client.predict(handle_file(str(big_photo)), api_name="/predict")
        assert sum(confidences(answer).values()) == pytest.approx(1.0, abs=1e-5)
