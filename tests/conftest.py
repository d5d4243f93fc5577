"""Shared fixtures: tiny generated photo datasets, a trained checkpoint, script runners.

Cats are drawn reddish and dogs bluish, so that even a from-scratch ResNet learns them
in an epoch or two at 32×32; real photos come from $CATS_DOGS_TUTORIAL_DIR when set.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from gradio_client import Client
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Settings that keep every test run small and offline.
# --no-engine: the serving engine built after training (seconds even at 32 px) is tested in test_train.py alone.
FAST_TRAIN_FLAGS = ["--weights", "none", "--image-size", "32", "--batch-size", "4", "--num-workers", "0", "--no-engine"]


class WindowsZipInfo(zipfile.ZipInfo):
    """A zip entry named the way Windows' built-in zip writes it: in the local code page (GBK), no UTF-8 flag."""

    def _encodeFilenameFlags(self):  # noqa: N802 — zipfile's own hook
        return self.filename.encode("gbk"), self.flag_bits


def patch_zip_member(archive: Path, name: str, *, flags: int | None = None, method: int | None = None,
                     size: int | None = None, corrupt: bool = False) -> None:
    """Rewrite one member's headers in place, as a hostile or damaged zip has them: its flag bits (0x1: encrypted),
    its compression method (9: deflate64), its declared unpacked size; `corrupt` flips a byte of its stored data,
    so that its CRC no longer matches."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zipped:
        info, central = zipped.getinfo(name), zipped.start_dir
    local = info.header_offset
    while struct.unpack_from("<I", data, central + 42)[0] != local:  # the member's central directory entry
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, central + 28)
        central += 46 + name_length + extra_length + comment_length
    for header, (flags_at, method_at, size_at) in ((local, (6, 8, 22)), (central, (8, 10, 24))):
        for value, at, kind in ((flags, flags_at, "<H"), (method, method_at, "<H"), (size, size_at, "<I")):
            if value is not None:
                struct.pack_into(kind, data, header + at, value)
    if corrupt:
        name_length, extra_length = struct.unpack_from("<HH", data, local + 26)
        data[local + 30 + name_length + extra_length + info.compress_size // 2] ^= 0xFF
    archive.write_bytes(bytes(data))


def add_hostile_members(archive: Path, photo: bytes, folder: str = "") -> dict[str, str]:
    """Members a careless or hostile zip holds, added to `archive` beside its photos: name -> the reason each is
    refused with. `folder` is where the damaged ones sit (a class folder, say)."""
    refused = {"../../escaped.jpg": "outside the archive", "/abs/rooted.jpg": "outside the archive",
               f"{folder}locked.jpg": "encrypted", f"{folder}deflate64.jpg": "deflate64",
               f"{folder}bad_crc.jpg": "damaged inside the archive"}
    with zipfile.ZipFile(archive, "a") as zipped:
        for name in refused:
            zipped.writestr(name, photo)
    patch_zip_member(archive, f"{folder}locked.jpg", flags=0x1)
    patch_zip_member(archive, f"{folder}deflate64.jpg", method=9)
    patch_zip_member(archive, f"{folder}bad_crc.jpg", corrupt=True)
    return refused


def make_photo(path: Path, label: int, seed: int, size: tuple[int, int] = (48, 40), mode: str = "RGB") -> Path:
    """A small noisy image whose dominant color gives away its class."""
    rng = random.Random(seed)
    base = (200, 60, 50) if label == 0 else (50, 80, 200)
    image = Image.new("RGB", size)
    image.putdata([tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in base) for _ in range(size[0] * size[1])])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert(mode).save(path)
    return path


def make_dataset(root: Path, per_class_train: int = 8, per_class_val: int = 4, class_names=("cat", "dog")) -> Path:
    """The tutorial's layout: train/<class>/…, val/<class>/…, train.csv and val.csv."""
    for split, count in (("train", per_class_train), ("val", per_class_val)):
        rows = []
        for label, name in enumerate(class_names):
            for i in range(count):
                relative = f"{split}/{name}/{name}.{i}.jpg"
                make_photo(root / relative, label, seed=(split == "val") * 1000 + label * 100 + i)
                rows.append(f"{relative},{label}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def run_script(script: str, *args: str, cwd: Path, timeout: float = 300, check: bool = True,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run one of the repo's scripts for real, with no stdin (as in CI, nohup, an IDE).

    `env` adds to the environment; its PYTHONIOENCODING is also what the output is decoded with, strictly,
    as a console in that encoding would have to show it.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", **(env or {})}
    result = subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, encoding=env["PYTHONIOENCODING"], timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "datasets")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real two-epoch training run, shared by the tests that only read its outputs."""
    workdir = tmp_path_factory.mktemp("trained")
    make_dataset(workdir / "datasets")
    run_script("train.py", *FAST_TRAIN_FLAGS, "--epochs", "2", cwd=workdir)
    return workdir


@pytest.fixture(scope="session")
def separating_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real training whose model tells the generated cats from dogs on every photo, far from 50/50 (about
    3% and 98% dog), for the tests that must tell a working model from one that answers the same for every photo.

    trained_run's from-scratch resnet50 learns too little in 2 epochs for that (about 55% dog for every photo).
    Here the head alone learns on a frozen random resnet18's features, in seconds; 64 px leaves Grad-CAM
    a 2×2 map to point with.
    """
    from cats_dogs.checkpoint import read_checkpoint

    workdir = tmp_path_factory.mktemp("separating")
    make_dataset(workdir / "datasets")
    run_script("train.py", "--weights", "none", "--model", "resnet18", "--image-size", "64", "--freeze-backbone",
               "--lr", "3e-2", "--epochs", "3", "--batch-size", "4", "--num-workers", "0", "--swanlab-mode", "disabled",
               "--no-engine", cwd=workdir)  # no engine cached: the tests that need one build their own
    assert read_checkpoint(workdir / "checkpoint/best_checkpoint.pth")["metrics"]["val_acc"] == 100
    return workdir


def labeled_photos(data: Path, split: str = "val") -> list[tuple[Path, str]]:
    """(photo, its class name) for every row of data/split.csv: what a model that separates must answer."""
    names = ["cat", "dog"]
    rows = [line.split(",") for line in (data / f"{split}.csv").read_text(encoding="utf-8").split()]
    return [(data / path, names[int(label)]) for path, label in rows]


def read_swanlab_runs(log_dir: Path) -> list[dict]:
    """What a local SwanLab log dir holds, read the way the dashboard reads it (its SQLite index + log files).

    Returns one dict per experiment: name, run folder, {metric: [values]} and {image key: [captions]}.
    """
    import json
    import sqlite3

    connection = sqlite3.connect(log_dir / "runs.swanlab")
    runs = []
    for experiment_id, run_id, name in connection.execute("select id, run_id, name from experiment order by id"):
        run_dir = log_dir / run_id
        metrics, captions = {}, {}
        for tag, folder, kind in connection.execute("select name, folder, type from tag where experiment_id = ?",
                                                    (experiment_id,)):
            records = [json.loads(line) for log in sorted((run_dir / "logs" / folder).glob("*.log"))
                       for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
            if kind == "image":
                captions[tag] = [(more or {}).get("caption") for record in records for more in record.get("more") or []]
            else:
                metrics[tag] = [record["data"] for record in records]
        runs.append({"name": name, "dir": run_dir, "metrics": metrics, "captions": captions})
    connection.close()
    return runs


def make_broken_files(folder: Path) -> dict[str, Path]:
    """One file of each kind that must never crash anything: name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    good = make_photo(folder / "whole.jpg", 0, seed=7, size=(64, 64))
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    text = folder / "text.jpg"
    text.write_text("this is not a photo", encoding="utf-8")
    bomb = folder / "bomb.png"
    Image.new("1", (12_000, 8_000)).save(bomb)  # 96 megapixels in a few kB
    return {"truncated": truncated, "empty": empty, "text": text, "bomb": bomb}


@contextmanager
def run_gradio_script(script: str, *args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None,
                      auth: tuple[str, str] | None = None) -> Iterator[tuple[Client, subprocess.Popen]]:
    """A Gradio script of the repo (app.py, review.py) serving for real on a free port; yields a gradio_client
    Client (its URL is client.src), logged in with `auth` when given, and the process, and stops it at the end.
    Its output goes to a log in cwd."""
    port = free_port()
    log = open(cwd / f"{Path(script).stem}-{port}.log", "w+", encoding="utf-8")
    process = subprocess.Popen([sys.executable, str(REPO / script), "--port", str(port), *args], cwd=cwd,
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise AssertionError(f"{script} exited {process.returncode}:\n{log.read()}")
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False, auth=auth)
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


@contextmanager
def run_app(*args: str, cwd: Path, timeout: float = 120, compile_model: bool = False,
            env: dict[str, str] | None = None) -> Iterator[tuple[Client, subprocess.Popen]]:
    """app.py started for real on a free port; yields a gradio_client Client (its URL is client.src) and the process.

    The background torch.compile (app.py's default on CPUs) is off unless asked for: it would take
    the 2 cores of CI for ~20 s at every start. Its own tests in test_app.py turn it on.
    """
    flags = [] if compile_model else ["--no-compile"]
    # PyTorch answers unless a test asks for another engine: building OpenVINO INT8 in the background would take
    # the cores for ~15 s and change the answers in the middle of a test. test_engines.py tests the engines.
    flags += [] if "--engine" in args else ["--engine", "torch"]
    with run_gradio_script("app.py", *flags, *args, cwd=cwd, timeout=timeout, env=env) as running:
        yield running


def find_chromium() -> str | None:
    """The system's Chromium (Debian: apt-get install chromium); $CHROMIUM overrides. Never a downloaded one."""
    import shutil

    candidates = [os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]
    return next((found for name in candidates if name and (found := shutil.which(name))), None)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Playwright. Without Chromium these tests skip, except in CI, where they fail."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        message = "no Chromium found: apt-get install chromium (or set $CHROMIUM to a Chrome/Chromium executable)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


def make_imagenet_checkpoint(folder: Path, imagenet_class: int) -> Path:
    """A cat/dog checkpoint "fine-tuned from ImageNet weights", where those weights (a local .pth, as offline
    users pass) make the original 1000-class head answer `imagenet_class` for every photo."""
    import torch
    import torchvision

    from cats_dogs.checkpoint import make_checkpoint, save_checkpoint
    from cats_dogs.model import build_model

    imagenet = torchvision.models.resnet18()
    with torch.no_grad():
        imagenet.fc.bias[imagenet_class] = 50.0
    weights = folder / f"imagenet-{imagenet_class}.pth"
    torch.save(imagenet.state_dict(), weights)
    model = build_model("resnet18", 2, weights=str(weights))
    checkpoint = make_checkpoint(model, arch="resnet18", class_names=["cat", "dog"], image_size=64, epoch=3,
                                 metrics={"val_acc": 87.5}, weights=str(weights))
    save_checkpoint(checkpoint, folder / f"from-imagenet-{imagenet_class}.pth")
    return folder / f"from-imagenet-{imagenet_class}.pth"
