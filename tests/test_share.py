"""export.py --space and --ncnn run for real: a Space folder that serves from anywhere, a phone model that answers
like PyTorch in ncnn's own runtime."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from gradio_client import Client, handle_file

from cats_dogs.space import imported_modules
from conftest import REPO, free_port, make_dataset, make_photo, run_script


def read_front_matter(readme: Path) -> dict:
    _, header, _ = readme.read_text(encoding="utf-8").split("---\n", 2)
    return yaml.safe_load(header)


def serve_copied_space(space: Path, tmp_path: Path) -> tuple[subprocess.Popen, Client]:
    """`python app.py` inside the folder, as a Space runs it, with nothing of this repository on the path."""
    port, log = free_port(), open(tmp_path / "space.log", "w+", encoding="utf-8")
    path = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if entry and Path(entry).resolve() != REPO]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--no-compile"], cwd=space, env=env,
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise AssertionError(f"the Space's app.py exited {process.returncode}:\n{log.read()}")
        try:
            return process, Client(f"http://127.0.0.1:{port}/", verbose=False)
        except Exception:
            if time.monotonic() > deadline:
                process.terminate()
                raise
            time.sleep(0.5)


def test_space_folder_serves_predict_from_a_copy_without_the_repository(trained_run: Path, tmp_path: Path) -> None:
    result = run_script("export.py", "--space", str(tmp_path / "space"), cwd=trained_run)
    assert "4 example photos" in result.stdout
    copied = shutil.copytree(tmp_path / "space", tmp_path / "elsewhere" / "my-space")
    header = read_front_matter(copied / "README.md")
    assert header["sdk"] == "gradio" and header["sdk_version"] == "6.31.0" and header["app_file"] == "app.py"
    assert header["title"] == "Cat vs Dog"
    requirements = (copied / "requirements.txt").read_text(encoding="utf-8").split()
    assert "gradio==6.31.0" in requirements and "torch==2.14.1" in requirements and not any("swanlab" in r for r in requirements)
    # Lean: only what app.py's imports reach, not training's modules.
    assert (copied / "cats_dogs/engines.py").is_file() and not (copied / "cats_dogs/photo_batches.py").exists()
    assert sorted(p.name for p in (copied / "datasets/val").rglob("*.jpg")) == ["cat.0.jpg", "cat.1.jpg", "dog.0.jpg",
                                                                                "dog.1.jpg"]

    process, client = serve_copied_space(copied, tmp_path)
    try:
        photo = make_photo(tmp_path / "red.jpg", 0, seed=5)
        answer = client.predict(handle_file(str(photo)), api_name="/predict")
        assert answer["label"] in ("cat", "dog") and len(answer["confidences"]) == 2
        probabilities, verdict, heatmap = client.predict(handle_file(str(photo)), 0.7, True, False, api_name="/classify")
        assert verdict and Path(heatmap).is_file()
    finally:
        process.terminate()
        process.wait(timeout=30)
    log = (tmp_path / "space.log").read_text(encoding="utf-8")
    assert f"loaded checkpoint{os.sep}best_checkpoint.pth" in log  # the copy's own checkpoint, found by default

    again = run_script("export.py", "--space", str(tmp_path / "space"), cwd=trained_run, check=False)
    assert again.returncode != 0 and "is not empty" in again.stderr  # nothing already there is overwritten


def test_space_modules_are_the_import_graph_of_app(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "app.py").write_text("from pkg.a import x\nimport os\n", encoding="utf-8")
    (tmp_path / "pkg/a.py").write_text("def f():\n    from pkg.b import y\n", encoding="utf-8")
    (tmp_path / "pkg/b.py").write_text("from pkg import c\n", encoding="utf-8")
    (tmp_path / "pkg/c.py").write_text("", encoding="utf-8")
    (tmp_path / "pkg/unused.py").write_text("", encoding="utf-8")
    assert imported_modules(tmp_path / "app.py", "pkg") == ["pkg.a", "pkg.b", "pkg.c"]
    assert "cats_dogs.translations" in imported_modules(REPO / "app.py")


def real_or_generated_photos(tmp_path: Path) -> Path:
    """The tutorial's real photos when the shared data is there (CI has it), else generated ones."""
    real = os.environ.get("CATS_DOGS_TUTORIAL_DIR")
    return Path(real) if real and (Path(real) / "val.csv").is_file() else make_dataset(tmp_path / "photos")


def test_ncnn_export_parity_on_photos_and_preprocessing_json(trained_run: Path, tmp_path: Path) -> None:
    if not os.environ.get("CI"):  # CI installs requirements-export.txt, and fails here rather than skip
        pytest.importorskip("ncnn", reason="pip install -r requirements-export.txt")
    photos = real_or_generated_photos(tmp_path)
    result = run_script("export.py", "--ncnn", str(tmp_path / "phone"), "--data-dir", str(photos), cwd=trained_run)
    found = re.search(r"ncnn parity on (\d+) photo\(s\): max \|Δ probability\| = (\S+) .* on (\d+)/(\d+)", result.stdout)
    assert found, result.stdout
    checked, difference, agreeing = int(found.group(1)), float(found.group(2)), int(found.group(3))
    assert checked >= 8 and agreeing == checked and difference <= 1e-2
    info = json.loads((tmp_path / "phone/model.json").read_text(encoding="utf-8"))
    assert info["class_names"] == ["cat", "dog"] and info["size"] == 32 and info["input"] == "in0"
    assert info["mean"] == pytest.approx([0.485, 0.456, 0.406]) and info["ncnn_mean_vals"][0] == pytest.approx(123.675)
    assert (tmp_path / "phone/model.ncnn.param").is_file() and (tmp_path / "phone/model.ncnn.bin").stat().st_size > 1e6


def test_ncnn_export_names_the_requirements_file_when_the_exporters_are_missing(trained_run: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"  # modules named ncnn and pnnx that fail to import, as when they are not installed
    for name in ("ncnn", "pnnx"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text("raise ImportError('not installed')\n", encoding="utf-8")
    result = run_script("export.py", "--ncnn", str(tmp_path / "phone"), cwd=trained_run, check=False,
                        env={"PYTHONPATH": str(blocker)})
    assert result.returncode != 0 and "pip install -r requirements-export.txt" in result.stderr
    assert "Traceback" not in result.stderr
